"""``elworld eval control``: a dream-trained agent in the real game, next to fixed baselines.

In one run, with the same game seeds for every policy (episode ``i`` uses
``seed + i``):

- the real game: the agent and six fixed policies: no key, always the first
  key, always the second (take_cover: left, right), uniformly random keys,
  sticky random keys (``elworld.record.collect``'s policies over the
  scenario's keys) and 8 steps of each key in turn; return = the game's reward
  summed (take_cover: tics survived), length = steps;
- the dream: the same policies, each started from the first real frames
  of the first ``dream_episodes`` real episodes, ended as the dream env ends
  them (drawn from the world's episode-end model, else the memory model's end
  head); return = the reward head summed.

Both are capped at ``max_steps`` (World Models' 2100 tics by default). The
report says whether the dream ranks the policies by mean episode length in the
same order as the real game (Kendall's tau, Spearman's rho), the check World
Models' dream-vs-real table makes, and whether every policy's dream length is
within 25% of its real one: the dream as a judge of policies.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from elworld.atomic import atomic_write
from elworld.control.agent import Agent
from elworld.control.rollout import (
    NoKeyPolicy,
    ScriptedPolicy,
    agent_policy,
    dream_rollouts,
    still_stacks,
)
from elworld.policy import FIXED_POLICIES, NoKeysPolicy, Policy, fixed_policy
from elworld.record.collect import make_policy
from elworld.world.dream import DreamWorld

logger = logging.getLogger(__name__)

# The dream as a judge: fixed policies whose real and dream lengths are compared.
# "left" / "right" hold the world's first / second key, "alternate" 8 steps of each in turn.
BASELINES = ("none", "left", "right", "random", "sticky", "alternate")
POLICIES = ("agent", *BASELINES)
assert set(FIXED_POLICIES) <= set(BASELINES)
LENGTH_TOLERANCE = 0.25  # a dream length within 25% of the real one counts as right
SPEARMAN_TARGET = 0.8
# World Models (Ha & Schmidhuber 2018), ViZDoom take_cover, 100 real episodes, return in tics.
WORLD_MODELS_REFERENCE = (
    "World Models: agent 1092 +/- 556, random 210 +/- 108, solved at 750 (tics)"
)


@dataclass
class DreamSettings:
    """How the dream half of the evaluation runs."""

    episodes: int = 16
    temperature: float = 1.0
    sampling_steps: int = 1
    guidance: float | None = None  # None: the memory checkpoint's recommended scale
    precision: str = "auto"  # bf16 where native, else fp32 (model.common.choose_precision)
    device: str | torch.device = "cpu"


class _AgentPlayer:
    """An agent as an ``elworld.policy.Policy`` in the real game."""

    name = "agent"

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def reset(self, seed: int | None = None) -> None:
        self.agent.reset()

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self.agent.act(frame)


def _player(name: str, agent: Agent | None, keys: Sequence[int]) -> Policy:
    if name == "agent":
        if agent is None:
            raise ValueError("the agent policy needs an agent")
        return _AgentPlayer(agent)
    if name == "none":
        return NoKeysPolicy()
    if name in FIXED_POLICIES:
        return fixed_policy(name, list(keys))
    return make_policy(name, keys)


def stats(returns: Sequence[float], lengths: Sequence[int], max_steps: int) -> dict[str, Any]:
    """Mean +/- std of returns and lengths, and how many episodes hit the cap."""
    r, n = np.asarray(returns, dtype=np.float64), np.asarray(lengths, dtype=np.int64)
    return {
        "episodes": int(len(r)),
        "return_mean": float(r.mean()),
        "return_std": float(r.std()),
        "length_mean": float(n.mean()),
        "length_std": float(n.std()),
        "capped": int((n >= max_steps).sum()),
        "returns": r.round(3).tolist(),
        "lengths": n.tolist(),
    }


def play_real(
    make_env: Callable[[], gym.Env],
    policies: Sequence[str],
    *,
    agent: Agent | None,
    keys: Sequence[int],
    episodes: int,
    seed: int,
    max_steps: int,
    progress: bool = True,
) -> tuple[dict[str, dict[str, Any]], list[np.ndarray]]:
    """Play each policy for ``episodes`` real episodes (seeds ``seed + i``).

    Returns per-policy :func:`stats` and the first frame of every episode.
    """
    env = make_env()
    results: dict[str, dict[str, Any]] = {}
    first_frames: list[np.ndarray] = []
    try:
        for name in policies:
            player = _player(name, agent, keys)
            returns, lengths = [], []
            for i in tqdm(range(episodes), desc=f"real {name}", disable=not progress, leave=False):
                frame, _ = env.reset(seed=seed + i)
                if len(first_frames) < episodes:
                    first_frames.append(np.array(frame, copy=True))
                player.reset(seed + i)
                total, steps, done = 0.0, 0, False
                while not done and steps < max_steps:
                    frame, reward, terminated, truncated, _ = env.step(player(frame))
                    total += float(reward)
                    steps += 1
                    done = terminated or truncated
                returns.append(total)
                lengths.append(steps)
            results[name] = stats(returns, lengths, max_steps)
            logger.info(
                "real %s: return %.1f +/- %.1f, length %.1f steps",
                name, results[name]["return_mean"], results[name]["return_std"], results[name]["length_mean"],
            )  # fmt: skip
    finally:
        env.close()
    return results, first_frames


def play_dream(
    agent: Agent | None,
    policies: Sequence[str],
    first_frames: Sequence[np.ndarray],
    *,
    keys: Sequence[int],
    settings: DreamSettings,
    seed: int,
    max_steps: int,
    vision: str | Path,
    memory: str | Path,
    end: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Play each policy in ``settings.episodes`` dreams started from ``first_frames``.

    Each policy gets its own batch with the same sampling seed, so a baseline's
    dream scores do not depend on which agent (or which other policies) ran.
    """
    frames = np.stack(list(first_frames)[: settings.episodes])  # (D, H, W, 3)
    d = len(frames)
    world = DreamWorld.from_checkpoints(
        None, vision=vision, memory=memory, start_observations=frames, num_envs=d,
        device=settings.device, temperature=settings.temperature,
        sampling_steps=settings.sampling_steps, guidance=settings.guidance,
        precision=settings.precision, end_model=end if end is not None else False,
    )  # fmt: skip
    out = {}
    for name in policies:
        if name == "agent":
            if agent is None:
                raise ValueError("the agent policy needs an agent")
            player = agent_policy(agent.policy.to(world.device), d, world)
        else:
            player = NoKeyPolicy() if name == "none" else ScriptedPolicy(name, keys)
        bar = tqdm(
            desc=f"dream {name}", unit="step", leave=False, mininterval=2.0,
            disable=not logger.isEnabledFor(logging.INFO),
        )  # fmt: skip
        result = dream_rollouts(
            world,
            still_stacks(world, world.bank),
            player,
            max_steps=max_steps,
            seed=seed,
            on_step=bar.update,
        )
        bar.close()
        out[name] = stats(result.returns, result.lengths, max_steps)
        out[name]["terminated"] = int(result.terminated.sum())
        logger.info(
            "dream %s: return %.1f +/- %.1f, length %.1f steps",
            name, out[name]["return_mean"], out[name]["return_std"], out[name]["length_mean"],
        )  # fmt: skip
    return out


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-a between two score lists (1: same order, -1: reversed)."""
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))]
    if not pairs:
        return 1.0
    score = sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in pairs)
    return float(score / len(pairs))


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of ``values`` (ties share their mean rank), as Spearman's rho needs."""
    values = np.asarray(values, dtype=np.float64)
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of two score lists (nan when either is constant)."""
    if len(a) != len(b):
        raise ValueError(f"spearman needs two lists of one length, got {len(a)} and {len(b)}")
    ra, rb = average_ranks(a), average_ranks(b)
    if len(a) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def ranking(results: dict[str, dict[str, Any]]) -> list[str]:
    """Policies by mean episode length, longest first."""
    return sorted(results, key=lambda name: -results[name]["length_mean"])


def build_report(
    real: dict[str, dict[str, Any]], dream: dict[str, dict[str, Any]] | None, facts: dict[str, Any]
) -> dict[str, Any]:
    """The JSON report: facts, per-policy real and dream stats, and the ranking comparison."""
    report: dict[str, Any] = {**facts, "real": real, "dream": dream}
    if dream:
        names = [name for name in real if name in dream]
        tau = kendall_tau(
            [real[n]["length_mean"] for n in names], [dream[n]["length_mean"] for n in names]
        )
        rho = spearman(
            [real[n]["length_mean"] for n in names], [dream[n]["length_mean"] for n in names]
        )
        real_order = ranking({n: real[n] for n in names})
        dream_order = ranking({n: dream[n] for n in names})
        report["ranking"] = {
            "by": "mean episode length",
            "real": real_order,
            "dream": dream_order,
            "same_order": real_order == dream_order,
            "kendall_tau": tau,
            "spearman": rho,
            "spearman_target": SPEARMAN_TARGET,
            "spearman_met": bool(rho >= SPEARMAN_TARGET),
        }
        # The dream as a judge: its length within 25% of the real game's, per policy.
        ratios = {n: dream[n]["length_mean"] / max(real[n]["length_mean"], 1e-9) for n in names}
        report["length_ratio"] = ratios
        report["lengths_within_25pct"] = {
            n: bool(abs(r - 1) <= LENGTH_TOLERANCE) for n, r in ratios.items()
        }
        # How far off the lengths are as one figure: the geometric mean of each policy's
        # factor max(r, 1 / r) (1.0 = every length right; 2.0 = off by 2x on average).
        report["length_factor_off"] = float(
            math.exp(np.mean([abs(math.log(max(r, 1e-9))) for r in ratios.values()]))
        )
        report["judge_met"] = bool(
            all(report["lengths_within_25pct"].values()) and report["ranking"]["spearman_met"]
        )
    return report


def _pm(entry: dict[str, Any], key: str) -> str:
    return f"{entry[f'{key}_mean']:.1f} +/- {entry[f'{key}_std']:.1f}"


def markdown_report(report: dict[str, Any]) -> str:
    """The report as markdown: one table, real beside dream, and the ranking check."""
    real, dream = report["real"], report.get("dream") or {}
    lines = [
        f"# Control agent: real game vs dream ({report['real_env']})",
        "",
        (f"Agent: `{report['agent']}`." if report.get("agent") else "No agent (fixed policies only).")
        + f" Real: {report['episodes']} episodes per policy (seeds "
        f"{report['seed']}..{report['seed'] + report['episodes'] - 1}, the same for every policy), "
        f"frame skip {report['frame_skip']}; dream: "
        + (f"{report['dream_episodes']} episodes per policy from the same first frames, ended by "
           + ("draws from the episode-end model" if report.get("world", {}).get("end") else "the end head")
           if dream else "not run")
        + f". Every episode is capped at {report['max_steps']} steps "
        f"({report['max_steps'] * report['frame_skip']} tics). Return = reward summed (take_cover: tics survived; "
        "in the dream the reward head's).",
        "",
        "| policy | real return | real length (steps) | capped | dream return | dream length (steps) | capped | dream / real length |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, entry in real.items():
        other = dream.get(name)
        ratio = report.get("length_ratio", {}).get(name)
        dream_cells = (
            f"{_pm(other, 'return')} | {_pm(other, 'length')} | {other['capped']} | {ratio:.2f}"
            if other and ratio is not None
            else "- | - | - | -"
        )
        lines.append(
            f"| {name} | {_pm(entry, 'return')} | {_pm(entry, 'length')} | {entry['capped']} | {dream_cells} |"
        )
    lines.append("")
    if "ranking" in report:
        r = report["ranking"]
        lines += [
            f"Ranking by mean episode length: real {' > '.join(r['real'])}; dream {' > '.join(r['dream'])}: "
            + ("the same order" if r["same_order"] else "a different order")
            + f" (Kendall tau {r['kendall_tau']:.2f}, Spearman {r['spearman']:.2f}; "
            f"target >= {r['spearman_target']}).",
            "",
            f"The dream as a judge: {sum(report['lengths_within_25pct'].values())} of "
            f"{len(report['lengths_within_25pct'])} policies' dream lengths within "
            f"{LENGTH_TOLERANCE:.0%} of the real ones"
            + (", and Spearman met: met." if report["judge_met"] else ": not met.")
            + f" On average (geometric) a dream length is off by a factor of "
            f"{report['length_factor_off']:.2f}.",
            "",
        ]
    if str(report.get("real_env", "")).partition(":")[2] == "take_cover":  # its reference only
        lines += [f"Reference: {WORLD_MODELS_REFERENCE}.", ""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path) -> None:
    """Write ``eval.json`` and ``eval.md`` to ``out`` (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, default=str) + "\n"
    atomic_write(out / "eval.json", lambda handle: handle.write(text.encode()))
    atomic_write(out / "eval.md", lambda handle: handle.write(markdown_report(report).encode()))
