"""Scoring dreams with the inverse-dynamics model: what it is shown and what it is scored against."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from elworld.keys import KEY_INDEX
from elworld.model.idm import (
    InverseDynamicsModel,
    effective_keys,
    macro_f1,
    opposing_pairs,
    predict_keys,
)

if TYPE_CHECKING:
    from elworld.eval.evaluate import EvalConfig


IDM_SCORES = {
    "real": "real held-out transitions (ceiling)",
    "reconstructed": "real frames through the vision model",
    "dream": "dream driven by the recorded keys",
    "dream_shuffled": "dream driven by shuffled keys, scored against them (the strict test)",
    "dream_shuffled_vs_recorded": "dream driven by shuffled keys, scored against the recorded keys (floor)",
}


class IDMScorer:
    """IDM predictions and the keys they are scored against, per score name, for the scored keys."""

    def __init__(self, idm: InverseDynamicsModel, scored: list[str]) -> None:
        self.idm, self.scored = idm, scored
        self.idm_columns = [idm.config.keys.index(k) for k in scored]
        self.act_columns = [KEY_INDEX[k] for k in scored]
        self.pred: dict[str, list[np.ndarray]] = {name: [] for name in IDM_SCORES}
        self.true: dict[str, list[np.ndarray]] = {name: [] for name in IDM_SCORES}

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """Scored keys of every window of ``frames (L, H, W, 3)``: ``(L - before - after, K)`` bool."""
        return predict_keys(self.idm, frames)[:, self.idm_columns]

    def add(self, name: str, pred: np.ndarray, act: np.ndarray) -> None:
        """Score ``pred`` against the effective keys of the first ``len(pred)`` rows of raw ``act (>= len(pred), 22)``."""
        self.pred[name].append(pred)
        keys = effective_keys(act[: len(pred)], opposing_pairs(self.idm.config))
        self.true[name].append(keys[:, self.act_columns].astype(bool))

    def scores(self) -> dict[str, dict[str, Any]]:
        empty = np.zeros((0, len(self.scored)), bool)
        return {
            name: macro_f1(
                np.concatenate(self.pred[name]) if self.pred[name] else empty,
                np.concatenate(self.true[name]) if self.true[name] else empty,
                self.scored,
            )
            for name in IDM_SCORES
        }


def idm_starts(n: int, k: int, before: int, config: EvalConfig) -> np.ndarray:
    """Open-loop starts for IDM dreams in an ``n``-frame episode (the PSNR grid, horizon ``idm_horizon``)."""
    return np.arange(max(k - 1, before), n - config.idm_horizon, config.start_stride)
