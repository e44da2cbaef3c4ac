"""The one policy interface: ``policy(frame) -> keys``, restartable with ``reset(seed)``.

On the bottom floor, so every place that drives a game or a dream frame by
frame speaks it: the scripted recorders (``record.collect``: random, sticky),
play and rollout (``play.policies``: a key file, the recorders' policies),
real-game evaluation of agents (``control.evaluate``). ``record_env`` and
``elworld rollout`` take any such policy.

Batched dreams (control training, ``control.rollout``) step many envs from
token histories at once; their ``DreamPolicy`` (``reset(n, seed)``,
``act(history, index)``) is this interface's batched twin, not a second idea:
a frame policy plays one game, a dream policy plays N dreams in one pass.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from elworld.keys import NUM_KEYS


class Policy(Protocol):
    """``policy(frame) -> (22,) uint8 action``, restartable with ``reset(seed)``."""

    name: str

    def __call__(self, frame: np.ndarray) -> np.ndarray: ...

    def reset(self, seed: int | None = None) -> None: ...


class NoKeysPolicy:
    """Hold no key, ever: the baseline every learned policy must beat."""

    name = "none"

    def reset(self, seed: int | None = None) -> None:
        """Nothing to restart."""

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """All 22 keys released (the frame is ignored)."""
        return np.zeros(NUM_KEYS, dtype=np.uint8)
