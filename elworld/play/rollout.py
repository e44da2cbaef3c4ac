"""Headless dreams written to video files (``elworld rollout``).

- ``dream_frames``: a policy holds the keys, the dream answers; yields the
  start frame then one frame per step (``steps + 1`` frames).
- ``compare_frames``: a recorded real episode's actions replayed in the dream
  from the episode's first frame; yields ``real | dream | |real - dream|``
  panes, the picture that shows where the model drifts.
- ``rollout_video`` / ``compare_video``: the same, scaled and written to an
  ``.mp4`` or ``.gif`` (``elworld.play.video``).

Nothing here opens a window or imports pygame.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from elworld.data.episodes import inspect_episode, iter_frames, read_actions
from elworld.play.dream import check_scale, difference, side_by_side, upscale
from elworld.play.policies import Policy
from elworld.play.video import check_video_path, write_video

logger = logging.getLogger(__name__)


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return steps


def dream_frames(
    env: gym.Env, policy: Policy, steps: int, *, seed: int | None = None
) -> Iterator[np.ndarray]:
    """The dream's frames under ``policy``: the start frame, then one per step.

    ``env.reset(seed=seed)`` picks a real start frame; ``policy.reset(seed)``
    restarts the policy. When the dream ends an episode (its end head, or the
    env's step limit) the next step starts from a new real start frame, so
    exactly ``steps + 1`` frames come out.
    """
    _check_steps(steps)
    policy.reset(seed)
    frame, _ = env.reset(seed=seed)
    yield frame
    for step in range(steps):
        frame, _, terminated, truncated, _ = env.step(policy(frame))
        yield frame
        if (terminated or truncated) and step + 1 < steps:
            logger.debug("the dream ended its episode at step %d; restarting", step + 1)
            frame, _ = env.reset()


def compare_frames(
    env: gym.Env,
    episode: str | os.PathLike[str],
    *,
    steps: int | None = None,
    seed: int | None = None,
) -> Iterator[np.ndarray]:
    """``real | dream | |real - dream|`` frames ``(H, 3W, 3)`` of a recorded episode.

    The dream starts from the episode's first frame and is driven by its
    recorded ``act``; frame ``t`` shows the real ``obs[t]`` beside the dream
    after ``t`` steps. ``steps`` (default: all, ``N - 1``) caps the replay, so
    ``min(steps, N - 1) + 1`` frames come out. The dream keeps going when its
    end head predicts an episode end: the real episode decides the length.

    Raises:
        elworld.data.DataError: the episode file is missing or malformed.
    """
    info = inspect_episode(episode)
    actions = read_actions(episode)
    count = info.num_frames - 1 if steps is None else min(_check_steps(steps), info.num_frames - 1)
    height, width = env.observation_space.shape[:2]
    real_frames = (
        frame
        for chunk in iter_frames(episode, chunk=64, height=height, width=width)
        for frame in chunk
    )
    real = next(real_frames)
    dream, _ = env.reset(seed=seed, options={"observation": real})
    yield side_by_side([real, dream, difference(real, dream)])  # (H, 3W, 3)
    for step in range(count):
        dream, _, terminated, _, _ = env.step(actions[step])
        if terminated:
            logger.debug("the dream predicts the episode's end at step %d", step + 1)
        real = next(real_frames)
        yield side_by_side([real, dream, difference(real, dream)])  # (H, 3W, 3)


def save_frames(
    out: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    *,
    fps: float = 20.0,
    scale: int = 1,
    total: int | None = None,
) -> Path:
    """Write ``frames`` scaled ``scale`` times to ``out`` (``.mp4``/``.gif``) with a progress bar."""
    out = check_video_path(out)
    check_scale(scale, "scale")
    bar = tqdm(total=total, unit="frame", desc=f"writing {out.name}", disable=None)

    def scaled() -> Iterator[np.ndarray]:
        for frame in frames:
            yield upscale(frame, scale)
            bar.update()

    try:
        count = write_video(out, scaled(), fps)
    finally:
        bar.close()
    logger.info("wrote %d frames (%.1f s at %g fps) to %s", count, count / fps, fps, out)
    return out


def rollout_video(
    env: gym.Env,
    out: str | os.PathLike[str],
    *,
    policy: Policy,
    steps: int,
    seed: int | None = None,
    fps: float = 20.0,
    scale: int = 1,
) -> Path:
    """Dream ``steps`` steps under ``policy`` and write the ``steps + 1`` frames to ``out``."""
    out = check_video_path(out)  # fail before any model work
    frames = dream_frames(env, policy, steps, seed=seed)
    return save_frames(out, frames, fps=fps, scale=scale, total=steps + 1)


def compare_video(
    env: gym.Env,
    episode: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    steps: int | None = None,
    seed: int | None = None,
    fps: float = 20.0,
    scale: int = 1,
) -> Path:
    """Replay ``episode`` in the dream and write ``real | dream | difference`` panes to ``out``."""
    out = check_video_path(out)
    frames = compare_frames(env, episode, steps=steps, seed=seed)
    num_frames = inspect_episode(episode).num_frames
    total = num_frames if steps is None else min(steps + 1, num_frames)
    return save_frames(out, frames, fps=fps, scale=scale, total=total)
