"""The real game beside the dream (``elworld play --compare``): same keys, one frame size.

``Lockstep`` steps a real env with the keys the dream gets and keeps its
latest frame at the dream's size, the frame F4 re-syncs the dream to.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from elworld.frames import resize_frames


class Lockstep:
    """A real game (22-key ``MultiBinary`` actions, rgb frames) run beside a dream.

    Args:
        real_env: the real game; it belongs to the caller, who closes it.
        height, width: the dream's frame size, which ``frame`` is fitted to.
    """

    def __init__(self, real_env: gym.Env, height: int, width: int) -> None:
        self.env, self.height, self.width = real_env, height, width
        self.frame: np.ndarray | None = None  # the latest real frame, at the dream's size

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new real episode; return its first frame (at the dream's size)."""
        real, _ = self.env.reset(seed=seed)
        self.frame = self._fit(real)
        return self.frame

    def step(self, action: np.ndarray) -> bool:
        """One real step with ``action``; whether the real episode is over."""
        real, _, terminated, truncated, _ = self.env.step(action)
        self.frame = self._fit(real)
        return bool(terminated or truncated)

    def _fit(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape[:2] == (self.height, self.width):
            return frame
        return resize_frames(np.ascontiguousarray(frame), self.height, self.width)
