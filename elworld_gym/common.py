"""Pieces shared by ``DreamEnv`` and ``DreamVectorEnv``: argument checks and step outcomes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from elworld.world.dream import OBS_TYPES, DreamStep, DreamWorld

RENDER_MODES = ["human", "rgb_array"]
RENDER_FPS = 20  # the original recordings' frame rate

RewardFn = Callable[[np.ndarray], float]


def check_rate(steps_per_second: float | None) -> float | None:
    """A ``steps_per_second`` argument checked: ``None`` (the world's recorded rate) or > 0."""
    if steps_per_second is None:
        return None
    if (
        isinstance(steps_per_second, bool)
        or not isinstance(steps_per_second, int | float)
        or (not steps_per_second > 0)
    ):
        raise ValueError(f"steps_per_second must be a number > 0 or None, got {steps_per_second!r}")
    return float(steps_per_second)


def check_env_args(
    obs_type: str,
    render_mode: str | None,
    max_episode_steps: int | None,
    reward_fn: RewardFn | None,
    render_scale: int,
) -> None:
    """Raise ``ValueError`` naming the construction argument that is invalid."""
    if obs_type not in OBS_TYPES:
        raise ValueError(f"obs_type must be one of {OBS_TYPES}, got {obs_type!r}")
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be None or one of {RENDER_MODES}, got {render_mode!r}")
    if max_episode_steps is not None and (
        isinstance(max_episode_steps, bool)
        or not isinstance(max_episode_steps, int)
        or max_episode_steps < 1
    ):
        raise ValueError(
            f"max_episode_steps must be a positive int or None, got {max_episode_steps!r}"
        )
    if reward_fn is not None and not callable(reward_fn):
        raise ValueError(f"reward_fn must be callable (observation -> float), got {reward_fn!r}")
    if isinstance(render_scale, bool) or not isinstance(render_scale, int) or render_scale < 1:
        raise ValueError(f"render_scale must be a positive int, got {render_scale!r}")


def step_outcomes(
    world: DreamWorld,
    step: DreamStep,
    observations: np.ndarray,
    reward_fn: RewardFn | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rewards ``(n,)`` float64 and ``terminated`` ``(n,)`` bool of the stepped envs.

    The reward is ``reward_fn(observation)`` per env when given, else the memory
    model's reward head, else 0; ``terminated`` is the world's
    (``DreamStep.terminated``: drawn from the episode-end model's hazard, or the
    memory end head above ``END_THRESHOLD``; never without either).
    """
    n = len(observations)
    if reward_fn is not None:
        rewards = np.array([float(reward_fn(obs)) for obs in observations], dtype=np.float64)
    elif world.has_reward_head:
        rewards = step.reward.astype(np.float64)
    else:
        rewards = np.zeros(n, dtype=np.float64)
    return rewards, step.terminated


def reset_option(options: dict[str, Any] | None, allowed: tuple[str, ...]) -> dict[str, Any]:
    """``options`` as a dict; raise ``ValueError`` on keys this env does not understand."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"reset options must be a dict, got {type(options).__name__}")
    if unknown := sorted(set(options) - set(allowed)):
        raise ValueError(f"unknown reset options {unknown}; this env accepts {list(allowed)}")
    return options
