"""Scripted collection of ViZDoom episodes, optionally in parallel worker processes.

Two policies press only the scenario's mapped keys (``DoomKeyMapping``):

- ``random``: every step an independent, uniformly random combination of
  those keys (each held with probability 1/2). Jittery; few long motions.
- ``sticky``: holds a random combination for a uniform random 4..20 steps,
  then draws a new one. Covers sustained motion (long strafes and turns) far
  better, which is what a world model needs to see.

Episode ``i`` of a run uses ``seed + i`` for both the game and the policy, so a
run is reproducible whatever the number of workers. Files are
``OUT/{scenario}_NNNN.npz`` numbered after the existing ones.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing import util as mp_util
from multiprocessing.synchronize import Event
from pathlib import Path

import numpy as np
from tqdm import tqdm

from elworld.keys import NUM_KEYS
from elworld.record.doom import DoomEnv, check_scenario
from elworld.record.recorder import StopRecording, record_env
from elworld.record.writer import episode_path, next_episode_index, prepare_output_dir

logger = logging.getLogger(__name__)

POLICIES = ("random", "sticky")


class RandomKeysPolicy:
    """Each step, a uniformly random combination of ``keys`` (indices into the 22)."""

    name = "random"

    def __init__(self, keys: Sequence[int], seed: int | None = None) -> None:
        self.keys = np.asarray(keys, dtype=np.int64)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        """Restart the random stream from ``seed``."""
        self.rng = np.random.default_rng(seed)

    def _draw(self) -> np.ndarray:
        action = np.zeros(NUM_KEYS, dtype=np.uint8)
        action[self.keys] = self.rng.integers(0, 2, size=len(self.keys), dtype=np.uint8)
        return action

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """The action for this step (the frame is ignored)."""
        return self._draw()


class StickyKeysPolicy(RandomKeysPolicy):
    """Hold a random combination of ``keys`` for ``min_hold..max_hold`` steps, then redraw."""

    name = "sticky"

    def __init__(
        self, keys: Sequence[int], seed: int | None = None, min_hold: int = 4, max_hold: int = 20
    ) -> None:
        if not 1 <= min_hold <= max_hold:
            raise ValueError(f"need 1 <= min_hold <= max_hold, got {min_hold}, {max_hold}")
        self.min_hold, self.max_hold = min_hold, max_hold
        super().__init__(keys, seed)

    def reset(self, seed: int | None = None) -> None:
        """Restart the random stream from ``seed`` and drop the held combination."""
        super().reset(seed)
        self._held = np.zeros(NUM_KEYS, dtype=np.uint8)
        self._left = 0

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """The held combination, redrawn when its hold time is up."""
        if self._left == 0:
            self._held = self._draw()
            self._left = int(self.rng.integers(self.min_hold, self.max_hold + 1))
        self._left -= 1
        return self._held.copy()


def make_policy(name: str, keys: Sequence[int], seed: int | None = None) -> RandomKeysPolicy:
    """The scripted policy called ``name`` (``random`` or ``sticky``) over ``keys``."""
    if name == "random":
        return RandomKeysPolicy(keys, seed)
    if name == "sticky":
        return StickyKeysPolicy(keys, seed)
    raise ValueError(f"unknown policy {name!r}; expected one of {', '.join(POLICIES)}")


@dataclass(frozen=True)
class _Settings:
    """What every episode of one ``collect_doom`` run shares (picklable for workers)."""

    scenario: str
    out_dir: str
    policy: str
    frame_skip: int
    max_steps: int | None
    compress: bool


class _Collector:
    """One DoomGame recording episodes by index; lives in the main process or a worker."""

    def __init__(self, settings: _Settings, stop: Event | None = None) -> None:
        self.settings = settings
        self.stop = stop
        self.env = DoomEnv(settings.scenario, frame_skip=settings.frame_skip)
        self.policy = make_policy(settings.policy, self.env.mapping.keys)
        self.name = self.policy.name
        self.steps = 0
        self.meta = {
            "scenario": settings.scenario,
            "frame_skip": settings.frame_skip,
            "keys": self.env.mapping.table(),
            "source": "vizdoom",
        }

    # The collector is record_env's policy: the scripted policy plus a stop check.
    def reset(self, seed: int | None) -> None:
        self.policy.reset(seed)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.stop is not None and self.stop.is_set():
            raise StopRecording(save=False)
        self.steps += 1
        return self.policy(frame)

    def run(self, index: int, seed: int) -> tuple[int, Path | None, int]:
        """Record episode ``index`` with ``seed``; return (index, file or None, frames)."""
        self.steps = 0
        s = self.settings
        paths = record_env(
            self.env, self, s.out_dir, episodes=1, prefix=s.scenario, seed=seed,
            max_steps=s.max_steps, meta=self.meta, index=index, compress=s.compress,
        )  # fmt: skip
        return (index, paths[0], self.steps) if paths else (index, None, 0)

    def close(self) -> None:
        self.env.close()


_worker: _Collector | None = None


def _init_worker(settings: _Settings, stop: Event) -> None:
    """Pool initializer: ignore Ctrl+C (the parent stops us via ``stop``), start a game."""
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker = _Collector(settings, stop)
    mp_util.Finalize(None, _worker.close, exitpriority=10)


def _run_task(task: tuple[int, int]) -> tuple[int, Path | None, int]:
    assert _worker is not None, "worker not initialized"
    return _worker.run(*task)


def _warn_repeated_seeds(out: Path, settings: _Settings, seeds: range) -> None:
    """Warn when ``out`` already holds episodes recorded with the same settings and seeds."""
    repeated = set()
    for sidecar in out.glob(f"{settings.scenario}_*.json"):
        try:
            info = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            continue
        key = (info.get("scenario"), info.get("policy"), info.get("frame_skip"))
        if key == (settings.scenario, settings.policy, settings.frame_skip) and (
            info.get("seed") in seeds
        ):
            repeated.add(info["seed"])
    if repeated:
        logger.warning(
            "%s already holds %s episodes with seeds %s..%s; the new ones will repeat them "
            "(pass a different seed for new data)",
            out, settings.scenario, min(repeated), max(repeated),
        )  # fmt: skip


def collect_doom(
    scenario: str,
    episodes: int,
    out_dir: str | os.PathLike[str],
    policy: str = "sticky",
    frame_skip: int = 2,
    seed: int = 0,
    workers: int = 1,
    max_steps: int | None = None,
    *,
    compress: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Record ``episodes`` ViZDoom episodes of ``scenario`` with a scripted policy.

    Episode ``i`` uses seed ``seed + i`` (game and policy) and is written to
    ``out_dir/{scenario}_NNNN.npz`` (+ ``.json``), numbered after existing
    files. ``workers > 1`` runs that many processes (spawned), each with its own
    game. ``max_steps`` caps an episode's length (``done`` stays 0 then, ``truncated`` is 1).
    Returns the written files in episode order.

    On Ctrl+C the episodes in flight are dropped, the finished ones kept, and
    ``KeyboardInterrupt`` propagates; no partial or temporary file remains.
    """
    check_scenario(scenario)
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")
    limits = {"episodes": (episodes, 1), "frame_skip": (frame_skip, 1), "workers": (workers, 1)}
    limits["seed"] = (seed, 0)
    for name, (value, low) in limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps!r}")
    out = prepare_output_dir(out_dir)
    settings = _Settings(scenario, str(out), policy, frame_skip, max_steps, compress)
    seeds = range(seed, seed + episodes)
    _warn_repeated_seeds(out, settings, seeds)
    start = next_episode_index(out, scenario)
    tasks = [(start + i, s) for i, s in enumerate(seeds)]
    logger.debug("collecting %s", asdict(settings))

    written: dict[int, Path] = {}
    frames = 0
    bar = tqdm(total=episodes, unit="episode", desc=f"collect {scenario}", disable=not progress)

    def done(result: tuple[int, Path | None, int]) -> None:
        nonlocal frames
        index, path, steps = result
        if path is not None:
            written[index] = path
        frames += steps
        bar.update()
        bar.set_postfix(frames=frames, refresh=False)

    try:
        if workers == 1:
            collector = _Collector(settings)
            try:
                for task in tasks:
                    done(collector.run(*task))
            finally:
                collector.close()
        else:
            context = mp.get_context("spawn")
            stop = context.Event()
            pool = context.Pool(min(workers, episodes), _init_worker, (settings, stop))
            try:
                for result in pool.imap_unordered(_run_task, tasks):
                    done(result)
            finally:
                stop.set()  # workers drop their episode in flight and skip the rest
                pool.close()
                pool.join()
    except KeyboardInterrupt:
        kept = sum(episode_path(out, scenario, index).exists() for index, _ in tasks)
        logger.warning("interrupted: kept %d complete episode(s) in %s", kept, out)
        raise
    finally:
        bar.close()
    logger.info("wrote %d episode(s), %d frames, to %s", len(written), frames, out)
    return [written[i] for i in sorted(written)]
