"""Inverse-dynamics model (IDM): which keys were held, read back from frames.

An evaluation instrument for controllability (as MineWorld does it): trained on
REAL transitions only, it names the keys of step ``t`` (``act[t]``, held while
``obs[t] -> obs[t+1]``) from the frames around it. ``elworld eval --idm`` then
scores dream transitions driven by known keys with it. Blur cannot fool it: a
dream that ignores its keys scores like the shuffled-key floor, however sharp
or smooth its frames are.

Why a window and not a frame pair: in Doom a strafe builds up speed over a few
steps and keeps coasting after the key is released, so a key shows as a change
of velocity. One pair cannot tell "left" from "still sliding after left";
frames ``t-1 .. t+2`` (three differences) can.

Input: each frame is turned grey and average-pooled to ``bands`` horizontal
bands x ``cols`` columns; the model runs 1-D convolutions along x over the
stacked bands of the window's frames and their differences, pools globally and
has one logit per scored key (multi-label BCE). Training mirrors half of each
batch left/right and swaps the left/right (and a/d) labels.

Labels are the EFFECTIVE keys (``effective_keys``): opposing keys held together
(left+right, up+down, a+d) cancel and count as neither. In ViZDoom each pair
drives opposite moves or turns that add up to nothing, so such a step looks
exactly like holding no key and "both held" is unlearnable from frames (on
take_cover recordings a quarter of the steps hold left and right together,
which capped the raw-label macro-F1 near 0.8). Training labels and every score
use effective keys; the memory model still receives the raw recorded keys.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from elworld.data import read_labels, read_sidecar
from elworld.frames import FRAME_HEIGHT, FRAME_WIDTH, resize_frames
from elworld.keys import KEY_INDEX, KEY_NAMES
from elworld.model.common import LossOutput

logger = logging.getLogger(__name__)

# Keys that swap places when the picture is mirrored left/right.
MIRROR_PAIRS: tuple[tuple[str, str], ...] = (("left", "right"), ("a", "d"))
# Keys that cancel when held together. In ViZDoom (elworld.record.doom's key table)
# up/down are MOVE_FORWARD/MOVE_BACKWARD, left/right TURN_LEFT/TURN_RIGHT (or
# MOVE_LEFT/MOVE_RIGHT where the scenario cannot turn) and a/d MOVE_LEFT/MOVE_RIGHT:
# each pair adds opposite amounts to one move or turn, so both held = neither held.
OPPOSING_KEYS: tuple[tuple[str, str], ...] = (("left", "right"), ("up", "down"), ("a", "d"))
LABELS = "effective keys; opposing keys held together (left+right) cancel and count as neither"
_GREY = (0.299, 0.587, 0.114)


@dataclass
class IDMConfig:
    """The IDM's shape and what it was trained on (saved as ``config.json``)."""

    keys: tuple[str, ...] = ("left", "right")  # keys it scores: those pressed in its training data
    image_height: int = FRAME_HEIGHT  # frames are resized to this size before pooling
    image_width: int = FRAME_WIDTH
    bands: int = 24  # horizontal bands of grey per frame
    cols: int = 256  # columns per band
    before: int = 1  # frames before step t in a window
    after: int = 2  # frames after step t (>= 1: obs[t+1] shows step t)
    width: int = 64  # conv channels
    n_layer: int = 3  # conv layers along x (all but the first halve the length)
    dropout: float = 0.1
    frame_skip: int | None = None  # from the training recordings' JSON sidecars
    scenario: str | None = None
    # Facts about the game, not take_cover: mirror augmentation (the game looks the same
    # mirrored left/right, MIRROR_PAIRS swapping) and OPPOSING_KEYS held together acting as
    # neither (ViZDoom). ``idm_config_for`` decides them from the recordings.
    mirror: bool = True
    cancel_opposing: bool = True

    def __post_init__(self) -> None:
        self.keys = tuple(self.keys)
        unknown = [k for k in self.keys if k not in KEY_INDEX]
        if not self.keys or unknown or len(set(self.keys)) != len(self.keys):
            raise ValueError(
                f"keys must be distinct names from {', '.join(KEY_NAMES)}, got {list(self.keys)}"
            )
        for name in ("image_height", "image_width", "bands", "cols", "after", "width", "n_layer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.before < 0:
            raise ValueError(f"before must be >= 0, got {self.before}")
        if self.bands > self.image_height or self.cols > self.image_width:
            raise ValueError(
                f"bands x cols ({self.bands}x{self.cols}) must fit the image "
                f"({self.image_height}x{self.image_width})"
            )

    @property
    def window(self) -> int:
        """Frames per window: ``t - before .. t + after``."""
        return self.before + 1 + self.after


# --------------------------------------------------------------------------- inputs


def opposing_pairs(config: IDMConfig | None) -> tuple[tuple[str, str], ...]:
    """The key pairs that cancel for an IDM of ``config`` (all of ``OPPOSING_KEYS``, or none)."""
    return OPPOSING_KEYS if config is None or config.cancel_opposing else ()


def labels_text(config: IDMConfig | None) -> str:
    """What an IDM's labels are, for its reports."""
    return LABELS if opposing_pairs(config) else "keys as recorded (opposing keys do not cancel)"


def effective_keys(
    actions: np.ndarray, opposing: tuple[tuple[str, str], ...] = OPPOSING_KEYS
) -> np.ndarray:
    """The keys that act: ``(..., 22)`` multi-hot -> ``(..., 22)`` uint8, opposing pairs held together zeroed.

    Holding both keys of an ``OPPOSING_KEYS`` pair has the effect of holding
    neither, so both are cleared; every other key is kept as recorded.
    """
    act = np.array(actions, dtype=np.uint8, copy=True)
    if act.ndim < 1 or act.shape[-1] != len(KEY_NAMES):
        raise ValueError(f"actions must be (..., {len(KEY_NAMES)}), got {act.shape}")
    for a, b in opposing:
        ia, ib = KEY_INDEX[a], KEY_INDEX[b]
        both = (act[..., ia] > 0) & (act[..., ib] > 0)
        act[..., ia][both] = 0
        act[..., ib][both] = 0
    return act


def frames_to_bands(frames: np.ndarray, bands: int, cols: int) -> torch.Tensor:
    """uint8 RGB frames ``(N, H, W, 3)`` -> grey ``(N, bands, cols)`` float in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float()  # (N, H, W, 3)
    grey = x @ torch.tensor(_GREY) / 255.0  # (N, H, W)
    return F.adaptive_avg_pool2d(grey[:, None], (bands, cols))[:, 0]  # (N, bands, cols)


def idm_windows(bands: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Every window of ``(N, B, C)`` bands: ``(N - before - after, before + 1 + after, B, C)``.

    Row ``i`` holds frames ``i .. i + before + after``: the window of key step ``t = i + before``.
    """
    size = before + 1 + after
    if len(bands) < size:
        return bands.new_zeros((0, size, *bands.shape[1:]))
    return bands.unfold(0, size, 1).permute(0, 3, 1, 2)  # (N - size + 1, size, B, C)


def window_labels(act: np.ndarray, config: IDMConfig) -> np.ndarray:
    """The scored effective keys of every windowed step: ``(N - before - after, K)`` bool from ``act (N, 22)``."""
    steps = effective_keys(act[config.before : len(act) - config.after], opposing_pairs(config))
    return steps[:, [KEY_INDEX[k] for k in config.keys]].astype(bool)


def macro_f1(
    pred: np.ndarray, true: np.ndarray, keys: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """Per-key binary F1 of ``(N, K)`` bool predictions, and their mean over ``keys``.

    A key with neither a true nor a predicted press has no F1 (NaN) and is left
    out of the mean. Returns ``{"macro_f1", "per_key", "support", "windows"}``
    (support: true presses per key).
    """
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    if pred.shape != true.shape or pred.ndim != 2 or pred.shape[1] != len(keys):
        raise ValueError(
            f"pred and true must both be (N, {len(keys)}) for keys {list(keys)}, "
            f"got {pred.shape} and {true.shape}"
        )
    per_key = {}
    for i, key in enumerate(keys):
        tp = int(np.sum(pred[:, i] & true[:, i]))
        wrong = int(np.sum(pred[:, i] != true[:, i]))  # false positives + false negatives
        per_key[key] = 2 * tp / (2 * tp + wrong) if tp + wrong else math.nan
    defined = [v for v in per_key.values() if not math.isnan(v)]
    return {
        "macro_f1": float(np.mean(defined)) if defined else math.nan,
        "per_key": per_key,
        "support": {key: int(true[:, i].sum()) for i, key in enumerate(keys)},
        "windows": len(pred),
    }


# --------------------------------------------------------------------------- model


class InverseDynamicsModel(nn.Module):
    """Frames ``t - before .. t + after`` -> one logit per scored key of step ``t``."""

    kind = "idm"
    config_class = IDMConfig

    def __init__(self, config: IDMConfig) -> None:
        super().__init__()
        self.config = config
        channels = (2 * config.window - 1) * config.bands  # frames and their differences
        self.norm = nn.BatchNorm1d(channels)  # differences are tiny next to frames: rescale both
        layers: list[nn.Module] = []
        for i in range(config.n_layer):
            stride = 1 if i == 0 else 2
            layers += [nn.Conv1d(channels, config.width, 5, stride, padding=2), nn.GELU()]
            channels = config.width
        self.convs = nn.Sequential(*layers)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * config.width, len(config.keys))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """``windows (B, window, bands, cols)`` grey in [0, 1] -> logits ``(B, K)``."""
        b, w, nb, nc = windows.shape
        diffs = windows[:, 1:] - windows[:, :-1]  # (B, w - 1, bands, cols)
        x = torch.cat([windows, diffs], dim=1).reshape(b, (2 * w - 1) * nb, nc)
        x = self.convs(self.norm(x))  # (B, width, cols / 2**(n_layer - 1))
        x = torch.cat([x.mean(-1), x.amax(-1)], dim=1)  # (B, 2 * width)
        return self.head(self.drop(x))

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> LossOutput:
        """``{"windows": float (B, window, bands, cols), "keys": float (B, K)}`` -> BCE."""
        logits = self(batch["windows"])
        loss = F.binary_cross_entropy_with_logits(logits, batch["keys"])
        accuracy = ((logits > 0) == (batch["keys"] > 0.5)).float().mean()
        return LossOutput(loss=loss, metrics={"loss": loss.item(), "key_acc": accuracy.item()})

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu"
    ) -> InverseDynamicsModel:
        """Load a saved IDM (eval mode) from a checkpoint folder."""
        from elworld.checkpoint import load_model

        return load_model(path, cls, device=device)


@torch.inference_mode()
def _predict_windows(model: InverseDynamicsModel, windows: torch.Tensor, batch: int) -> np.ndarray:
    device = next(model.parameters()).device
    out = [
        model(windows[i : i + batch].to(device, torch.float32)).cpu() > 0
        for i in range(0, len(windows), batch)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, len(model.config.keys)), bool)


def predict_keys(
    model: InverseDynamicsModel, frames: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """The keys of every windowed step of uint8 frames ``(N, H, W, 3)``: ``(N - before - after, K)`` bool.

    Row ``i`` is key step ``t = i + before``; columns follow ``model.config.keys``.
    Frames of another size are resized to the model's image size first.
    """
    cfg = model.config
    was_training = model.training
    model.eval()
    if len(frames) and frames.shape[1:3] != (cfg.image_height, cfg.image_width):
        frames = resize_frames(frames, height=cfg.image_height, width=cfg.image_width)
    bands = (
        frames_to_bands(frames, cfg.bands, cfg.cols)
        if len(frames)
        else torch.zeros(0, cfg.bands, cfg.cols)
    )
    pred = _predict_windows(model, idm_windows(bands, cfg.before, cfg.after), batch_size)
    model.train(was_training)
    return pred


# --------------------------------------------------------------------------- data


def sidecar_value(episodes: list[Path], field: str) -> Any:
    """The one value of sidecar ``field`` across ``episodes`` (None if no sidecar has it).

    Raises ``ValueError`` naming two episodes when they disagree.
    """
    seen: dict[Any, Path] = {}
    for path in episodes:
        value = read_sidecar(path, strict=True).get(field)
        if value is not None:
            seen.setdefault(value, path)
    if len(seen) > 1:
        (a, pa), (b, pb) = list(seen.items())[:2]
        raise ValueError(f"episodes disagree on {field}: {pa} has {a!r}, {pb} has {b!r}")
    return next(iter(seen), None)


def check_frame_skip(config: IDMConfig, episodes: list[Path]) -> None:
    """Raise ``ValueError`` when an episode was recorded with another frame skip than the IDM's."""
    if config.frame_skip is None:
        logger.warning("the IDM does not know its training frame skip; cannot check it matches")
        return
    unknown = 0
    for path in episodes:
        skip = read_sidecar(path, strict=True).get("frame_skip")
        unknown += skip is None
        if skip is not None and skip != config.frame_skip:
            raise ValueError(
                f"frame skips must match: the IDM was trained on frame skip {config.frame_skip}, "
                f"but {path} was recorded with frame skip {skip}"
            )
    if unknown:
        logger.warning(
            "%d episode(s) have no sidecar frame skip: assuming %d", unknown, config.frame_skip
        )


def idm_config_for(episodes: list[Path], **fields: Any) -> IDMConfig:
    """An ``IDMConfig`` for training on ``episodes``: the keys they press (effectively), their frame skip and scenario.

    ``cancel_opposing`` defaults to on for ViZDoom recordings (and recordings
    that do not name their source), off for other games; ``mirror`` to on when
    the keys pressed hold a whole ``MIRROR_PAIRS`` pair (left and right, or a and d).
    """
    if fields.get("cancel_opposing") is None:
        try:
            source = sidecar_value(episodes, "source")
        except ValueError:  # sources differ: keep ViZDoom's rule
            source = None
        fields["cancel_opposing"] = source in (None, "vizdoom")
    opposing = OPPOSING_KEYS if fields["cancel_opposing"] else ()
    pressed = np.zeros(len(KEY_NAMES), bool)
    for path in episodes:
        pressed |= effective_keys(read_labels(path)["act"], opposing).any(axis=0)
    if not pressed.any():
        raise ValueError("the training episodes never press a key: an IDM has nothing to learn")
    keys = tuple(name for name, held in zip(KEY_NAMES, pressed) if held)
    if fields.get("mirror") is None:
        fields["mirror"] = any(a in keys and b in keys for a, b in MIRROR_PAIRS)
    return IDMConfig(
        keys=keys,
        frame_skip=sidecar_value(episodes, "frame_skip"),
        scenario=sidecar_value(episodes, "scenario"),
        **fields,
    )
