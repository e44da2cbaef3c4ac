"""``elworld train control``: CMA-ES on a small policy, inside the dream only.

Each generation CMA-ES proposes ``population`` parameter vectors; each plays
``rollouts`` dreams started from real frames of the world's start bank (the
same frames for every candidate, so they are compared on equal terms), all
``population x rollouts`` dreams in one batched dream step per step. A
candidate's fitness is its mean *expected* dream return (``rollout``: rewards
weighted by the chance the world has not ended the episode yet). The real
game is never called (except with ``--real``, the policy-class ceiling:
``elworld.control.real_fitness``).

Every ``eval_every`` generations the CMA-ES mean is played from the held-out
start frames (a fixed share of the bank no candidate trains on, with fixed
sampling seeds so evaluations compare like with like); its mean dream return
(the dream env's: reward head summed until the world ends it or
``max_steps``) decides ``OUT/control/best_model``. Each evaluation writes
``OUT/control/control_model_checkpoint_G`` (G = generation) with the CMA-ES
state in ``trainer_state.pth``, which ``--resume`` continues from exactly.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from elworld import checkpoint
from elworld.checkpoint.lineage import start_record
from elworld.control.cmaes_state import ask_population, cma_state, new_cma, restore_cma
from elworld.control.rollout import CandidatesPolicy, RolloutResult, agent_policy, dream_rollouts
from elworld.control.world_info import (
    WORLD_INFO_KEY,
    check_same_world,
    recorded_world,
    resolve_keys,
    resolve_world,
)
from elworld.model.end import EndConfig
from elworld.model.policy import NO_KEY, ControlConfig, ControlPolicy, default_choices
from elworld.model.vision import VisionConfig
from elworld.world.dream import DreamWorld

logger = logging.getLogger(__name__)

WORLD_MODELS_MAX_TICS = 2100  # World Models' episode cap on take_cover
FALLBACK_MAX_STEPS = 1000
HELDOUT_SEED_OFFSET = 999_983


@dataclass
class ControlTrainConfig:
    """Settings of one ``elworld train control`` run (saved in ``training_info.json``)."""

    out: Path = Path("checkpoints")  # checkpoint root: writes OUT/control/
    checkpoints: Path | None = None  # the world's root (None: $ELWORLD_CHECKPOINTS, else bundled)
    vision: Path | None = None  # explicit vision checkpoint folder (overrides the root's)
    memory: Path | None = None  # explicit memory checkpoint folder
    start_frames: Path | None = None  # start bank .npz (None: ROOT/start_frames.npz)
    keys: str | None = None  # "left,right" (None: the memory checkpoint's recordings)
    generations: int = 300
    population: int | None = None  # None: CMA-ES's default, 4 + 3 ln(parameters)
    rollouts: int = 2  # dreams per candidate per generation
    sigma: float = 0.5  # CMA-ES initial step size (features are standardised)
    max_steps: int | None = None  # None: 2100 tics / the recordings' frame skip
    survival_floor: float = 0.05  # stop a training dream once it survives with less chance
    eval_every: int = 5  # generations between held-out evaluations (and checkpoints)
    heldout_fraction: float = 0.25  # share of the start bank kept for evaluation
    max_heldout: int = 32  # at most this many held-out start frames (evaluation cost)
    eval_rollouts: int = 1  # dreams per held-out start frame
    temperature: float = 1.0
    sampling_steps: int = 1
    guidance: float | None = None  # None: the memory checkpoint's recommended scale
    precision: str = "auto"  # bf16 where native, else fp32 (model.common.choose_precision)
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    init_from: Path | None = None  # start from this control checkpoint (policy + features)
    time_limit_min: float | None = None
    keep_last: int | None = 3
    components: int = 2
    row_bands: int = 2
    col_bands: int = 8
    velocity: bool = True
    hidden: int = 0
    hold: int = 1
    memory_state: bool = False  # the policy also reads the episode-end model's GRU state
    real: str | None = None  # "doom:take_cover": fitness from real games (control.real_fitness)
    real_seed: int = 300_000  # first game seed of real training episodes
    eval_episodes: int = 8  # real validation episodes (seeds 600000+) per evaluation
    real_games: int = 16  # real games stepped in lockstep
    command: str = ""

    def __post_init__(self) -> None:
        for name in ("generations", "rollouts", "eval_every", "eval_rollouts", "max_heldout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.population is not None and self.population < 2:
            raise ValueError(f"population must be >= 2, got {self.population}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        if not 0 <= self.survival_floor < 1:
            raise ValueError(f"survival_floor must be in [0, 1), got {self.survival_floor}")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        if self.resume and self.init_from is not None:
            raise ValueError("pass resume (continue this run) or init_from (a new run), not both")


def default_max_steps(frame_skip: int | None) -> int:
    """World Models' 2100-tic cap in steps of ``frame_skip`` tics (1000 steps when unknown)."""
    return math.ceil(WORLD_MODELS_MAX_TICS / frame_skip) if frame_skip else FALLBACK_MAX_STEPS


def split_bank(
    clip_start: np.ndarray, context_frames: int, fraction: float, seed: int, max_heldout: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out start indices into a start bank (a seeded split).

    ``clip_start`` ``(S,)``: the index of each frame's clip start
    (``DreamWorld.bank_clip_start``). Starts are frames with ``context_frames - 1``
    earlier frames of their clip (all frames if none has); whole clips go to one
    side, so no held-out start shares a clip with a training start. At most
    ``max_heldout`` held-out starts; with one usable start both sides share it.
    """
    clip_start = np.asarray(clip_start)
    history = np.arange(len(clip_start)) - clip_start
    starts = np.flatnonzero(history >= context_frames - 1)
    if starts.size == 0:
        starts = np.arange(len(clip_start))
    if starts.size < 2:
        logger.warning("the start bank has one usable start: training and evaluation share it")
        return starts, starts
    rng = np.random.default_rng([seed, len(clip_start)])
    clips = np.unique(clip_start[starts])
    if clips.size >= 2:  # a bank of clips: hold out whole clips
        count = min(clips.size - 1, max(1, round(clips.size * fraction)))
        held = np.isin(clip_start[starts], rng.permutation(clips)[:count])
    else:  # one consecutive recording: hold out frames
        count = min(starts.size - 1, max(1, round(starts.size * fraction)))
        held = np.isin(np.arange(starts.size), rng.permutation(starts.size)[:count])
    heldout = starts[held]
    if heldout.size > max_heldout:
        heldout = np.sort(rng.choice(heldout, size=max_heldout, replace=False))
    return starts[~held], heldout


def training_frames(clip_start: np.ndarray, heldout: np.ndarray) -> np.ndarray:
    """Bank frames outside the held-out starts' clips (every frame if that leaves none)."""
    clip_start = np.asarray(clip_start)
    if np.unique(clip_start).size >= 2:
        keep = ~np.isin(clip_start, clip_start[heldout])
    else:
        keep = ~np.isin(np.arange(len(clip_start)), heldout)
    return np.flatnonzero(keep) if keep.any() else np.arange(len(clip_start))


def play(
    world: DreamWorld,
    starts: np.ndarray,
    make_policy,
    *,
    max_steps: int,
    seed: int,
    floor: float = 0.0,
) -> RolloutResult:
    """Dreams from bank frames ``starts`` with their real history (``DreamWorld.start_stacks``),
    in chunks of the world's size; ``make_policy(n, offset)`` plays dreams ``offset..offset+n-1``."""
    parts = []
    for low in range(0, len(starts), world.num_envs):
        chunk = starts[low : low + world.num_envs]
        stacks = world.start_stacks(chunk)  # (n, K, T)
        parts.append(
            dream_rollouts(world, stacks, make_policy(len(chunk), low), max_steps=max_steps,
                           seed=seed + low, survival_floor=floor)
        )  # fmt: skip
    return RolloutResult(
        *(
            np.concatenate([getattr(p, f) for p in parts])
            for f in ("returns", "lengths", "expected_returns", "terminated")
        ),
        steps=sum(p.steps for p in parts),
    )


def _summary(result: RolloutResult) -> dict[str, float]:
    return {
        "return_mean": float(result.returns.mean()),
        "return_std": float(result.returns.std()),
        "length_mean": float(result.lengths.mean()),
        "expected_return_mean": float(result.expected_returns.mean()),
        "terminated_share": float(result.terminated.mean()),
    }


class _Run:
    """State of one training run: the world, the policy, CMA-ES and the bookkeeping."""

    real_steps = 0  # the dream never calls the real game (control.real_fitness.RealRun does)

    def __init__(self, cfg: ControlTrainConfig) -> None:
        from elworld.train.distributed import resolve_device

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.paths, self.world_info = resolve_world(cfg.checkpoints, cfg.vision, cfg.memory)
        self.generation, self.best, self.elapsed_before, self.history = 0, -math.inf, 0.0, []
        self.dream_steps = 0
        resume_from = self._resume_checkpoint()
        policy_config = self._policy_config(resume_from)
        # The checkpoint this run started from, fingerprinted before anything can replace it.
        if cfg.init_from is not None:
            self.started_from = start_record(cfg.init_from, "--init-from")
        elif resume_from is not None:
            self.started_from = checkpoint.read_training_info(resume_from).get("started_from")
        else:
            self.started_from = None
        self.max_steps = cfg.max_steps or default_max_steps(self.world_info.frame_skip)
        population = cfg.population
        state = (
            checkpoint.load_training_state(resume_from)["trainer_state"] if resume_from else None
        )
        if state is not None:
            population = int(state["cma"]["values"]["_popsize"])
        elif population is None:
            population = 4 + int(3 * math.log(policy_config.num_params))
        self.world = DreamWorld.from_checkpoints(
            self.paths.root, vision=self.paths.vision, memory=self.paths.memory,
            start_observations=cfg.start_frames, num_envs=population * cfg.rollouts,
            device=self.device, temperature=cfg.temperature, sampling_steps=cfg.sampling_steps,
            guidance=cfg.guidance, precision=cfg.precision,
        )  # fmt: skip
        self.train_starts, self.heldout_starts = split_bank(
            self.world.bank_clip_start.cpu().numpy(), self.world.context_frames,
            cfg.heldout_fraction, cfg.seed, cfg.max_heldout,
        )  # fmt: skip
        if resume_from is not None:
            assert state is not None
            self.policy = ControlPolicy.from_checkpoint(resume_from, device=self.device)
            self.cma = restore_cma(state["cma"], str(resume_from))
            self.generation = int(state["generation"])
            self.best = float(state["best_return"])
            self.elapsed_before = float(state["elapsed_s"])
            self.dream_steps = int(state.get("dream_steps", 0))
            self.history = list(state.get("history", []))
            checkpoint.set_rng_state(state["rng"])
            logger.info(
                "resuming control training from %s (generation %d)", resume_from, self.generation
            )
        elif cfg.init_from is not None:  # a warm start: the policy's features and weights
            self.policy = ControlPolicy.from_checkpoint(cfg.init_from, device=self.device)
            self.cma = new_cma(
                policy_config.num_params, cfg.sigma, population, cfg.seed,
                mean=self.policy.get_flat(),
            )  # fmt: skip
            logger.info("starting from the control policy in %s", cfg.init_from)
        else:
            self.policy = ControlPolicy(policy_config).to(self.device)
            bank = self.world.bank.view(-1, *self.world.grid_shape)  # (S, gh, gw)
            frames = training_frames(self.world.bank_clip_start.cpu().numpy(), self.heldout_starts)
            self.policy.fit_features(self.world.vision.quantizer.embedding, bank[frames])
            self.policy.set_flat(np.zeros(policy_config.num_params))
            self.cma = new_cma(policy_config.num_params, cfg.sigma, population, cfg.seed)
        logger.info(
            "control policy: %d parameters, choices %s; CMA-ES population %d x %d dreams; "
            "%d training / %d held-out start frames; dreams end when the world says so or at %d steps",
            policy_config.num_params, "/".join(policy_config.choices), population, cfg.rollouts,
            len(self.train_starts), len(self.heldout_starts), self.max_steps,
        )  # fmt: skip

    def _resume_checkpoint(self) -> Path | None:
        if not self.cfg.resume:
            return None
        found = checkpoint.list_epoch_checkpoints(self.cfg.out, "control")
        if not found:
            raise FileNotFoundError(
                f"--resume: no control checkpoint under {checkpoint.kind_dir(self.cfg.out, 'control')}"
            )
        path = found[-1][1]
        check_same_world(path, recorded_world(path), self.world_info)
        return path

    def _policy_config(self, resume_from: Path | None) -> ControlConfig:
        if resume_from is not None:
            return checkpoint.load_config(resume_from, ControlConfig)
        if self.cfg.init_from is not None:
            config = checkpoint.load_config(self.cfg.init_from, ControlConfig)
            vision = checkpoint.load_config(self.paths.vision, VisionConfig)
            if (config.vocab_size, config.grid_height, config.grid_width) != (
                vision.codebook_size, vision.grid_height, vision.grid_width,
            ):  # fmt: skip
                raise ValueError(
                    f"--init-from {self.cfg.init_from}: its policy reads {config.vocab_size} codes "
                    f"on a {config.grid_height}x{config.grid_width} grid, the world's vision model "
                    f"{vision.codebook_size} on {vision.grid_height}x{vision.grid_width}"
                )
            return config
        vision = checkpoint.load_config(self.paths.vision, VisionConfig)
        keys = resolve_keys(self.world_info, self.cfg.keys)
        c = self.cfg
        state = 0
        if c.memory_state:
            if self.paths.end is None:
                raise ValueError(
                    "--memory-state: the world has no episode-end model (ROOT/end/best_model) whose "
                    "state the policy could read"
                )
            state = checkpoint.load_config(self.paths.end, EndConfig).hidden
        return ControlConfig(
            vocab_size=vision.codebook_size, grid_height=vision.grid_height,
            grid_width=vision.grid_width, components=c.components, row_bands=c.row_bands,
            col_bands=c.col_bands, velocity=c.velocity, hidden=c.hidden, hold=c.hold,
            choices=default_choices(keys), memory_state=state,
        )  # fmt: skip

    # ------------------------------------------------------------------ steps
    def generation_step(self, generation: int) -> dict[str, float]:
        """Ask, play every candidate in ``rollouts`` dreams, tell; return the fitness summary."""
        cfg = self.cfg
        candidates = ask_population(self.cma, cfg.seed, generation)  # (P, n)
        rng = np.random.default_rng([cfg.seed, generation])
        starts = rng.choice(
            self.train_starts, size=cfg.rollouts, replace=len(self.train_starts) < cfg.rollouts
        )
        params = np.repeat(candidates, cfg.rollouts, axis=0)  # (P * R, n): dream c*R + r
        result = play(
            self.world, np.tile(starts, len(candidates)),
            lambda n, low: CandidatesPolicy(self.policy, params[low : low + n], self.world),
            max_steps=self.max_steps, seed=int(rng.integers(2**62)), floor=cfg.survival_floor,
        )  # fmt: skip
        fitness = result.expected_returns.reshape(len(candidates), cfg.rollouts).mean(axis=1)
        self.cma.tell([(x, -float(f)) for x, f in zip(candidates, fitness)])  # cmaes minimises
        self.dream_steps += result.steps
        return {
            "fitness_mean": float(fitness.mean()),
            "fitness_max": float(fitness.max()),
            "dream_steps": result.steps,
        }

    def evaluate_heldout(self) -> dict[str, float]:
        """The CMA-ES mean played from every held-out start frame (fixed seeds)."""
        self.policy.set_flat(self.cma.mean)
        starts = np.repeat(self.heldout_starts, self.cfg.eval_rollouts)
        result = play(
            self.world, starts, lambda n, low: agent_policy(self.policy, n, self.world),
            max_steps=self.max_steps, seed=self.cfg.seed + HELDOUT_SEED_OFFSET,
        )  # fmt: skip
        self.dream_steps += result.steps
        return _summary(result)

    def save(
        self, generation: int, heldout: dict[str, float], fitness: dict[str, float], elapsed: float
    ) -> bool:
        """Write the generation's checkpoint (and best_model when held-out return improved)."""
        cfg = self.cfg
        improved = heldout["return_mean"] > self.best
        self.best = max(self.best, heldout["return_mean"])
        info = self._training_info(generation, heldout, fitness, elapsed)
        state = {
            "generation": generation,
            "best_return": self.best,
            "elapsed_s": elapsed,
            "dream_steps": self.dream_steps,
            **self._extra_state(),
            "history": self.history,
            "cma": cma_state(self.cma),
            "rng": checkpoint.rng_state(),
        }
        path = checkpoint.epoch_checkpoint_dir(cfg.out, "control", generation)
        checkpoint.save_checkpoint(
            path, model=self.policy, config=self.policy.config, training_info=info,
            readme=self._card(info), trainer_state=state,
        )  # fmt: skip
        if improved:
            best = checkpoint.best_model_dir(cfg.out, "control")
            checkpoint.copy_checkpoint(path, best)
            logger.info("new best control model (held-out return %.1f) -> %s", self.best, best)
        if cfg.keep_last:
            checkpoint.prune_epoch_checkpoints(cfg.out, "control", cfg.keep_last)
        return improved

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _card(self, info: dict[str, Any]) -> str:
        return model_card(info, self.policy.config)

    def _training_info(
        self, generation: int, heldout: dict[str, float], fitness: dict[str, float], elapsed: float
    ) -> dict[str, Any]:
        cfg, world = self.cfg, self.world_info
        return {
            "command": cfg.command,
            **({"started_from": self.started_from} if self.started_from else {}),
            "kind": "control",
            "method": "CMA-ES (cmaes) on a linear policy over pooled codebook features"
            if self.policy.config.hidden == 0
            else "CMA-ES (cmaes) on a one-layer MLP policy over pooled codebook features",
            "epoch": generation,
            "generation": generation,
            "metrics": {
                **{f"heldout_{k}": v for k, v in heldout.items()},
                **{f"train_{k}": v for k, v in fitness.items() if k != "dream_steps"},
            },
            "best_heldout_return": self.best,
            WORLD_INFO_KEY: world.to_json(),
            "scenario": world.scenario,
            "frame_skip": world.frame_skip,
            "keys": sorted({k for c in self.policy.config.choices if c != NO_KEY for k in c.split("+")}),
            "choices": list(self.policy.config.choices),
            "start_frames": str(cfg.start_frames) if cfg.start_frames else
            (str(Path(self.paths.root) / "start_frames.npz") if self.paths.root else None),
            "start_bank": {"frames": self.world.num_start_frames, "train": self.train_starts.tolist(),
                           "heldout": self.heldout_starts.tolist()},
            "dream": {"max_steps": self.max_steps, "temperature": cfg.temperature,
                      "sampling_steps": cfg.sampling_steps, "guidance": self.world.guidance,
                      "precision": cfg.precision, "survival_floor": cfg.survival_floor},
            "cma": {"population": self.cma.population_size, "parameters": self.cma.dim,
                    "sigma0": cfg.sigma, "sigma": float(self.cma._sigma)},
            "dream_steps": self.dream_steps,
            "elapsed_s": round(elapsed, 1),
            "device": str(self.device),
            "hardware": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
            f"{torch.cuda.get_device_name(0) if self.device.type == 'cuda' else f'CPU x{torch.get_num_threads()} threads'}",
            "train_config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        }  # fmt: skip


def train_control(cfg: ControlTrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train a control agent in the dream (with ``cfg.real``: in the real game, ``control.real_fitness``);
    return a summary (generations, best return, paths, dream and real steps)."""
    if cfg.real:
        from elworld.control.real_fitness import RealRun

        run = RealRun(cfg)
    else:
        run = _Run(cfg)
    steps_name = "real_steps" if cfg.real else "dream_steps"
    started = time.monotonic()
    first = run.generation + 1
    if first > cfg.generations:
        logger.info(
            "already at generation %d of %d: nothing to do", run.generation, cfg.generations
        )
    bar = tqdm(total=cfg.generations, initial=first - 1, desc="control generation",
               disable=not progress, dynamic_ncols=True)  # fmt: skip
    heldout: dict[str, float] | None = None
    generation = run.generation
    for generation in range(first, cfg.generations + 1):
        tick = time.monotonic()
        fitness = run.generation_step(generation)
        rate = fitness[steps_name] / max(1e-9, time.monotonic() - tick)
        out_of_time = (
            cfg.time_limit_min is not None
            and (time.monotonic() - started) / 60 >= cfg.time_limit_min
        )
        record = {"generation": generation, **fitness}
        if generation % cfg.eval_every == 0 or generation == cfg.generations or out_of_time:
            heldout = run.evaluate_heldout()
            record.update({f"heldout_{k}": v for k, v in heldout.items()})
            run.history.append(record)
            run.save(generation, heldout, fitness, run.elapsed_before + time.monotonic() - started)
        else:
            run.history.append(record)
        bar.update(1)
        bar.set_postfix(
            fitness=f"{fitness['fitness_mean']:.0f}/{fitness['fitness_max']:.0f}",
            heldout_return=f"{heldout['return_mean']:.0f}" if heldout else "-",
            best=f"{run.best:.0f}" if run.best > -math.inf else "-",
            **{f"{steps_name}_per_s": f"{rate:.0f}"},
        )
        logger.debug("generation %d: %s", generation, record)
        if out_of_time:
            logger.info(
                "time limit of %.1f min reached after generation %d", cfg.time_limit_min, generation
            )
            break
    bar.close()
    return {
        "generation": generation,
        "best_heldout_return": run.best,
        "best_model": checkpoint.best_model_dir(cfg.out, "control"),
        "dream_steps": run.dream_steps,
        "real_steps": run.real_steps,
        "history": run.history,
    }


def model_card(info: dict[str, Any], config: ControlConfig) -> str:
    """The control checkpoint's ``README.md``."""
    world = info[WORLD_INFO_KEY]
    m = info["metrics"]
    lines = [
        f"# Control agent: generation {info['generation']}",
        "",
        f"Method: {info['method']}; trained only inside the dream (no real-game steps).",
        f"Actions: {' / '.join(config.choices)}; {config.num_params} parameters; "
        f"{info['dream_steps']} dream steps in {info['elapsed_s'] / 60:.1f} min.",
        "",
        "| held-out dream metric | value |",
        "|---|---|",
        f"| return (reward head summed until the dream ended) | {m['heldout_return_mean']:.1f} +/- {m['heldout_return_std']:.1f} |",
        f"| episode length (steps, capped at {info['dream']['max_steps']}) | {m['heldout_length_mean']:.1f} |",
        f"| expected return (rewards x chance still alive) | {m['heldout_expected_return_mean']:.1f} |",
        f"| share ended by the world (not the step cap) | {m['heldout_terminated_share']:.2f} |",
        "",
        "## The world it was trained in (loading refuses any other)",
        "",
        f"- vision: `{world['vision']}` (fingerprint `{world['vision_fingerprint'][:16]}`)",
        f"- memory: `{world['memory']}` (fingerprint `{world['memory_fingerprint'][:16]}`)",
        (
            f"- episode ends: the episode-end model `{world['end']}` (fingerprint "
            f"`{str(world.get('end_fingerprint'))[:16]}`; not checked at loading)"
            if world.get("end")
            else "- episode ends: the memory model's end head"
        ),
        f"- scenario: {world['scenario']}, frame skip: {world['frame_skip']}",
        f"- start frames: `{info['start_frames']}` ({len(info['start_bank']['heldout'])} of "
        f"{info['start_bank']['frames']} held out for evaluation)",
        "",
        f"Command: `{info['command']}`",
        "",
        "## Loading",
        "",
        "```python",
        "from elworld.control import Agent",
        "",
        'agent = Agent.from_checkpoint("path/to/this/folder", checkpoints="<the world\'s root>")',
        "agent.reset()",
        "action = agent.act(frame)  # uint8 RGB frame of any size -> (22,) uint8",
        "```",
        "",
        "Score it in the real game: `elworld eval control --agent path/to/this/folder`.",
        "",
        "## Configuration",
        "",
        "| field | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in asdict(config).items()],
        "",
    ]
    return "\n".join(lines)
