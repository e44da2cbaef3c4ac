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
- with an inverse-dynamics model (``elworld.idm``, trained on real training
  episodes): a controllability score blur cannot fool, the IDM's macro-F1 over
  the keys it names (see ``evaluate``).

PSNR is per frame on uint8 RGB, capped at 50 dB so identical frames cannot
swamp a mean, then averaged over frames.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from elworld.data import find_episodes, iter_frames, read_labels, recording_provenance
from elworld.endmodel import EndEpisode, EndModel, check_end_model_fits, end_scores
from elworld.frames import frames_to_tensor, tensor_to_frames
from elworld.idm import (
    LABELS,
    InverseDynamicsModel,
    check_frame_skip,
    effective_keys,
    labels_text,
    macro_f1,
    opposing_pairs,
    predict_keys,
)
from elworld.keys import KEY_INDEX, KEY_NAMES
from elworld.model.common import PRECISIONS, autocast, check_models_fit

logger = logging.getLogger(__name__)

PSNR_CAP = 50.0


def psnr(a: np.ndarray, b: np.ndarray, cap: float = PSNR_CAP) -> np.ndarray:
    """Per-frame PSNR in dB of uint8 frames ``(N, H, W, 3)``, capped at ``cap``."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(255.0**2 / mse)
    return np.minimum(values, cap)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame SSIM of uint8 frames ``(N, H, W, 3)`` (11x11 Gaussian window, sigma 1.5, channel mean)."""
    x, y = frames_to_tensor(a), frames_to_tensor(b)  # (N, 3, H, W)
    coords = torch.arange(11, dtype=torch.float32) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    rows, cols = g.view(1, 1, 11, 1).expand(3, 1, 11, 1), g.view(1, 1, 1, 11).expand(3, 1, 1, 11)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid padding
        return F.conv2d(F.conv2d(t, rows, groups=3), cols, groups=3)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return value.mean(dim=(1, 2, 3)).double().numpy()


def precision_recall(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float | int]:
    """Precision and recall of boolean predictions (NaN when undefined), with the counts."""
    tp = int(np.sum(predicted & actual))
    return {
        "precision": tp / int(predicted.sum()) if predicted.any() else math.nan,
        "recall": tp / int(actual.sum()) if actual.any() else math.nan,
        "predicted": int(predicted.sum()),
        "actual": int(actual.sum()),
    }


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


class _Stats:
    """Running lists of per-item values, averaged at the end."""

    def __init__(self) -> None:
        self.values: dict[str, list[np.ndarray]] = {}

    def add(self, key: str, values: np.ndarray | float) -> None:
        self.values.setdefault(key, []).append(np.atleast_1d(np.asarray(values, dtype=np.float64)))

    def all(self, key: str) -> np.ndarray:
        return np.concatenate(self.values[key]) if key in self.values else np.zeros(0)

    def mean(self, key: str) -> float:
        values = self.all(key)
        return float(values.mean()) if values.size else math.nan


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
    """Dream ``H`` steps from real ``context (S, k, T)`` driven by ``actions (S, H, 22)``: tokens ``(S, H, T)``."""
    k = context.shape[1]
    ctx, dream = context, []
    for h in range(actions.shape[1]):
        with autocast(context.device, config.precision):
            sample = memory.sample(
                ctx[:, -1], actions[:, h], ctx[:, :-1] if k > 1 else None, temperature=temperature,
                top_k=config.top_k, steps=config.sampling_steps, guidance=config.guidance,
                generator=generator,
            )  # fmt: skip
        ctx = torch.cat([ctx[:, 1:], sample.tokens[:, None]], dim=1)
        dream.append(sample.tokens)
    return torch.stack(dream, dim=1)


IDM_SCORES = {
    "real": "real held-out transitions (ceiling)",
    "reconstructed": "real frames through the vision model",
    "dream": "dream driven by the recorded keys",
    "dream_shuffled": "dream driven by shuffled keys, scored against them (the strict test)",
    "dream_shuffled_vs_recorded": "dream driven by shuffled keys, scored against the recorded keys (floor)",
}


class _IDMScorer:
    """IDM predictions and the keys they are scored against, per score name, for the scored keys."""

    def __init__(self, idm: InverseDynamicsModel, scored: list[str]) -> None:
        self.idm, self.scored = idm, scored
        self.idm_columns = [idm.config.keys.index(k) for k in scored]
        self.act_columns = [KEY_INDEX[k] for k in scored]
        self.pred: dict[str, list[np.ndarray]] = {name: [] for name in IDM_SCORES}
        self.true: dict[str, list[np.ndarray]] = {name: [] for name in IDM_SCORES}

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """Scored keys of every window of ``frames (L, H, W, 3)``: ``(L - before - after, K)`` bool."""
        return predict_keys(self.idm, frames)[:, self.idm_columns]

    def add(self, name: str, pred: np.ndarray, act: np.ndarray) -> None:
        """Score ``pred`` against the effective keys of the first ``len(pred)`` rows of raw ``act (>= len(pred), 22)``."""
        self.pred[name].append(pred)
        keys = effective_keys(act[: len(pred)], opposing_pairs(self.idm.config))
        self.true[name].append(keys[:, self.act_columns].astype(bool))

    def scores(self) -> dict[str, dict[str, Any]]:
        empty = np.zeros((0, len(self.scored)), bool)
        return {
            name: macro_f1(
                np.concatenate(self.pred[name]) if self.pred[name] else empty,
                np.concatenate(self.true[name]) if self.true[name] else empty,
                self.scored,
            )
            for name in IDM_SCORES
        }


def _idm_starts(n: int, k: int, before: int, config: EvalConfig) -> np.ndarray:
    """Open-loop starts for IDM dreams in an ``n``-frame episode (the PSNR grid, horizon ``idm_horizon``)."""
    return np.arange(max(k - 1, before), n - config.idm_horizon, config.start_stride)


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
    ``elworld.endmodel.end_scores`` on the episodes (NLL against the best
    constant hazard, hazard at real ends vs elsewhere, ends expected vs real).

    With an inverse-dynamics model ``idm`` (trained on real training episodes),
    ``results["memory"]["idm"]`` holds its macro-F1 (and per-key F1) over the
    keys it scores that the episodes press, on windows of frames ``t - before ..
    t + after`` labelled with the EFFECTIVE keys of step ``t``
    (``elworld.idm.effective_keys`` of ``act[t]``): opposing keys held together
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
    vc = vision.config
    grid = (vc.grid_height, vc.grid_width)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    stats = _Stats()
    code_counts = torch.zeros(vc.codebook_size, dtype=torch.float64)
    heads: dict[str, list[np.ndarray]] = {
        "end_pred": [],
        "end_true": [],
        "rew_pred": [],
        "rew_true": [],
    }
    episodes = episodes[: config.max_episodes] if config.max_episodes else episodes
    end_episodes: list[EndEpisode] = []
    episode_actions = [read_labels(p)["act"] for p in episodes]
    all_actions = np.concatenate(episode_actions).astype(np.float32)
    horizon = max(config.horizons)
    if idm is not None:
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
        scorer = _IDMScorer(idm, scored)
        # The IDM's dreams get their own seeded streams, so the PSNR numbers do not depend on --idm.
        idm_generator = torch.Generator(device=device).manual_seed(config.seed + 1)
        idm_rng = np.random.default_rng(config.seed + 1)
        k = memory.config.context_frames
        bank = [  # every start's recorded key sequence, for the shuffled-key dreams
            (e, t0) for e, act in enumerate(episode_actions)
            for t0 in _idm_starts(len(act), k, idm.config.before, config)
        ]  # fmt: skip
        bank_index = {start: i for i, start in enumerate(bank)}
        if len(bank) < 2:
            logger.warning("fewer than two IDM dream starts: no shuffled-key floor")

    for episode, path in enumerate(tqdm(episodes, desc="evaluating", unit="episode")):
        frames = np.concatenate(
            list(iter_frames(path, height=vc.image_height, width=vc.image_width))
        )
        labels = read_labels(path)
        tokens = _encode(vision, frames, config.batch_size, device)  # (N, T)
        code_counts += torch.bincount(tokens.flatten().cpu(), minlength=vc.codebook_size).double()
        recon = _decode(vision, tokens, grid, config.batch_size)
        stats.add("recon_psnr", psnr(recon, frames))
        stats.add("recon_ssim", ssim(recon, frames))
        if end_model is not None:
            done = labels.get("done", np.zeros(len(frames), bool)).astype(np.float32)
            end_episodes.append(EndEpisode(tokens.cpu().numpy(), labels["act"], done))
        if memory is None:
            continue
        k = memory.config.context_frames
        actions = torch.from_numpy(labels["act"].astype(np.float32)).to(device)  # (N, 22)
        n = len(frames)

        # Teacher forcing: every step with a next frame, one-shot argmax, plus the heads on every step.
        for start in range(0, n, config.batch_size):
            steps = np.arange(start, min(n, start + config.batch_size))
            ctx = _contexts(tokens, steps, k)
            with autocast(device, config.precision):
                out = memory(ctx[:, -1], actions[steps], ctx[:, :-1] if k > 1 else None)
            has_next = steps + 1 < n
            if has_next.any():
                predicted = out.logits[torch.from_numpy(has_next)].argmax(-1)  # (S, T)
                truth = tokens[torch.from_numpy(steps[has_next] + 1)]
                stats.add("next_token_acc", (predicted == truth).double().mean(1).cpu().numpy())
                stats.add(
                    "teacher_forced_psnr",
                    psnr(
                        _decode(vision, predicted, grid, config.batch_size),
                        frames[steps[has_next] + 1],
                    ),
                )
            if out.end_logit is not None and "done" in labels:
                heads["end_pred"].append(torch.sigmoid(out.end_logit.float()).cpu().numpy() > 0.5)
                heads["end_true"].append(labels["done"][steps].astype(bool))
            if out.reward is not None and "rew" in labels:
                heads["rew_pred"].append(out.reward.float().cpu().numpy())
                heads["rew_true"].append(labels["rew"][steps].astype(np.float64))

        # Open loop: from real context at t0, dream `horizon` steps with the recorded (or random) actions.
        starts = np.arange(k - 1, n - horizon, config.start_stride)
        for chunk in range(0, len(starts), config.batch_size):
            t0 = starts[chunk : chunk + config.batch_size]
            steps = torch.from_numpy(t0[:, None] + np.arange(horizon))  # (S, horizon)
            draws = [
                rng.integers(0, len(all_actions), len(t0)) for _ in range(config.control_horizon)
            ]
            random_actions = torch.from_numpy(all_actions[np.stack(draws, axis=1)]).to(device)
            for mode, driving in (("true", actions[steps]), ("random", random_actions)):
                dream_tokens = _rollout(
                    memory, _contexts(tokens, t0, k), driving, config, config.temperature, generator
                )  # (S, H, T)
                for h in range(1, driving.shape[1] + 1):
                    if h in config.horizons or h == config.control_horizon:
                        real = frames[t0 + h]
                        dream = _decode(vision, dream_tokens[:, h - 1], grid, config.batch_size)
                        stats.add(f"{mode}_h{h}", psnr(dream, real))
                        if mode == "true":
                            stats.add(f"copy_h{h}", psnr(frames[t0], real))
                            stats.add(f"recon_h{h}", psnr(recon[t0 + h], real))

        if idm is not None:
            before, after = idm.config.before, idm.config.after
            for name, seen in (("real", frames), ("reconstructed", recon)):
                scorer.add(name, scorer.predict(seen), labels["act"][before : n - after])
            # Dreams the IDM scores: reconstructed t0-before..t0, then idm_horizon dreamt frames.
            idm_starts, H = _idm_starts(n, k, before, config), config.idm_horizon
            for chunk in range(0, len(idm_starts), config.batch_size):
                t0 = idm_starts[chunk : chunk + config.batch_size]
                recorded = labels["act"][t0[:, None] + np.arange(H)]  # (S, H, 22)
                drives = [("dream", recorded)]
                if len(bank) >= 2:
                    own = np.array([bank_index[(episode, t)] for t in t0])
                    other = idm_rng.integers(0, len(bank) - 1, len(t0))
                    other += other >= own  # any start but its own
                    shuffled = np.stack(
                        [episode_actions[e][t : t + H] for e, t in (bank[j] for j in other)]
                    )
                    drives.append(("dream_shuffled", shuffled))
                for name, driving in drives:
                    keys = torch.from_numpy(driving.astype(np.float32)).to(device)  # (S, H, 22)
                    ctx = _contexts(tokens, t0, k)
                    dream_tokens = _rollout(
                        memory, ctx, keys, config, config.idm_temperature, idm_generator
                    )  # (S, H, T)
                    dream = _decode(vision, dream_tokens.flatten(0, 1), grid, config.batch_size)
                    dream = dream.reshape(len(t0), H, *frames.shape[1:])  # (S, H, h, w, 3)
                    for i, t in enumerate(t0):
                        pred = scorer.predict(np.concatenate([recon[t - before : t + 1], dream[i]]))
                        scorer.add(name, pred, driving[i])  # row j: key step t + j
                        if name == "dream_shuffled":
                            scorer.add("dream_shuffled_vs_recorded", pred, recorded[i])

    counts = code_counts / code_counts.sum().clamp_min(1)
    results: dict[str, Any] = {
        "episodes": len(episodes),
        "config": asdict(config),
        "vision": {
            "recon_psnr": stats.mean("recon_psnr"),
            "recon_ssim": stats.mean("recon_ssim"),
            "frames": int(stats.all("recon_psnr").size),
            "codes_used_share": float((code_counts > 0).double().mean()),
            "code_perplexity": float(torch.exp(-(counts * counts.clamp_min(1e-12).log()).sum())),
        },
    }
    if end_model is not None:
        results["end_model"] = end_scores(end_model, end_episodes)
    if memory is None:
        return results
    rollout = {
        h: {
            "dream": stats.mean(f"true_h{h}"),
            "copy_last": stats.mean(f"copy_h{h}"),
            "reconstruction": stats.mean(f"recon_h{h}"),
            "starts": int(stats.all(f"true_h{h}").size),
        }
        for h in config.horizons
    }
    ch = config.control_horizon
    results["memory"] = {
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
    if idm is not None:
        results["memory"]["idm"] = {
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
            **scorer.scores(),
        }
    if heads["end_pred"]:
        results["memory"]["end_head"] = precision_recall(
            np.concatenate(heads["end_pred"]), np.concatenate(heads["end_true"])
        )
    if heads["rew_pred"]:
        pred, true = np.concatenate(heads["rew_pred"]), np.concatenate(heads["rew_true"])
        results["memory"]["reward_head"] = {
            "mse": float(np.mean((pred - true) ** 2)),
            # The best constant (the mean reward) scores the variance: the bar to beat.
            "constant_mse": float(np.var(true)),
            "steps": int(len(true)),
            **precision_recall(
                np.abs(pred) > config.reward_threshold, np.abs(true) > config.reward_threshold
            ),
        }
    return results


def _head_lines(name: str, head: dict[str, Any]) -> list[str]:
    """Report rows for the end or reward head: only figures a constant prediction would not reach.

    The reward head's error is shown against the best constant's (the mean
    reward); its precision / recall only when the recorded steps are not all
    on one side of the threshold (in take_cover every step pays ~4, so "always
    a reward" would score 1.00 / 1.00 there).
    """
    lines = []
    one_sided = False
    if "constant_mse" in head:
        lines.append(
            f"| {name.replace('_', ' ')} MSE (best constant) | {head['mse']:.4g} ({head['constant_mse']:.4g}) |"
        )
        one_sided = head["actual"] in (0, head["steps"])
    if not one_sided:
        lines.append(
            f"| {name.replace('_', ' ')} precision / recall | {_fmt(head['precision'])} / {_fmt(head['recall'])} ({head['predicted']} predicted, {head['actual']} actual) |"
        )
    return lines


def _fmt(value: float) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.2f}"
    )


def markdown_report(results: dict[str, Any]) -> str:
    """The results as markdown tables (what model cards quote)."""
    v = results["vision"]
    lines = [
        f"Evaluated on {results['episodes']} episodes ({v['frames']} frames).",
        "",
        "Memory passes: temperature {temperature} for PSNR (0 = argmax), guidance {guidance}, "
        "precision {precision}.".format(
            **{"guidance": 1.0, "precision": "fp32", **results["config"]}
        ),
        "",
        "| vision | value |",
        "|---|---|",
        f"| reconstruction PSNR (dB) | {_fmt(v['recon_psnr'])} |",
        f"| reconstruction SSIM | {v['recon_ssim']:.3f} |",
        f"| codes used (share of codebook) | {v['codes_used_share']:.3f} |",
        f"| code perplexity | {v['code_perplexity']:.1f} |",
    ]
    m = results.get("memory")
    if m:
        lines += [
            "",
            "| memory | value |",
            "|---|---|",
            f"| teacher-forced next-token accuracy | {m['next_token_acc']:.3f} |",
            f"| teacher-forced 1-step PSNR (dB) | {_fmt(m['teacher_forced_psnr'])} |",
            f"| controllability delta-PSNR at h={m['controllability']['horizon']} (dB) | {_fmt(m['controllability']['delta_psnr'])} |",
        ]
        for name in ("end_head", "reward_head"):
            if name in m:
                lines += _head_lines(name, m[name])
        lines += [
            "",
            "| horizon | dream PSNR | copy-last PSNR | dream - copy-last | reconstruction ceiling | starts |",
            "|---|---|---|---|---|---|",
        ]
        for h, row in m["rollout_psnr"].items():
            lines.append(
                f"| {h} | {_fmt(row['dream'])} | {_fmt(row['copy_last'])} | {_fmt(row['dream'] - row['copy_last'])} | {_fmt(row['reconstruction'])} | {row['starts']} |"
            )
        if "idm" in m:
            lines += ["", *_idm_lines(m["idm"])]
    if e := results.get("end_model"):
        lines += [
            "",
            "| episode-end model | value |",
            "|---|---|",
            f"| NLL per step (best constant hazard) | {e['nll']:.4f} ({e['constant_nll']:.4f}) |",
            f"| mean hazard at real ends / elsewhere | {e['hazard_at_ends']:.3f} / {e['hazard_elsewhere']:.4f} |",
            f"| ends expected (summed hazard) / real | {e['expected_ends']:.1f} / {e['ends']:.0f} |",
        ]
    return "\n".join(lines) + "\n"


def _idm_lines(idm: dict[str, Any]) -> list[str]:
    """The IDM controllability table and which keys it scored."""
    keys = idm["scored_keys"]
    lines = [
        f"| IDM controllability | macro-F1 | {' | '.join(f'F1 {k}' for k in keys)} | windows |",
        "|---|---|" + "---|" * len(keys) + "---|",
    ]
    for name, label in IDM_SCORES.items():
        row = idm[name]
        per_key = " | ".join(_fmt(row["per_key"][k]) for k in keys)
        lines.append(f"| {label} | {_fmt(row['macro_f1'])} | {per_key} | {row['windows']} |")
    left_out = [
        f"{', '.join(idm['left_out_keys'][field])} ({why})"
        for field, why in (
            ("never_pressed", "never pressed in the evaluated episodes"),
            ("not_scored_by_idm", "not scored by the IDM"),
        )
        if idm["left_out_keys"][field]
    ]
    others = len(KEY_NAMES) - len(keys) - sum(len(v) for v in idm["left_out_keys"].values())
    left_out.append(f"{others} other keys (never pressed, not scored)")
    lines += [
        "",
        f"IDM scored keys: {', '.join(keys)}; left out: {'; '.join(left_out)}. "
        f"Dreams: {idm['horizon']} steps at temperature {idm['temperature']} from real context "
        f"(frame skip {idm['frame_skip']}).",
        "",
        f"IDM labels: {idm.get('labels', LABELS)}.",
    ]
    return lines


def plot_psnr(results: dict[str, Any], path: Path) -> None:
    """PSNR against horizon: dream, copy-last baseline and reconstruction ceiling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rollout = results["memory"]["rollout_psnr"]
    horizons = [int(h) for h in rollout]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key, label, style in (
        ("dream", "dream (recorded actions)", "o-"),
        ("copy_last", "copy last frame", "s--"),
        ("reconstruction", "vision reconstruction", ":"),
    ):
        ax.plot(horizons, [rollout[h][key] for h in rollout], style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(horizons, [str(h) for h in horizons])
    ax.set_xlabel("horizon (steps)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("open-loop dream vs real frames")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``elworld eval``."""
    parser = subparsers.add_parser(
        "eval",
        help="measure a world model on held-out episodes",
        description="Evaluate vision (and memory) checkpoints on recorded episodes the models never saw: "
        "reconstruction PSNR/SSIM, next-token accuracy, open-loop dream PSNR against the copy-last-frame "
        "baseline, controllability (delta-PSNR, and with --idm an inverse-dynamics key F1 that blur cannot "
        "fool) and the reward/end heads. Writes eval.json, eval.md and psnr_vs_horizon.png to --out.",
    )
    parser.add_argument("--vision", type=Path, required=True, help="vision checkpoint folder")
    parser.add_argument(
        "--memory",
        type=Path,
        default=None,
        help="memory checkpoint folder (omit to evaluate vision only)",
    )
    parser.add_argument("--data", type=Path, required=True, help="folder of held-out .npz episodes")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/eval"),
        help="report folder (default: %(default)s)",
    )
    parser.add_argument(
        "--horizons",
        default="1,4,16,32",
        help="open-loop horizons, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--start-stride",
        type=int,
        default=8,
        help="frames between rollout start points (default: %(default)s)",
    )
    parser.add_argument(
        "--max-episodes", type=int, default=None, help="evaluate at most this many episodes"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sampling temperature; 0 = argmax (default: %(default)s)",
    )
    parser.add_argument(
        "--sampling-steps",
        type=int,
        default=1,
        help="memory forward passes per frame (default: %(default)s)",
    )
    parser.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale on the keys, 1 = off; needs a memory model trained "
        "with --action-dropout (default: the world's recommended scale from the memory "
        "checkpoint's training_info.json, else 1)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="the memory model's passes: bf16 autocast, fp32, or auto, as the dream env runs "
        "them: bf16 where the device runs it natively (AVX-512 BF16/AMX CPU, CUDA), else fp32 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="frames per batch (default: %(default)s)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for random actions and sampling (default: %(default)s)",
    )
    parser.add_argument(
        "--idm",
        type=Path,
        default=None,
        help="inverse-dynamics checkpoint folder (`elworld train idm`, trained on real TRAINING episodes): "
        "adds its key macro-F1 on real, reconstructed, dream and shuffled-key dream transitions "
        "(needs --memory; the recordings' frame skip must match the IDM's)",
    )
    parser.add_argument(
        "--idm-horizon",
        type=int,
        default=16,
        help="dream steps per start scored by the IDM (default: %(default)s)",
    )
    parser.add_argument(
        "--idm-temperature",
        type=float,
        default=1.0,
        help="sampling temperature of the dreams the IDM scores; the dream env's default, "
        "since the action effect lives in the sampled dream (default: %(default)s)",
    )
    parser.add_argument(
        "--end",
        type=Path,
        default=None,
        help="episode-end checkpoint folder (`elworld train end`): adds its NLL, hazard at real ends "
        "and calibration (ends expected vs real) on the episodes",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: %(default)s)")
    parser.set_defaults(func=run_eval)


def check_world_rate(
    world: dict[str, Any], data: dict[str, Any], memory_path: Path | None, data_path: Path
) -> None:
    """Raise ``ValueError`` when held-out recordings were made at another frame skip than the world.

    A world steps at its training data's frame skip; scoring it on episodes
    recorded at another rate would compare different motions per step.
    Unrecorded frame skips (older checkpoints, recordings without sidecars) pass.
    """
    ours, theirs = world.get("frame_skip"), data.get("frame_skip")
    if ours is not None and theirs is not None and ours != theirs:
        raise ValueError(
            f"--data {data_path} was recorded at frame skip {theirs}, but the memory model "
            f"{memory_path} was trained on frame skip {ours}: record held-out episodes at the "
            f"world's frame skip (elworld collect doom --frame-skip {ours})"
        )


def run_eval(args: argparse.Namespace) -> int:
    """``elworld eval``."""
    from elworld.checkpoint import recommended_guidance, recording_info
    from elworld.model.memory import MemoryModel
    from elworld.model.vision import VisionModel
    from elworld.train.distributed import resolve_device

    try:
        horizons = tuple(sorted(int(h) for h in args.horizons.split(",")))
    except ValueError:
        raise ValueError(
            f"--horizons must be comma-separated integers, got {args.horizons!r}"
        ) from None
    if not horizons or horizons[0] < 1:
        raise ValueError(f"--horizons must be positive, got {args.horizons!r}")
    device = resolve_device(args.device)
    vision = VisionModel.from_checkpoint(args.vision, device=device)
    memory = None
    if args.memory is not None:
        memory = MemoryModel.from_checkpoint(args.memory, device=device)
        check_models_fit(vision.config, memory.config, args.vision, args.memory)
    idm = None
    if args.idm is not None:
        if memory is None:
            raise ValueError("--idm needs --memory: the IDM scores dream transitions")
        idm = InverseDynamicsModel.from_checkpoint(args.idm, device=device)
    end_model = None
    if args.end is not None:
        end_model = EndModel.from_checkpoint(args.end, device=device)
        if memory is not None:
            check_end_model_fits(end_model.config, memory.config, str(args.memory))
    config = EvalConfig(
        horizons=horizons, start_stride=args.start_stride, max_episodes=args.max_episodes, batch_size=args.batch_size,
        temperature=args.temperature, sampling_steps=args.sampling_steps, seed=args.seed,
        idm_horizon=args.idm_horizon, idm_temperature=args.idm_temperature,
        guidance=args.guidance if args.guidance is not None else (
            recommended_guidance(args.memory) if args.memory else 1.0
        ),
        precision=args.precision,
    )  # fmt: skip
    episodes = find_episodes(args.data)
    world = recording_info(args.memory) if args.memory is not None else {}
    check_world_rate(world, recording_provenance(episodes), args.memory, args.data)
    results = evaluate(vision, memory, episodes, config, device, idm=idm, end_model=end_model)
    results["world_recordings"] = world
    results["checkpoints"] = {
        "vision": str(args.vision),
        "memory": str(args.memory) if args.memory else None,
        "idm": str(args.idm) if args.idm else None,
        "end": str(args.end) if args.end else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "eval.md").write_text(markdown_report(results))
    if memory is not None:
        plot_psnr(results, args.out / "psnr_vs_horizon.png")
    logger.info("wrote %s", args.out / "eval.json")
    print(markdown_report(results))
    return 0
