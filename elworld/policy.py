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


class ScheduledKeysPolicy:
    """Press a fixed cycle of actions, one per step, whatever the frame shows.

    ``"left"`` / ``"right"`` hold one key for ever; ``"alternate"`` holds one
    key for ``period`` steps, then the other (``fixed_policy`` builds them).
    ``reset`` restarts the cycle; the seed is ignored (nothing is random).
    """

    def __init__(self, name: str, schedule: list[np.ndarray]) -> None:
        if not schedule:
            raise ValueError(f"policy {name!r} needs at least one action in its schedule")
        self.name = name
        self.schedule = [np.asarray(action, dtype=np.uint8) for action in schedule]
        self.step = 0

    def reset(self, seed: int | None = None) -> None:
        """Back to the start of the cycle."""
        self.step = 0

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """The cycle's next action (a fresh array each call)."""
        action = self.schedule[self.step % len(self.schedule)].copy()
        self.step += 1
        return action


FIXED_POLICIES = ("left", "right", "alternate")


def fixed_policy(
    name: str, keys: list[int] | tuple[int, ...], period: int = 8
) -> ScheduledKeysPolicy:
    """``"left"``, ``"right"`` or ``"alternate"`` over a world's first two keys.

    ``keys``: the key indices the world was recorded with (take_cover: left,
    right). ``"left"`` always holds ``keys[0]``, ``"right"`` always ``keys[1]``,
    ``"alternate"`` holds each for ``period`` steps in turn.
    """
    if name not in FIXED_POLICIES:
        raise ValueError(
            f"unknown fixed policy {name!r}; expected one of {', '.join(FIXED_POLICIES)}"
        )
    if len(keys) < 2:
        raise ValueError(f"fixed policy {name!r} needs a world with two keys, got {list(keys)}")
    first, second = (np.eye(NUM_KEYS, dtype=np.uint8)[k] for k in keys[:2])
    schedule = {
        "left": [first],
        "right": [second],
        "alternate": [first] * period + [second] * period,
    }
    return ScheduledKeysPolicy(name, schedule[name])
