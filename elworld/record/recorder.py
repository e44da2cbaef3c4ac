"""The one recording loop: any Gymnasium env with image observations -> episode files.

``record_env`` runs ``policy`` in ``env`` and writes one ``.npz`` (+ ``.json``)
per episode with ``elworld.record.writer``. Scripted collection
(``collect.py``) and human play (``human.py``) both go through it.

Step ``t`` of a file: the policy saw ``obs[t]``, chose ``act[t]``, the env
returned ``rew[t]``; ``done[t]`` is 1 only on the last step of an episode the
env ended itself (``terminated``), ``truncated[t]`` only on the last step of
one that was cut: by the env's time limit (``truncated``) or by recording
(``max_steps``, ``StopRecording``). A time limit is not a game over (the
format: ``elworld.record.writer``). The env's frame after the last
step is not stored (the last step has no next frame).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from elworld.keys import check_action
from elworld.record.writer import (
    RecordError,
    episode_path,
    next_episode_index,
    prepare_output_dir,
    write_episode,
)

logger = logging.getLogger(__name__)

# elworld.frames.FRAME_HEIGHT/FRAME_WIDTH, repeated here because that module imports torch.
FRAME_HEIGHT, FRAME_WIDTH = 192, 256


class StopRecording(Exception):
    """Raised by a policy to end ``record_env`` cleanly.

    With ``save=True`` the episode in flight is written as a cut-short episode
    (``done`` all 0, ``truncated[-1] = 1``, ``ended="stopped"``); with ``save=False`` it is dropped.
    Episodes finished before are kept either way.
    """

    def __init__(self, save: bool = True) -> None:
        super().__init__("recording stopped" + ("" if save else " (episode in flight dropped)"))
        self.save = save


def _to_frame(obs: Any) -> np.ndarray:
    """``obs`` as a fresh ``(192, 256, 3)`` uint8 frame (resized if needed)."""
    frame = np.asarray(obs)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(
            f"record_env needs image observations of shape (H, W, 3) uint8, "
            f"got {frame.shape} {frame.dtype}"
        )
    if frame.shape[:2] == (FRAME_HEIGHT, FRAME_WIDTH):
        return frame.copy()
    from elworld.frames import resize_frames  # imports torch: only when needed

    return resize_frames(frame, FRAME_HEIGHT, FRAME_WIDTH)


def policy_name(policy: Callable[..., Any]) -> str:
    """A readable name for the sidecar: ``policy.name``, else the function/class name."""
    name = getattr(policy, "name", None)
    return str(name) if name else getattr(policy, "__name__", type(policy).__name__)


def record_env(
    env: gym.Env,
    policy: Callable[[np.ndarray], np.ndarray],
    out_dir: str | os.PathLike[str],
    *,
    episodes: int = 1,
    action_adapter: Callable[[np.ndarray], Any] | None = None,
    prefix: str = "episode",
    seed: int | None = None,
    max_steps: int | None = None,
    meta: Mapping[str, Any] | None = None,
    index: int | None = None,
    compress: bool = False,
    progress: bool = False,
) -> list[Path]:
    """Record ``episodes`` episodes of ``env`` driven by ``policy``; return the files written.

    ``policy(frame) -> (22,) 0/1 action`` gets each observation as a
    ``(192, 256, 3)`` uint8 frame (resized with ``elworld.frames.resize_frames``
    when the env's images have another size). If it has a ``reset(seed)``
    method, that is called at each episode start. ``action_adapter(action22)``
    turns the recorded action into the env's action (default: passed as is).

    Episode ``j`` resets with ``seed + j`` (``None``: unseeded) and stops when
    the env ends it or after ``max_steps`` steps. Files are
    ``out_dir/{prefix}_NNNN.npz`` numbered from ``index`` (default: after the
    existing files). The sidecar holds ``meta`` plus ``seed``, ``policy``,
    ``steps``, ``ended`` (``terminated``/``truncated``/``max_steps``/``stopped``)
    and ``steps_per_second`` (the env's ``metadata["render_fps"]``, unless
    ``meta`` gives it), which a world trained on the files plays at.

    A ``StopRecording`` from the policy ends recording (see its ``save``); any
    other exception, ``KeyboardInterrupt`` included, drops the episode in flight
    and propagates: only complete files are ever on disk.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
    out = prepare_output_dir(out_dir)
    next_index = next_episode_index(out, prefix) if index is None else index
    meta = dict(meta or {})
    meta.setdefault("policy", policy_name(policy))
    rate = (getattr(env, "metadata", None) or {}).get("render_fps")
    if "steps_per_second" not in meta and isinstance(rate, int | float) and rate > 0:
        meta["steps_per_second"] = float(rate)  # the env's own steps per second
    bar = tqdm(
        total=None if max_steps is None else episodes * max_steps,
        unit="frame",
        disable=not progress,
    )
    paths: list[Path] = []
    try:
        for episode in range(episodes):
            target = episode_path(out, prefix, next_index)
            if target.exists():  # fail before playing, not after
                raise RecordError(
                    f"episode file {target} already exists (refusing to overwrite it)"
                )
            episode_seed = None if seed is None else seed + episode
            obs, _ = env.reset(seed=episode_seed)
            if callable(getattr(policy, "reset", None)):
                policy.reset(episode_seed)  # type: ignore[attr-defined]
            frames: list[np.ndarray] = []
            actions: list[np.ndarray] = []
            rewards: list[float] = []
            ended, stop = "max_steps", None
            try:
                while max_steps is None or len(frames) < max_steps:
                    frame = _to_frame(obs)
                    action = check_action(policy(frame), name="policy(frame)")
                    frames.append(frame)
                    actions.append(action)
                    env_action = action if action_adapter is None else action_adapter(action)
                    obs, reward, terminated, truncated, _ = env.step(env_action)
                    rewards.append(float(reward))
                    bar.update()
                    if terminated or truncated:
                        ended = "terminated" if terminated else "truncated"
                        break
            except StopRecording as error:
                ended, stop = "stopped", error
            if frames and (stop is None or stop.save):
                done = np.zeros(len(frames), dtype=np.uint8)
                done[-1] = ended == "terminated"
                truncated = np.zeros(len(frames), dtype=np.uint8)
                truncated[-1] = ended != "terminated"  # a time limit, max_steps or a stop
                path = write_episode(
                    target,
                    np.stack(frames),  # (N, 192, 256, 3)
                    np.stack(actions),  # (N, 22)
                    np.asarray(rewards, dtype=np.float32),
                    done,
                    {**meta, "seed": episode_seed, "steps": len(frames), "ended": ended},
                    truncated=truncated,
                    compress=compress,
                )
                logger.debug("wrote %s (%d frames, %s)", path, len(frames), ended)
                paths.append(path)
                next_index += 1
            if stop is not None:
                logger.info("recording stopped after %d complete file(s)", len(paths))
                break
    finally:
        bar.close()
    return paths
