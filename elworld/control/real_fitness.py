"""``elworld train control --real doom:SCENARIO``: the same CMA-ES, its fitness from the real game.

The policy-class ceiling (issue 18): the dream-trained agent's policy
(``ControlPolicy``: the same features, fitted on the world's start-bank tokens
as in the dream run, the same ``--hold``), trained by the same CMA-ES, but
every candidate plays real ViZDoom episodes (``DoomEnv``, at the world's frame
skip, as ``elworld eval control`` plays them) instead of dreams. Its real score
says how much of the gap between a dream-trained agent and the target is the
dream, and how much the policy class and its features.

Seeds (never the validation or held-out seeds of the evaluations):

- training: generation ``g`` (from 1), rollout ``r`` plays game seed
  ``real_seed + (g - 1) * rollouts + r`` (default base 300000), the same seeds
  for every candidate of the generation; fitness = mean return (take_cover:
  tics survived) over the ``rollouts`` episodes. The range must stay below
  ``VALIDATION_SEED`` (600000).
- validation: every ``eval_every`` generations the CMA-ES mean plays seeds
  ``600000 .. 600000 + eval_episodes - 1``; their mean return picks
  ``OUT/control/best_model``. ``elworld eval control --seed 600000`` plays the
  same episodes, so its agent row repeats that number.

Games run in lockstep: ``real_games`` ``DoomEnv`` s step together and the
frames of all running games go through the vision encoder in one call. Every
real step (and game tic) is counted, in ``training_info.json`` and the model
card, since the dream's promise is fewer real steps for the same score.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from elworld import checkpoint
from elworld.control.cmaes_state import ask_population
from elworld.control.rollout import CandidatesPolicy, agent_policy
from elworld.control.train import ControlTrainConfig, _Run
from elworld.frames import frames_to_tensor, resize_frames
from elworld.model.policy import ControlConfig
from elworld.model.vision import VisionModel
from elworld.record.doom import DoomEnv

logger = logging.getLogger(__name__)

TRAIN_SEED_BASE = 300_000  # default first training seed
VALIDATION_SEED = 600_000  # validation episodes: 600000-600099
VALIDATION_EPISODES = 100
HELDOUT_SEED = 750_000  # held-out seeds of final scores: 750000 and up, never trained on


def real_scenario(real: str, recorded: str | None) -> str:
    """The ViZDoom scenario of ``--real doom:SCENARIO`` (``ValueError`` naming the flag if malformed)."""
    game, _, scenario = str(real).partition(":")
    if game != "doom" or not scenario:
        raise ValueError(f"--real must look like doom:SCENARIO (ViZDoom), got {real!r}")
    if recorded is not None and scenario != recorded:
        logger.warning("--real %s: the world was recorded in %s", real, recorded)
    return scenario


def training_seeds(base: int, generation: int, rollouts: int) -> list[int]:
    """Game seeds of generation ``generation`` (from 1): ``rollouts`` consecutive seeds."""
    first = base + (generation - 1) * rollouts
    return list(range(first, first + rollouts))


def validation_seeds(episodes: int) -> list[int]:
    """Game seeds of the validation episodes that choose the best model."""
    return list(range(VALIDATION_SEED, VALIDATION_SEED + episodes))


def check_real_config(cfg: ControlTrainConfig) -> None:
    """Raise ``ValueError`` naming the flag when a real-fitness setting is out of range."""
    if cfg.memory_state:
        raise ValueError(
            "--memory-state with --real: the real-game trainer plays candidates on real tokens "
            "without the episode-end model, so a policy that reads its state is dream-only here"
        )
    for name, flag in (("eval_episodes", "--eval-episodes"), ("real_games", "--real-games")):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{flag} must be a positive int, got {value!r}")
    if cfg.eval_episodes > VALIDATION_EPISODES:
        raise ValueError(
            f"--eval-episodes {cfg.eval_episodes}: the validation seeds are {VALIDATION_SEED}-"
            f"{VALIDATION_SEED + VALIDATION_EPISODES - 1}, at most {VALIDATION_EPISODES} episodes"
        )
    last = cfg.real_seed + cfg.generations * cfg.rollouts - 1
    if isinstance(cfg.real_seed, bool) or not isinstance(cfg.real_seed, int) or cfg.real_seed < 0:
        raise ValueError(f"--real-seed must be an int >= 0, got {cfg.real_seed!r}")
    if last >= VALIDATION_SEED:
        raise ValueError(
            f"--real-seed {cfg.real_seed}: {cfg.generations} generations x {cfg.rollouts} rollouts "
            f"train on seeds up to {last}, into the validation ({VALIDATION_SEED}+) and held-out "
            f"({HELDOUT_SEED}+) seeds; lower --real-seed or --generations"
        )


@dataclass
class RealResult:
    """Per-episode outcomes of :meth:`RealGames.play`, each ``(n,)``, and what they cost."""

    returns: np.ndarray  # the game's reward summed (take_cover: tics survived)
    lengths: np.ndarray  # steps played (int)
    terminated: np.ndarray  # bool: the player died (else timeout or the step cap)
    steps: int  # real steps played, all episodes
    tics: int  # game tics elapsed, all episodes (ViZDoom's episode time)


class RealGames:
    """A pool of real games stepped in lockstep, one vision encode per step for all that run.

    Args:
        scenario: the ViZDoom scenario (``DoomEnv``).
        frame_skip: game tics per step, the world's.
        vision: the world's vision model (tokens are what the policy reads).
        games: how many games step together (and are kept open between calls).
    """

    def __init__(self, scenario: str, frame_skip: int, vision: VisionModel, games: int) -> None:
        if games < 1:
            raise ValueError(f"games must be >= 1, got {games}")
        self.vision = vision.eval()
        self.device = next(vision.parameters()).device
        self.envs = [DoomEnv(scenario, frame_skip=frame_skip) for _ in range(games)]
        self._closer = weakref.finalize(self, _close_all, list(self.envs))  # runs once

    @torch.inference_mode()
    def tokens(self, frames: np.ndarray) -> torch.Tensor:
        """Token grids ``(m, gh, gw)`` of uint8 frames ``(m, H, W, 3)``, as ``Agent.tokens`` makes them."""
        c = self.vision.config
        frames = resize_frames(frames, c.image_height, c.image_width)  # (m, h, w, 3)
        return self.vision.encode(frames_to_tensor(frames, device=self.device))  # (m, gh, gw)

    @torch.inference_mode()
    def play(
        self,
        make_policy: Callable[[int, int], CandidatesPolicy],
        seeds: Sequence[int],
        *,
        max_steps: int,
        on_step: Callable[[int], None] | None = None,
    ) -> RealResult:
        """Play episode ``i`` with game seed ``seeds[i]`` until it ends or ``max_steps``.

        Episodes go in chunks of the pool's size; ``make_policy(n, offset)``
        plays episodes ``offset..offset+n-1`` (a fresh policy state per chunk, as
        ``Agent.reset`` gives every real episode). ``on_step(m)`` after each
        lockstep step of ``m`` games.
        """
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        n = len(seeds)
        returns, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
        terminated = np.zeros(n, dtype=bool)
        tics = 0
        for low in range(0, n, len(self.envs)):
            chunk = list(range(low, min(n, low + len(self.envs))))
            policy = make_policy(len(chunk), low)
            policy.reset(len(chunk), 0)
            envs = {i: self.envs[i - low] for i in chunk}
            frames = {i: envs[i].reset(seed=int(seeds[i]))[0] for i in chunk}
            start = {i: int(envs[i].game.get_episode_time()) for i in chunk}  # tic count at reset
            running = chunk
            while running:
                tokens = self.tokens(np.stack([frames[i] for i in running]))  # (m, gh, gw)
                actions = policy.act(tokens[:, None], np.asarray(running) - low)  # (m, 22)
                still = []
                for i, action in zip(running, actions):
                    frame, reward, died, timeout, _ = envs[i].step(action)
                    returns[i] += reward
                    lengths[i] += 1
                    if died or timeout or lengths[i] >= max_steps:
                        terminated[i] = died
                        tics += int(envs[i].game.get_episode_time()) - start[i]
                    else:
                        frames[i] = frame
                        still.append(i)
                if on_step is not None:
                    on_step(len(running))
                running = still
        return RealResult(returns, lengths, terminated, int(lengths.sum()), tics)

    def close(self) -> None:
        """Shut every game down."""
        self._closer()


def _close_all(envs: list[DoomEnv]) -> None:
    for env in envs:
        env.close()


class RealRun(_Run):
    """``_Run`` with its fitness and validation from real games (see the module docstring).

    The policy, its features (fitted on the world's start-bank tokens), CMA-ES,
    checkpoints and ``--resume`` are ``_Run``'s; only the episodes change.
    """

    def __init__(self, cfg: ControlTrainConfig) -> None:
        if cfg.real is None:
            raise ValueError("RealRun needs cfg.real, e.g. 'doom:take_cover'")
        check_real_config(cfg)
        super().__init__(cfg)
        self.scenario = real_scenario(cfg.real, self.world_info.scenario)
        if self.world_info.frame_skip is None:
            raise ValueError(
                f"--real: the memory checkpoint {self.world_info.memory} does not record its "
                "recordings' frame skip (training_info.json 'recordings'), which the real game "
                "must match"
            )
        self.frame_skip = self.world_info.frame_skip
        self.real_steps, self.real_tics, self.real_episodes = 0, 0, 0
        if cfg.resume:
            path = self._resume_checkpoint()
            real = checkpoint.load_training_state(path)["trainer_state"].get("real")
            if not isinstance(real, dict):
                raise checkpoint.CheckpointError(
                    f"--resume --real: {path} was trained in the dream, not "
                    "with real-game fitness; use another --out"
                )
            self.real_steps, self.real_tics = int(real["steps"]), int(real["tics"])
            self.real_episodes = int(real["episodes"])
        self.games = RealGames(
            self.scenario, self.frame_skip, self.world.vision,
            min(cfg.real_games, self.cma.population_size * cfg.rollouts),
        )  # fmt: skip
        logger.info(
            "fitness from the real game, not the dream: doom:%s at frame skip %d, %d candidates x "
            "%d real episodes per generation, %d games in lockstep; training seeds from %d, "
            "validation seeds %d-%d",
            self.scenario, self.frame_skip, self.cma.population_size, cfg.rollouts,
            len(self.games.envs), cfg.real_seed, VALIDATION_SEED, VALIDATION_SEED + cfg.eval_episodes - 1,
        )  # fmt: skip

    def _count(self, result: RealResult) -> None:
        self.real_steps += result.steps
        self.real_tics += result.tics
        self.real_episodes += len(result.lengths)

    def generation_step(self, generation: int) -> dict[str, float]:
        """Ask, play every candidate on the generation's ``rollouts`` real seeds, tell."""
        cfg = self.cfg
        candidates = ask_population(self.cma, cfg.seed, generation)  # (P, n)
        seeds = training_seeds(cfg.real_seed, generation, cfg.rollouts)
        params = np.repeat(candidates, cfg.rollouts, axis=0)  # (P * R, n): episode c*R + r
        result = self.games.play(
            lambda n, low: CandidatesPolicy(self.policy, params[low : low + n]),
            seeds * len(candidates), max_steps=self.max_steps,
        )  # fmt: skip
        self._count(result)
        fitness = result.returns.reshape(len(candidates), cfg.rollouts).mean(axis=1)
        self.cma.tell([(x, -float(f)) for x, f in zip(candidates, fitness)])  # cmaes minimises
        return {
            "fitness_mean": float(fitness.mean()),
            "fitness_max": float(fitness.max()),
            "dream_steps": 0,
            "real_steps": result.steps,
        }

    def evaluate_heldout(self) -> dict[str, float]:
        """The CMA-ES mean on the validation seeds (600000 + i)."""
        self.policy.set_flat(self.cma.mean)
        result = self.games.play(
            lambda n, low: agent_policy(self.policy, n),
            validation_seeds(self.cfg.eval_episodes), max_steps=self.max_steps,
        )  # fmt: skip
        self._count(result)
        return {
            "return_mean": float(result.returns.mean()),
            "return_std": float(result.returns.std()),
            "length_mean": float(result.lengths.mean()),
            "terminated_share": float(result.terminated.mean()),
        }

    def _extra_state(self) -> dict[str, Any]:
        return {"real": {"steps": self.real_steps, "tics": self.real_tics,
                         "episodes": self.real_episodes}}  # fmt: skip

    def _training_info(
        self, generation: int, heldout: dict[str, float], fitness: dict[str, float], elapsed: float
    ) -> dict[str, Any]:
        info = super()._training_info(generation, heldout, fitness, elapsed)
        info.pop("dream")
        info["metrics"].pop("train_real_steps", None)
        info["method"] += ", fitness from real games (the policy-class ceiling)"
        info["real"] = {
            "env": f"doom:{self.scenario}",
            "frame_skip": self.frame_skip,
            "max_steps": self.max_steps,
            "games_in_lockstep": len(self.games.envs),
            "training_seeds": f"{self.cfg.real_seed}-"
            f"{self.cfg.real_seed + generation * self.cfg.rollouts - 1} "
            f"(generation g, rollout r: {self.cfg.real_seed} + (g - 1) x {self.cfg.rollouts} + r)",
            "validation_seeds": f"{VALIDATION_SEED}-{VALIDATION_SEED + self.cfg.eval_episodes - 1}",
        }
        info["real_steps"] = self.real_steps
        info["real_tics"] = self.real_tics
        info["real_episodes"] = self.real_episodes
        return info

    def _card(self, info: dict[str, Any]) -> str:
        return real_model_card(info, self.policy.config)


def real_model_card(info: dict[str, Any], config: ControlConfig) -> str:
    """The ``README.md`` of a control checkpoint trained with real-game fitness."""
    world, real, m = info["world"], info["real"], info["metrics"]
    hours = info["real_tics"] / 35 / 3600
    lines = [
        f"# Control agent (real-game fitness): generation {info['generation']}",
        "",
        f"Method: {info['method']}. No dream was played: every candidate played real "
        f"{real['env']} episodes at frame skip {real['frame_skip']}.",
        f"Actions: {' / '.join(config.choices)}; {config.num_params} parameters; "
        f"CMA-ES population {info['cma']['population']}.",
        "",
        "| real-game cost | value |",
        "|---|---|",
        f"| real steps | {info['real_steps']:,} |",
        f"| game tics ({hours:.1f} h of game time at 35 tics/s) | {info['real_tics']:,} |",
        f"| real episodes (training and validation) | {info['real_episodes']:,} |",
        f"| wall time | {info['elapsed_s'] / 60:.1f} min |",
        "",
        f"| validation metric ({real['validation_seeds']}, capped at {real['max_steps']} steps) | value |",
        "|---|---|",
        f"| return (tics survived in take_cover) | {m['heldout_return_mean']:.1f} +/- {m['heldout_return_std']:.1f} |",
        f"| episode length (steps) | {m['heldout_length_mean']:.1f} |",
        f"| share ended by death | {m['heldout_terminated_share']:.2f} |",
        "",
        f"Training seeds: {real['training_seeds']}.",
        "",
        "## The world whose vision it reads (loading refuses any other)",
        "",
        f"- vision: `{world['vision']}` (fingerprint `{world['vision_fingerprint'][:16]}`)",
        f"- memory: `{world['memory']}` (fingerprint `{world['memory_fingerprint'][:16]}`; not used "
        "in training, checked at loading like any control agent's)",
        f"- features fitted on the start frames `{info['start_frames']}`",
        "",
        f"Command: `{info['command']}`",
        "",
        "Score it: `elworld eval control --agent path/to/this/folder --checkpoints <the world's root> "
        "--seed 750000` (held-out seeds; `--seed 600000` repeats the validation episodes).",
        "",
        "## Configuration",
        "",
        "| field | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in asdict(config).items()],
        "",
    ]
    return "\n".join(lines)
