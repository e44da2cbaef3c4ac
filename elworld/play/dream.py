"""Helpers shared by ``elworld play`` and ``elworld rollout``: the dream env and frame panes.

- ``make_dream_env``: ``gym.make("ElWorldDream-v0", ...)`` with the CLI's settings.
- ``get_temperature`` / ``set_temperature``: the sampling temperature of a
  running dream (changed live by play's F7/F9).
- ``upscale``, ``side_by_side``, ``difference``: building the frames shown or
  written (nearest-neighbour scaling, panes left to right, ``|real - dream|``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

DREAM_ENV_ID = "ElWorldDream-v0"
MAX_TEMPERATURE = 5.0


def make_dream_env(
    checkpoints: str | os.PathLike[str] | None = None,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    device: str | None = None,
    max_episode_steps: int | None = None,
    render_mode: str | None = None,
    start_observations: str | os.PathLike[str] | np.ndarray | None = None,
    guidance: float | None = None,
    precision: str = "auto",
) -> gym.Env:
    """An ``ElWorldDream-v0`` env with rgb observations.

    ``checkpoints`` is the root holding ``vision/best_model`` and
    ``memory/best_model`` (``None``: ``$ELWORLD_CHECKPOINTS``, else the bundled
    ``checkpoints/``). ``max_episode_steps=None`` keeps the registered limit.
    ``guidance`` (``None``: the world's recommended scale; 1: one memory pass
    per step) and ``precision`` (``"auto"``, ``"bf16"``, ``"fp32"``) go to the env.
    Errors from the env (a missing checkpoint, bad arguments) propagate.
    """
    import elworld_gym  # noqa: F401  (registers the env)

    kwargs: dict[str, Any] = {
        "checkpoints": checkpoints,
        "temperature": temperature,
        "top_k": top_k,
        "obs_type": "rgb",
        "render_mode": render_mode,
        "guidance": guidance,
        "precision": precision,
    }
    if device is not None:
        kwargs["device"] = device
    if start_observations is not None:
        kwargs["start_observations"] = start_observations
    return gym.make(DREAM_ENV_ID, max_episode_steps=max_episode_steps, **kwargs)


def _world(env: gym.Env) -> Any:
    world = getattr(env.unwrapped, "world", None)
    if world is None or not hasattr(world, "temperature"):
        raise TypeError(
            f"{type(env.unwrapped).__name__} has no dream world with a temperature; "
            f"expected an {DREAM_ENV_ID} env"
        )
    return world


def get_temperature(env: gym.Env) -> float:
    """The sampling temperature the dream uses for its next step."""
    return float(_world(env).temperature)


def set_temperature(env: gym.Env, temperature: float) -> float:
    """Set the dream's sampling temperature (clamped to ``[0, MAX_TEMPERATURE]``); return it.

    Takes effect at the next ``step``; ``0`` samples the argmax (deterministic).
    """
    value = round(min(max(float(temperature), 0.0), MAX_TEMPERATURE), 6)
    _world(env).temperature = value
    return value


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """``frame`` ``(H, W, 3)`` enlarged ``scale`` times by pixel repetition."""
    if scale == 1:
        return frame
    return frame.repeat(scale, axis=0).repeat(scale, axis=1)  # (H*s, W*s, 3)


def difference(real: np.ndarray, dream: np.ndarray) -> np.ndarray:
    """``|real - dream|`` per pixel and channel, uint8 ``(H, W, 3)`` (black = identical)."""
    return np.abs(real.astype(np.int16) - dream.astype(np.int16)).astype(np.uint8)


def side_by_side(panes: Sequence[np.ndarray], scale: int = 1) -> np.ndarray:
    """Frames ``(H, W, 3)`` of one size placed left to right and scaled: ``(H*s, n*W*s, 3)``."""
    shapes = {pane.shape for pane in panes}
    if len(shapes) != 1:
        raise ValueError(f"panes must share one shape, got {sorted(shapes)}")
    return upscale(np.concatenate(list(panes), axis=1), scale)  # (H*s, n*W*s, 3)


def check_scale(scale: int, name: str = "--scale") -> int:
    """``scale`` if it is a positive int, else ``ValueError`` naming ``name``."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"{name} must be a positive integer, got {scale!r}")
    return scale
