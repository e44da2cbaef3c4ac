"""World Models' iterative loop: play the agent for real, refit the world, retrain in the dream.

Each round of ``run_loop`` does, in order (each step a *phase*):

1. ``record``: play the current agent in the real game with some exploration
   (with chance ``explore`` per step, a random choice held for 1-10 steps, World
   Models' data policy) and record ``episodes`` episodes in the original ``.npz``
   format under ``OUT/data/round_NN/``;
2. ``memory``: refit the memory model on the world's base recordings plus every
   episode the loop recorded, resuming the previous round's checkpoint
   (``elworld train memory --resume-from``: optimiser and schedule continue, so
   the learning rate stays at the schedule's floor);
3. ``end``: refit the episode-end model on the same data
   (``elworld train end --init-from``), when the world has one;
4. ``bank``: the previous start bank plus ``bank_clips`` clips of the new real
   episodes (the agent's own states, mid-episode), so dreams start where the
   agent goes;
5. ``control``: retrain the agent **in the dream only** from the previous one
   (``elworld train control --init-from``);
6. ``eval``: play the new agent in the real game on the validation seeds (the
   same seeds every round, never recorded into the data).

Round ``NN`` leaves a complete world under ``OUT/round_NN/`` (vision linked,
memory, end, start_frames.npz, control) and a row of the rounds table
(``OUT/rounds.md``, ``OUT/loop.json``): real steps recorded so far, CPU and
wall minutes, held-out dream return, real return on the validation seeds.
Round 0 is the starting world and agent, evaluated the same way.

The state (``OUT/loop.json``, written atomically after every phase) makes
``--resume`` continue at the first unfinished phase; the trainers resume their
own epoch checkpoints mid-phase and recording keeps the episodes already on disk.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from elworld import checkpoint
from elworld.atomic import atomic_write
from elworld.control.agent import Agent
from elworld.control.evaluate import play_real
from elworld.control.train import default_max_steps
from elworld.data.cli import sample_start_frames
from elworld.data.episodes import find_episodes
from elworld.record.doom import DoomEnv, DoomKeyMapping
from elworld.record.recorder import record_env

logger = logging.getLogger(__name__)

PHASES = ("record", "memory", "end", "bank", "control", "eval")
STATE_FILE = "loop.json"
TABLE_FILE = "rounds.md"
MAX_RANDOM_HOLD = 10  # World Models' data policy held each random action 1-10 steps


@dataclass
class LoopConfig:
    """Settings of one ``elworld loop`` run (saved in ``OUT/loop.json``)."""

    out: Path
    world: Path  # the starting world's checkpoint root (vision, memory, end, start_frames.npz)
    data: Path  # the recordings the starting world was trained on (the base of every refit)
    agent: Path | None = None  # the starting agent (None: WORLD/control/best_model)
    cache_dir: Path | None = None  # token cache root (None: DATA/.elworld-cache)
    base_episodes: int | None = None  # use the first N base episodes (sorted by name)
    scenario: str = "take_cover"
    rounds: int = 3
    episodes: int = 20  # real episodes recorded per round
    explore: float = 0.1  # chance per step of starting a random hold
    record_seed: int = 400_000  # round r, episode i: record_seed + (r - 1) * episodes + i
    eval_episodes: int = 20
    eval_seed: int = 600_000  # validation seeds: every round plays eval_seed + i
    max_steps: int | None = None  # real-episode cap (None: 2100 tics / frame skip)
    memory_epochs: int = 2  # refit epochs per round (of memory_steps optimizer steps)
    memory_steps: int = 100
    memory_batch_size: int = 16
    memory_val_batches: int = 10
    end_epochs: int = 5
    bank_clips: int = 32  # clips of the new real episodes added to the start bank per round
    generations: int = 6  # CMA-ES generations per round
    population: int = 16
    rollouts: int = 2
    sigma: float = 0.2  # CMA-ES step size around the previous agent
    dream_max_steps: int | None = None  # None: the trainer's default (2100 tics)
    temperature: float = 1.0
    seed: int = 0
    time_limit_min: float | None = None
    resume: bool = False
    extra_control_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("rounds", "episodes", "eval_episodes", "memory_epochs", "memory_steps",
                     "memory_batch_size", "memory_val_batches", "end_epochs", "generations",
                     "population", "rollouts"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0 <= self.explore <= 1:
            raise ValueError(f"explore must be in [0, 1], got {self.explore}")
        if self.bank_clips < 0:
            raise ValueError(f"bank_clips must be >= 0, got {self.bank_clips}")
        if self.base_episodes is not None and self.base_episodes < 1:
            raise ValueError(f"base_episodes must be >= 1, got {self.base_episodes}")


class ExploringAgent:
    """The agent, with a random choice held for 1-10 steps started with chance ``explore``.

    The agent still sees every frame (its velocity features stay right); only its
    action is replaced during a random hold. Seeded per episode by ``reset(seed)``.
    """

    def __init__(self, agent: Agent, explore: float) -> None:
        self.agent, self.explore = agent, explore
        self.name = f"agent+explore{explore:g}"
        self.choices = agent.policy.choice_actions.cpu().numpy().astype(np.uint8)  # (C, 22)
        self.random_steps = 0
        self.reset(None)

    def reset(self, seed: int | None = None) -> None:
        self.agent.reset()
        self.rng = np.random.default_rng(seed)
        self._left, self._action = 0, self.choices[0]

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        action = self.agent.act(frame)
        if self._left == 0 and self.rng.random() < self.explore:
            self._left = int(self.rng.integers(1, MAX_RANDOM_HOLD + 1))
            self._action = self.choices[self.rng.integers(len(self.choices))]
        if self._left > 0:
            self._left -= 1
            self.random_steps += 1
            return self._action.copy()
        return action


def round_dir(out: Path, index: int) -> Path:
    """``OUT/round_NN``: the world and agent after round ``index`` (0: the starting ones)."""
    return Path(out) / f"round_{index:02d}"


def _elworld_command() -> list[str]:
    """How to call this installation's ``elworld`` CLI in a child process."""
    script = Path(sys.executable).with_name("elworld")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "elworld"]


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Loop:
    """One ``elworld loop`` run: its state, phases and rounds table."""

    def __init__(self, cfg: LoopConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.state_path = self.out / STATE_FILE
        if cfg.resume:
            if not self.state_path.is_file():
                raise FileNotFoundError(f"--resume: no loop state {self.state_path}")
            self.state = json.loads(self.state_path.read_text())
            logger.info("resuming the loop in %s", self.out)
        else:
            if self.state_path.exists():
                raise FileExistsError(
                    f"{self.state_path} exists: pass --resume to continue that loop, or another --out"
                )
            for path, what in ((cfg.world, "--world"), (cfg.data, "--data")):
                if not Path(path).is_dir():
                    raise FileNotFoundError(f"{what} {path} is not a folder")
            self.state = {"config": _jsonable(asdict(cfg)), "done": [], "rows": [],
                          "cpu_s": 0.0, "wall_s": 0.0, "recorded_steps": 0,
                          "recorded_episodes": 0, "explore_steps": 0}  # fmt: skip
        self.cpu_before, self.wall_before = self.state["cpu_s"], self.state["wall_s"]
        self.cpu_start, self.wall_start = _cpu_seconds(), time.monotonic()
        first = checkpoint.best_model_dir(cfg.world, "memory")
        info = json.loads((first / checkpoint.TRAINING_INFO_FILE).read_text())
        self.frame_skip = int((info.get("recordings") or {}).get("frame_skip") or 4)
        self.max_steps = cfg.max_steps or default_max_steps(self.frame_skip)
        self.keys = list(DoomKeyMapping.for_scenario(cfg.scenario).keys)

    # ----------------------------------------------------------------- state
    def _save(self) -> None:
        self.state["cpu_s"] = self.cpu_before + _cpu_seconds() - self.cpu_start
        self.state["wall_s"] = self.wall_before + time.monotonic() - self.wall_start
        self.out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.state, indent=2)
        atomic_write(self.state_path, lambda fp: fp.write(text.encode()))
        table = rounds_table(self.state["rows"])
        atomic_write(self.out / TABLE_FILE, lambda fp: fp.write(table.encode()))

    def _done(self, key: str) -> bool:
        return key in self.state["done"]

    def _finish(self, key: str, **facts: Any) -> None:
        self.state["done"].append(key)
        self.state.setdefault("phases", {})[key] = facts
        self._save()

    def out_of_time(self) -> bool:
        limit = self.cfg.time_limit_min
        return limit is not None and (time.monotonic() - self.wall_start) / 60 >= limit

    def _minutes_left(self) -> float | None:
        if self.cfg.time_limit_min is None:
            return None
        return max(0.0, self.cfg.time_limit_min - (time.monotonic() - self.wall_start) / 60)

    # ----------------------------------------------------------------- paths
    def world_root(self, index: int) -> Path:
        return Path(self.cfg.world) if index == 0 else round_dir(self.out, index)

    def agent_path(self, index: int) -> Path:
        if index == 0:
            return Path(self.cfg.agent or checkpoint.best_model_dir(self.cfg.world, "control"))
        return checkpoint.best_model_dir(round_dir(self.out, index), "control")

    def data_dir(self, index: int) -> Path:
        return self.out / "data" / f"round_{index:02d}"

    def cache_dir(self) -> Path:
        return Path(self.cfg.cache_dir or Path(self.cfg.data) / ".elworld-cache")

    # ----------------------------------------------------------------- phases
    def run(self, progress: bool = True) -> dict[str, Any]:
        """Run rounds until ``rounds`` are done or after the phase in which the time limit
        passes; return the state."""
        steps = [(0, "eval")] + [(r, p) for r in range(1, self.cfg.rounds + 1) for p in PHASES]
        todo = [(r, p) for r, p in steps if not self._done(f"{r}:{p}")]
        bar = tqdm(total=len(steps), initial=len(steps) - len(todo), desc="loop", unit="phase",
                   disable=not progress, dynamic_ncols=True)  # fmt: skip
        for number, (index, phase) in enumerate(todo, start=1):
            bar.set_description(f"loop round {index}: {phase}")
            finished = getattr(self, f"_{phase}")(index)
            if not finished:  # a trainer stopped on the time limit mid-phase
                logger.info("round %d's %s stopped on the time limit: --resume continues", index, phase)
                break
            bar.update(1)
            if self.out_of_time() and number < len(todo):
                logger.info("time limit reached after round %d's %s: --resume continues", index, phase)
                break
        bar.close()
        self._save()
        return self.state

    def _record(self, index: int) -> bool:
        cfg = self.cfg
        out = self.data_dir(index)
        out.mkdir(parents=True, exist_ok=True)
        have = len(list(out.glob("*.npz")))
        agent = Agent.from_checkpoint(self.agent_path(index - 1), checkpoints=self.world_root(index - 1))
        player = ExploringAgent(agent, cfg.explore)
        env = DoomEnv(cfg.scenario, frame_skip=self.frame_skip)
        meta = {"scenario": cfg.scenario, "frame_skip": self.frame_skip, "keys": env.mapping.table(),
                "source": "vizdoom", "agent": str(self.agent_path(index - 1)),
                "explore": cfg.explore, "loop_round": index}  # fmt: skip
        prefix = f"agent_r{index:02d}"
        try:
            for i in tqdm(range(have, cfg.episodes), desc=f"record round {index}", leave=False):
                seed = cfg.record_seed + (index - 1) * cfg.episodes + i
                record_env(env, player, out, episodes=1, prefix=prefix, seed=seed, index=i + 1,
                           max_steps=self.max_steps, meta=meta)  # fmt: skip
        finally:
            env.close()
        steps = sum(json.loads(p.with_suffix(".json").read_text())["steps"] for p in out.glob("*.npz"))
        self.state["recorded_steps"] += steps
        self.state["recorded_episodes"] += cfg.episodes
        self.state["explore_steps"] += player.random_steps
        self._finish(f"{index}:record", episodes=cfg.episodes, steps=steps,
                     seeds=[cfg.record_seed + (index - 1) * cfg.episodes, cfg.record_seed + index * cfg.episodes - 1])  # fmt: skip
        return True

    def mix_dir(self, index: int, *, rebuild: bool = False) -> Path:
        """``OUT/data/mix_NN``: links to the base episodes and every episode recorded so far
        (made once per round, by the memory refit; ``rebuild`` makes it afresh)."""
        mix = self.out / "data" / f"mix_{index:02d}"
        if mix.is_dir() and not rebuild:
            return mix
        if mix.exists():
            shutil.rmtree(mix)
        mix.mkdir(parents=True)
        base = find_episodes(self.cfg.data)[: self.cfg.base_episodes]
        loop = [p for r in range(1, index + 1) for p in find_episodes(self.data_dir(r))]
        for path in base + loop:
            for source in (path, path.with_suffix(".json")):
                if source.exists():
                    (mix / source.name).symlink_to(source.resolve())
        return mix

    def _child(self, args: list[str]) -> None:
        command = _elworld_command() + args
        logger.info("running %s", " ".join(command))
        subprocess.run(command, check=True, env=os.environ.copy())

    def _memory(self, index: int) -> bool:
        cfg = self.cfg
        root = round_dir(self.out, index)
        previous = checkpoint.best_model_dir(self.world_root(index - 1), "memory")
        vision = checkpoint.best_model_dir(cfg.world, "vision")
        self._link_vision(root)
        found = checkpoint.list_epoch_checkpoints(root, "memory")
        start = self.state.setdefault("memory_start_epoch", {})
        if str(index) not in start:
            state = checkpoint.load_training_state(previous)["trainer_state"] or {}
            start[str(index)] = int(state.get("epoch", 0))
            self._save()
        target = start[str(index)] + cfg.memory_epochs
        args = ["train", "memory", "--data", str(self.mix_dir(index, rebuild=not found)), "--cache-dir",
                str(self.cache_dir()), "--vision", str(vision), "--out", str(root),
                "--epochs", str(target), "--steps-per-epoch", str(cfg.memory_steps),
                "--batch-size", str(cfg.memory_batch_size), "--val-batches",
                str(cfg.memory_val_batches), "--keep-last", "1", "--seed", str(cfg.seed + index)]  # fmt: skip
        args += ["--resume"] if found else ["--resume-from", str(previous)]
        left = self._minutes_left()
        if left is not None:
            args += ["--time-limit", f"{left:.2f}"]
        self._child(args)
        found = checkpoint.list_epoch_checkpoints(root, "memory")
        if not found or found[-1][0] < target:
            return False
        self._finish(f"{index}:memory", epochs=[start[str(index)] + 1, target],
                     steps=cfg.memory_epochs * cfg.memory_steps)  # fmt: skip
        return True

    def _end(self, index: int) -> bool:
        root = round_dir(self.out, index)
        previous = checkpoint.best_model_dir(self.world_root(index - 1), "end")
        if not previous.is_dir():
            logger.info("the world has no episode-end model: its memory model's end head was refit")
            self._finish(f"{index}:end", skipped=True)
            return True
        vision = checkpoint.best_model_dir(self.cfg.world, "vision")
        self._child(["train", "end", "--data", str(self.mix_dir(index)), "--cache-dir",
                     str(self.cache_dir()), "--vision", str(vision), "--out", str(root),
                     "--init-from", str(previous), "--epochs", str(self.cfg.end_epochs),
                     "--seed", str(self.cfg.seed + index)])  # fmt: skip
        self._finish(f"{index}:end", epochs=self.cfg.end_epochs)
        return True

    def _bank(self, index: int) -> bool:
        root = round_dir(self.out, index)
        previous = np.load(self.world_root(index - 1) / "start_frames.npz")
        obs = previous["obs"]
        first = previous["first"] if "first" in previous else np.ones(len(obs), dtype=bool)
        starts = np.flatnonzero(first)
        clip = int(np.diff(np.append(starts, len(obs))).max()) if len(starts) else 1
        added = 0
        if self.cfg.bank_clips:
            frames, flags = sample_start_frames(
                find_episodes(self.data_dir(index)), self.cfg.bank_clips,
                seed=self.cfg.seed * 1000 + index, clip=clip,
            )  # fmt: skip
            frames = _resize_like(frames, obs.shape[1:3])
            obs, first = np.concatenate([obs, frames]), np.concatenate([first, flags])
            added = int(flags.sum())
        atomic_write(root / "start_frames.npz",
                     lambda fp: np.savez_compressed(fp, obs=obs, first=first))  # fmt: skip
        self._finish(f"{index}:bank", clips=int(first.sum()), added=added, clip_frames=clip)
        return True

    def _control(self, index: int) -> bool:
        cfg = self.cfg
        root = round_dir(self.out, index)
        found = checkpoint.list_epoch_checkpoints(root, "control")
        args = ["train", "control", "--checkpoints", str(root), "--out", str(root),
                "--generations", str(cfg.generations), "--population", str(cfg.population),
                "--rollouts", str(cfg.rollouts), "--sigma", str(cfg.sigma),
                "--eval-every", str(max(1, math.ceil(cfg.generations / 3))),
                "--temperature", str(cfg.temperature), "--seed", str(cfg.seed + index),
                "--keep-last", "1", *cfg.extra_control_args]  # fmt: skip
        if cfg.dream_max_steps is not None:
            args += ["--max-steps", str(cfg.dream_max_steps)]
        args += ["--resume"] if found else ["--init-from", str(self.agent_path(index - 1))]
        left = self._minutes_left()
        if left is not None:
            args += ["--time-limit", f"{left:.2f}"]
        self._child(args)
        found = checkpoint.list_epoch_checkpoints(root, "control")
        if not found or found[-1][0] < cfg.generations:
            return False
        self._finish(f"{index}:control", generations=cfg.generations)
        return True

    def _eval(self, index: int) -> bool:
        cfg = self.cfg
        agent_path = self.agent_path(index)
        agent = Agent.from_checkpoint(agent_path, checkpoints=self.world_root(index))
        real, _ = play_real(
            lambda: DoomEnv(cfg.scenario, frame_skip=self.frame_skip), ["agent"], agent=agent,
            keys=self.keys, episodes=cfg.eval_episodes, seed=cfg.eval_seed, max_steps=self.max_steps,
        )  # fmt: skip
        info = json.loads((agent_path / checkpoint.TRAINING_INFO_FILE).read_text())
        self._finish(f"{index}:eval", real=real["agent"])
        self.state["rows"].append({
            "round": index,
            "real_steps_recorded": self.state["recorded_steps"],
            "episodes_recorded": self.state["recorded_episodes"],
            "cpu_min": round(self.state["cpu_s"] / 60, 1),
            "wall_min": round(self.state["wall_s"] / 60, 1),
            "dream_return": info.get("best_heldout_return"),
            "real_return_mean": real["agent"]["return_mean"],
            "real_return_std": real["agent"]["return_std"],
            "real_length_mean": real["agent"]["length_mean"],
            "agent": str(agent_path),
        })  # fmt: skip
        self._save()
        logger.info("round %d: real return %.1f +/- %.1f on %d validation episodes", index,
                    real["agent"]["return_mean"], real["agent"]["return_std"], cfg.eval_episodes)  # fmt: skip
        return True

    def _link_vision(self, root: Path) -> None:
        """Round worlds share the starting world's vision model (never refit: tokens stay valid)."""
        root.mkdir(parents=True, exist_ok=True)
        link = root / "vision"
        if not link.exists():
            link.symlink_to(checkpoint.kind_dir(self.cfg.world, "vision").resolve())


def _resize_like(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if frames.shape[1:3] == tuple(size):
        return frames
    from elworld.frames import resize_frames

    return resize_frames(frames, *size)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}


def rounds_table(rows: list[dict[str, Any]]) -> str:
    """The rounds table in Markdown (one row per evaluated round)."""
    lines = [
        "| round | real steps recorded | CPU min | wall min | dream return (held-out) | "
        "real return (validation seeds) | real length |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        dream = row.get("dream_return")
        lines.append(
            f"| {row['round']} | {row['real_steps_recorded']} | {row['cpu_min']} | "
            f"{row['wall_min']} | {'-' if dream is None else f'{dream:.1f}'} | "
            f"{row['real_return_mean']:.1f} +/- {row['real_return_std']:.1f} | "
            f"{row['real_length_mean']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def run_loop(cfg: LoopConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run (or with ``cfg.resume`` continue) the loop; return its state (rows included)."""
    return Loop(cfg).run(progress=progress)
