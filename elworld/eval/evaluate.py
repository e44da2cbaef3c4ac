"""``elworld eval``: how good is a world model, measured on held-out episodes.

Reports, as JSON, a markdown table and a PNG plot of PSNR against horizon:

- vision: reconstruction PSNR and SSIM, codebook usage;
- memory: teacher-forced next-token accuracy and 1-step PSNR of the decoded
  prediction; open-loop rollout PSNR at several horizons driven by the
  recorded actions, beside the copy-last-frame baseline (a model that cannot
  beat "nothing moves" has learned nothing) and the vision model's own
  reconstruction of the same frames (the ceiling any dream frame can reach);
- controllability: rollout PSNR with the true actions minus PSNR with random
  actions at horizon 4 (Genie's delta-PSNR). Random actions are drawn from the
  empirical distribution of actions in the evaluated episodes, so they stay
  in the model's input distribution;
- reward / episode-end heads when present: precision and recall (a reward
  "event" is ``|r| > reward_threshold``), and the reward MSE;
- with an inverse-dynamics model (``elworld.model.idm``, trained on real training
  episodes): a controllability score blur cannot fool, the IDM's macro-F1 over
  the keys it names (see ``evaluate``).

PSNR is per frame on uint8 RGB, capped at 50 dB so identical frames cannot
swamp a mean, then averaged over frames.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from elworld.data import iter_frames, read_labels
from elworld.eval.idm_scores import IDMScorer, idm_starts
from elworld.eval.metrics import Stats, precision_recall, psnr, ssim
from elworld.frames import frames_to_tensor, tensor_to_frames
from elworld.keys import KEY_NAMES
from elworld.model.common import autocast
from elworld.model.end import EndModel
from elworld.model.idm import (
    InverseDynamicsModel,
    check_frame_skip,
    effective_keys,
    labels_text,
    opposing_pairs,
)
from elworld.train.end import EndEpisode, end_scores
from elworld.world.dream import sample_next
from elworld.world.settings import SamplingSettings

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """What ``evaluate`` measures and how much of the data it uses."""

    horizons: tuple[int, ...] = (1, 4, 16, 32)
    control_horizon: int = 4
    start_stride: int = 8  # frames between open-loop start points in an episode
    max_episodes: int | None = None
    batch_size: int = 16
    temperature: float = 0.0  # 0: argmax decoding (deterministic)
    top_k: int | None = None
    sampling_steps: int = 1
    guidance: float = 1.0  # classifier-free guidance scale on the keys (1 = off)
    precision: str = "auto"  # the memory model's passes, as the dream env: auto, bf16 or fp32
    reward_threshold: float = 0.5
    seed: int = 0
    idm_horizon: int = 16  # dream steps per start that the IDM scores
    # The dream env's default temperature: the action effect lives in the sampled dream.
    idm_temperature: float = 1.0


def _encode(
    vision: torch.nn.Module, frames: np.ndarray, batch: int, device: torch.device
) -> torch.Tensor:
    chunks = [
        vision.encode(frames_to_tensor(frames[i : i + batch], device=device))
        for i in range(0, len(frames), batch)
    ]
    return torch.cat(chunks).flatten(1)  # (N, gh*gw)


def _decode(
    vision: torch.nn.Module, tokens: torch.Tensor, grid: tuple[int, int], batch: int
) -> np.ndarray:
    out = [
        tensor_to_frames(vision.decode(tokens[i : i + batch].view(-1, *grid)))
        for i in range(0, len(tokens), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0,), np.uint8)


def _contexts(tokens: torch.Tensor, steps: np.ndarray, k: int) -> torch.Tensor:
    """Context ``(len(steps), k, T)`` ending at each step, frame 0 repeated before the start."""
    index = (steps[:, None] + np.arange(-k + 1, 1)[None, :]).clip(min=0)  # (S, k)
    return tokens[torch.from_numpy(index)]


def _rollout(
    memory: torch.nn.Module,
    context: torch.Tensor,
    actions: torch.Tensor,
    config: EvalConfig,
    temperature: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Dream ``H`` steps from real ``context (S, k, T)`` driven by ``actions (S, H, 22)``: tokens ``(S, H, T)``.

    Each step is the dream's own (``world.dream.sample_next``), one memory pass over the S starts.
    """
    settings = SamplingSettings(
        temperature=temperature, top_k=config.top_k, sampling_steps=config.sampling_steps,
        guidance=config.guidance, precision=config.precision,
    )  # fmt: skip
    ctx, dream = context, []
    for h in range(actions.shape[1]):
        sample = sample_next(memory, ctx, actions[:, h], settings, generator)
        ctx = torch.cat([ctx[:, 1:], sample.tokens[:, None]], dim=1)
        dream.append(sample.tokens)
    return torch.stack(dream, dim=1)


@dataclass
class _Run:
    """What every episode of one evaluation shares: models, settings, draws and tallies."""

    vision: torch.nn.Module
    memory: torch.nn.Module | None
    config: EvalConfig
    device: torch.device
    all_actions: np.ndarray  # (M, 22) float32: every evaluated step's keys (random-key draws)
    generator: torch.Generator
    rng: np.random.Generator
    stats: Stats = field(default_factory=Stats)
    heads: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {"end_pred": [], "end_true": [], "rew_pred": [], "rew_true": []}
    )

    @property
    def grid(self) -> tuple[int, int]:
        return self.vision.config.grid_height, self.vision.config.grid_width

    def decode(self, tokens: torch.Tensor) -> np.ndarray:
        return _decode(self.vision, tokens, self.grid, self.config.batch_size)


@dataclass
class _Episode:
    """One evaluated episode: its real frames and labels, their tokens and reconstruction."""

    index: int
    frames: np.ndarray  # (N, H, W, 3) uint8
    labels: dict[str, np.ndarray]
    tokens: torch.Tensor  # (N, T)
    recon: np.ndarray  # (N, H, W, 3) uint8
    actions: torch.Tensor  # (N, 22) float32 on the device


@dataclass
class _IDMRun:
    """The IDM's share of an evaluation: its scorer, seeded draws and every start's keys."""

    scorer: IDMScorer
    pressed: list[str]
    generator: torch.Generator
    rng: np.random.Generator
    bank: list[tuple[int, int]]  # (episode, t0) of every IDM dream start
    bank_index: dict[tuple[int, int], int]


@torch.inference_mode()
def evaluate(
    vision: torch.nn.Module,
    memory: torch.nn.Module | None,
    episodes: list[Path],
    config: EvalConfig,
    device: torch.device | str = "cpu",
    idm: InverseDynamicsModel | None = None,
    end_model: EndModel | None = None,
) -> dict[str, Any]:
    """Measure a vision model (and a memory model, if given) on recorded episodes.

    With an episode-end model, ``results["end_model"]`` holds
    ``elworld.train.end.end_scores`` on the episodes (NLL against the best
    constant hazard, hazard at real ends vs elsewhere, ends expected vs real).

    With an inverse-dynamics model ``idm`` (trained on real training episodes),
    ``results["memory"]["idm"]`` holds its macro-F1 (and per-key F1) over the
    keys it scores that the episodes press, on windows of frames ``t - before ..
    t + after`` labelled with the EFFECTIVE keys of step ``t``
    (``elworld.model.idm.effective_keys`` of ``act[t]``): opposing keys held together
    (left+right, up+down, a+d) cancel and count as neither, since such a step
    looks exactly like holding no key. The memory model is always driven by the
    raw recorded keys; only the IDM's labels are effective keys. Scores:

    - ``real``: real held-out frames, scored against the recorded keys (the
      ceiling: what the IDM itself can read);
    - ``reconstructed``: the same frames encoded and decoded by the vision
      model (what a perfect memory model could reach);
    - ``dream``: from real context at each open-loop start ``t0``, the memory
      model dreams ``idm_horizon`` steps at ``idm_temperature`` driven by the
      recorded keys ``act[t0 ..]``; frames = reconstructed ``t0 - before .. t0``
      + dream, scored against the recorded keys;
    - ``dream_shuffled`` (the strict test): the same, driven by the recorded key
      sequence of another start chosen at random, scored against the keys that
      drove it. Those keys often contradict the motion in the context, so only a
      dream that follows its keys scores high; one that ignores them scores at
      chance;
    - ``dream_shuffled_vs_recorded`` (the floor): that shuffled-key dream scored
      against the recorded keys of its own start, which it never saw: a
      controllable dream scores low here, and a dream that ignores its keys and
      continues the recorded motion from its context scores as high as on ``dream``.

    Raises ``ValueError`` when the episodes' sidecar frame skip differs from the IDM's.
    """
    device = torch.device(device)
    episodes = episodes[: config.max_episodes] if config.max_episodes else episodes
    episode_actions = [read_labels(p)["act"] for p in episodes]
    run = _Run(
        vision, memory, config, device, np.concatenate(episode_actions).astype(np.float32),
        torch.Generator(device=device).manual_seed(config.seed), np.random.default_rng(config.seed),
    )  # fmt: skip
    idm_run = _idm_setup(idm, memory, episodes, episode_actions, config, device)
    code_counts = torch.zeros(vision.config.codebook_size, dtype=torch.float64)
    end_episodes: list[EndEpisode] = []
    for index, path in enumerate(tqdm(episodes, desc="evaluating", unit="episode")):
        episode = _read_episode(run, index, path)
        code_counts += torch.bincount(
            episode.tokens.flatten().cpu(), minlength=vision.config.codebook_size
        ).double()
        if end_model is not None:
            done = episode.labels.get("done", np.zeros(len(episode.frames), bool))
            end_episodes.append(
                EndEpisode(
                    episode.tokens.cpu().numpy(), episode.labels["act"], done.astype(np.float32)
                )
            )
        if memory is None:
            continue
        _teacher_forcing(run, episode)
        _open_loop(run, episode)
        if idm_run is not None:
            _idm_dreams(run, idm_run, episode, episode_actions)
    results: dict[str, Any] = {
        "episodes": len(episodes),
        "config": asdict(config),
        "vision": _vision_results(run.stats, code_counts),
    }
    if end_model is not None:
        results["end_model"] = end_scores(end_model, end_episodes)
    if memory is not None:
        results["memory"] = _memory_results(run, idm, idm_run, [p.stem for p in episodes])
    return results


def _idm_setup(
    idm: InverseDynamicsModel | None,
    memory: torch.nn.Module | None,
    episodes: list[Path],
    episode_actions: list[np.ndarray],
    config: EvalConfig,
    device: torch.device,
) -> _IDMRun | None:
    """Check the IDM fits the episodes and choose the keys it scores; ``None`` without an IDM."""
    if idm is None:
        return None
    if memory is None:
        raise ValueError("an IDM scores dream transitions: evaluate it with a memory model")
    if config.idm_horizon < idm.config.after:
        raise ValueError(
            f"idm_horizon must be >= {idm.config.after} (the IDM's frames after a step), got {config.idm_horizon}"
        )
    check_frame_skip(idm.config, episodes)
    held = effective_keys(np.concatenate(episode_actions), opposing_pairs(idm.config))
    held = held.any(axis=0)
    pressed = [name for name, h in zip(KEY_NAMES, held) if h]
    scored = [key for key in idm.config.keys if key in pressed]
    if not scored:
        raise ValueError(
            f"the IDM scores keys {', '.join(idm.config.keys)}, none of which the evaluated episodes press"
        )
    k = memory.config.context_frames
    bank = [  # every start's recorded key sequence, for the shuffled-key dreams
        (e, t0) for e, act in enumerate(episode_actions)
        for t0 in idm_starts(len(act), k, idm.config.before, config)
    ]  # fmt: skip
    if len(bank) < 2:
        logger.warning("fewer than two IDM dream starts: no shuffled-key floor")
    # The IDM's dreams get their own seeded streams, so the PSNR numbers do not depend on --idm.
    return _IDMRun(
        IDMScorer(idm, scored), pressed,
        torch.Generator(device=device).manual_seed(config.seed + 1),
        np.random.default_rng(config.seed + 1), bank, {start: i for i, start in enumerate(bank)},
    )  # fmt: skip


def _read_episode(run: _Run, index: int, path: Path) -> _Episode:
    """Read, encode and reconstruct one episode; add the vision model's scores."""
    vc = run.vision.config
    frames = np.concatenate(list(iter_frames(path, height=vc.image_height, width=vc.image_width)))
    labels = read_labels(path)
    tokens = _encode(run.vision, frames, run.config.batch_size, run.device)  # (N, T)
    recon = run.decode(tokens)
    run.stats.add("recon_psnr", psnr(recon, frames))
    run.stats.add("recon_ssim", ssim(recon, frames))
    actions = torch.from_numpy(labels["act"].astype(np.float32)).to(run.device)  # (N, 22)
    return _Episode(index, frames, labels, tokens, recon, actions)


def _teacher_forcing(run: _Run, episode: _Episode) -> None:
    """Every step with a next frame, one-shot argmax, plus the heads on every step."""
    memory, config, stats, labels = run.memory, run.config, run.stats, episode.labels
    k, n, tokens = memory.config.context_frames, len(episode.frames), episode.tokens
    for start in range(0, n, config.batch_size):
        steps = np.arange(start, min(n, start + config.batch_size))
        ctx = _contexts(tokens, steps, k)
        with autocast(run.device, config.precision):
            out = memory(ctx[:, -1], episode.actions[steps], ctx[:, :-1] if k > 1 else None)
        has_next = steps + 1 < n
        if has_next.any():
            predicted = out.logits[torch.from_numpy(has_next)].argmax(-1)  # (S, T)
            truth = tokens[torch.from_numpy(steps[has_next] + 1)]
            stats.add("next_token_acc", (predicted == truth).double().mean(1).cpu().numpy())
            real = episode.frames[steps[has_next] + 1]
            stats.add("teacher_forced_psnr", psnr(run.decode(predicted), real))
        if out.end_logit is not None and "done" in labels:
            run.heads["end_pred"].append(torch.sigmoid(out.end_logit.float()).cpu().numpy() > 0.5)
            run.heads["end_true"].append(labels["done"][steps].astype(bool))
        if out.reward is not None and "rew" in labels:
            run.heads["rew_pred"].append(out.reward.float().cpu().numpy())
            run.heads["rew_true"].append(labels["rew"][steps].astype(np.float64))


def _open_loop(run: _Run, episode: _Episode) -> None:
    """From real context at t0, dream ``horizon`` steps with the recorded (or random) actions."""
    config, frames = run.config, episode.frames
    k, horizon = run.memory.config.context_frames, max(config.horizons)
    starts = np.arange(k - 1, len(frames) - horizon, config.start_stride)
    for chunk in range(0, len(starts), config.batch_size):
        t0 = starts[chunk : chunk + config.batch_size]
        steps = torch.from_numpy(t0[:, None] + np.arange(horizon))  # (S, horizon)
        draws = [
            run.rng.integers(0, len(run.all_actions), len(t0))
            for _ in range(config.control_horizon)
        ]
        random_actions = torch.from_numpy(run.all_actions[np.stack(draws, axis=1)]).to(run.device)
        for mode, driving in (("true", episode.actions[steps]), ("random", random_actions)):
            dream_tokens = _rollout(
                run.memory, _contexts(episode.tokens, t0, k), driving, config,
                config.temperature, run.generator,
            )  # (S, H, T)  # fmt: skip
            for h in range(1, driving.shape[1] + 1):
                if h in config.horizons or h == config.control_horizon:
                    real = frames[t0 + h]
                    run.stats.add(f"{mode}_h{h}", psnr(run.decode(dream_tokens[:, h - 1]), real))
                    if mode == "true":
                        run.stats.add(f"copy_h{h}", psnr(frames[t0], real))
                        run.stats.add(f"recon_h{h}", psnr(episode.recon[t0 + h], real))
                        run.stats.add(f"episode_h{h}", np.full(len(t0), episode.index))


def _idm_dreams(
    run: _Run, idm_run: _IDMRun, episode: _Episode, episode_actions: list[np.ndarray]
) -> None:
    """Score real, reconstructed and dreamt windows (recorded and shuffled keys) with the IDM."""
    scorer, config, labels = idm_run.scorer, run.config, episode.labels
    before, after = scorer.idm.config.before, scorer.idm.config.after
    n, k, H = len(episode.frames), run.memory.config.context_frames, config.idm_horizon
    for name, seen in (("real", episode.frames), ("reconstructed", episode.recon)):
        scorer.add(name, scorer.predict(seen), labels["act"][before : n - after])
    # Dreams the IDM scores: reconstructed t0-before..t0, then idm_horizon dreamt frames.
    starts = idm_starts(n, k, before, config)
    bank = idm_run.bank
    for chunk in range(0, len(starts), config.batch_size):
        t0 = starts[chunk : chunk + config.batch_size]
        recorded = labels["act"][t0[:, None] + np.arange(H)]  # (S, H, 22)
        drives = [("dream", recorded)]
        if len(bank) >= 2:
            own = np.array([idm_run.bank_index[(episode.index, t)] for t in t0])
            other = idm_run.rng.integers(0, len(bank) - 1, len(t0))
            other += other >= own  # any start but its own
            shuffled = np.stack(
                [episode_actions[e][t : t + H] for e, t in (bank[j] for j in other)]
            )
            drives.append(("dream_shuffled", shuffled))
        for name, driving in drives:
            keys = torch.from_numpy(driving.astype(np.float32)).to(run.device)  # (S, H, 22)
            ctx = _contexts(episode.tokens, t0, k)
            dream_tokens = _rollout(
                run.memory, ctx, keys, config, config.idm_temperature, idm_run.generator
            )  # (S, H, T)
            dream = run.decode(dream_tokens.flatten(0, 1))
            dream = dream.reshape(len(t0), H, *episode.frames.shape[1:])  # (S, H, h, w, 3)
            for i, t in enumerate(t0):
                pred = scorer.predict(np.concatenate([episode.recon[t - before : t + 1], dream[i]]))
                scorer.add(name, pred, driving[i])  # row j: key step t + j
                if name == "dream_shuffled":
                    scorer.add("dream_shuffled_vs_recorded", pred, recorded[i])


def _vision_results(stats: Stats, code_counts: torch.Tensor) -> dict[str, Any]:
    counts = code_counts / code_counts.sum().clamp_min(1)
    return {
        "recon_psnr": stats.mean("recon_psnr"),
        "recon_ssim": stats.mean("recon_ssim"),
        "frames": int(stats.all("recon_psnr").size),
        "codes_used_share": float((code_counts > 0).double().mean()),
        "code_perplexity": float(torch.exp(-(counts * counts.clamp_min(1e-12).log()).sum())),
    }


def _gain_by_episode(
    gain: np.ndarray, episode: np.ndarray, names: list[str] | None = None
) -> dict[str, Any]:
    """Dream - copy-last PSNR per episode (the mean of its starts) and the standard error of
    their mean: starts of one episode overlap, so the episode is the independent unit.
    ``names[i]`` names episode index ``i`` (``gain_episodes``: what ``--baseline`` pairs by)."""
    ids = np.unique(episode)
    per_episode = np.array([gain[episode == i].mean() for i in ids])
    se = float(per_episode.std(ddof=1) / math.sqrt(len(ids))) if len(ids) > 1 else math.nan
    out: dict[str, Any] = {"gain_by_episode": per_episode.tolist(), "gain_se": se}
    if names is not None:
        out["gain_episodes"] = [names[int(i)] for i in ids]
    return out


def check_baseline(baseline: Any) -> None:
    """Raise ``ValueError`` unless ``baseline`` is ``elworld eval`` results with memory
    rollouts whose per-episode gains name their episodes (what pairing needs)."""
    rollouts = (
        baseline.get("memory", {}).get("rollout_psnr") if isinstance(baseline, dict) else None
    )
    if not rollouts or "config" not in baseline:
        raise ValueError(
            "expected an eval.json of `elworld eval` with --memory (no memory rollouts in it)"
        )
    if not all("gain_episodes" in row for row in rollouts.values()):
        raise ValueError(
            "no per-episode gains with episode names (gain_episodes): it was written by an "
            "older elworld; evaluate that world again"
        )


def paired_gain_difference(results: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """This world's dream - copy-last PSNR minus a baseline world's, paired by episode.

    Both are ``elworld eval`` results on the same recordings. Each horizon's
    figure is the mean over the episodes both scored of the per-episode
    difference, with its standard error: the two worlds see the same starts, so
    the spread between episodes (larger than most gates) cancels. Raises
    ``ValueError`` when the baseline fails ``check_baseline``, was scored from other
    starts, or shares no episode.
    """
    check_baseline(baseline)
    ours, theirs = results["memory"]["rollout_psnr"], baseline["memory"]["rollout_psnr"]
    ours_stride = results["config"]["start_stride"]
    theirs_stride = baseline["config"]["start_stride"]
    if ours_stride != theirs_stride:
        raise ValueError(
            f"the baseline was evaluated with --start-stride {theirs_stride}, this run with "
            f"{ours_stride}: paired episodes need the same starts"
        )
    theirs = {str(h): row for h, row in theirs.items()}
    horizons = {}
    for h, row in ours.items():
        other = theirs.get(str(h))  # JSON keys are strings, fresh results' ints
        if other is None:
            continue
        base = dict(zip(other["gain_episodes"], other["gain_by_episode"]))
        diffs = np.array(
            [g - base[n] for n, g in zip(row["gain_episodes"], row["gain_by_episode"]) if n in base]
        )
        if len(diffs) == 0:
            raise ValueError(
                "the baseline scored none of these episodes: evaluate both on the same --data"
            )
        se = float(diffs.std(ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else math.nan
        horizons[h] = {"difference": float(diffs.mean()), "se": se, "episodes": int(len(diffs))}
    return horizons


def _memory_results(
    run: _Run, idm: InverseDynamicsModel | None, idm_run: _IDMRun | None, names: list[str]
) -> dict[str, Any]:
    stats, config, heads = run.stats, run.config, run.heads
    rollout = {
        h: {
            "dream": stats.mean(f"true_h{h}"),
            "copy_last": stats.mean(f"copy_h{h}"),
            "reconstruction": stats.mean(f"recon_h{h}"),
            "starts": int(stats.all(f"true_h{h}").size),
            **_gain_by_episode(
                stats.all(f"true_h{h}") - stats.all(f"copy_h{h}"), stats.all(f"episode_h{h}"), names
            ),
        }
        for h in config.horizons
    }
    ch = config.control_horizon
    results: dict[str, Any] = {
        "next_token_acc": stats.mean("next_token_acc"),
        "teacher_forced_psnr": stats.mean("teacher_forced_psnr"),
        "rollout_psnr": rollout,
        "controllability": {
            "horizon": ch,
            "true_actions_psnr": stats.mean(f"true_h{ch}"),
            "random_actions_psnr": stats.mean(f"random_h{ch}"),
            "delta_psnr": stats.mean(f"true_h{ch}") - stats.mean(f"random_h{ch}"),
        },
    }
    if idm is not None and idm_run is not None:
        results["idm"] = _idm_results(idm, idm_run, config)
    if heads["end_pred"]:
        results["end_head"] = precision_recall(
            np.concatenate(heads["end_pred"]), np.concatenate(heads["end_true"])
        )
    if heads["rew_pred"]:
        pred, true = np.concatenate(heads["rew_pred"]), np.concatenate(heads["rew_true"])
        results["reward_head"] = {
            "mse": float(np.mean((pred - true) ** 2)),
            # The best constant (the mean reward) scores the variance: the bar to beat.
            "constant_mse": float(np.var(true)),
            "steps": int(len(true)),
            **precision_recall(
                np.abs(pred) > config.reward_threshold, np.abs(true) > config.reward_threshold
            ),
        }
    return results


def _idm_results(idm: InverseDynamicsModel, idm_run: _IDMRun, config: EvalConfig) -> dict[str, Any]:
    scored, pressed = idm_run.scorer.scored, idm_run.pressed
    return {
        "scored_keys": scored,
        "left_out_keys": {
            "never_pressed": [key for key in idm.config.keys if key not in pressed],
            "not_scored_by_idm": [key for key in pressed if key not in idm.config.keys],
        },
        "horizon": config.idm_horizon,
        "temperature": config.idm_temperature,
        "frame_skip": idm.config.frame_skip,
        "labels": labels_text(idm.config),
        "opposing_keys": [list(pair) for pair in opposing_pairs(idm.config)],
        **idm_run.scorer.scores(),
    }
