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
  "event" is ``|r| > reward_threshold``), and the reward MSE.

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

from elworld.data import find_episodes, iter_frames, read_labels
from elworld.frames import frames_to_tensor, tensor_to_frames
from elworld.model.common import check_models_fit

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
    reward_threshold: float = 0.5
    seed: int = 0


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


@torch.inference_mode()
def evaluate(
    vision: torch.nn.Module,
    memory: torch.nn.Module | None,
    episodes: list[Path],
    config: EvalConfig,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Measure a vision model (and a memory model, if given) on recorded episodes."""
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
    all_actions = np.concatenate([read_labels(p)["act"] for p in episodes]).astype(np.float32)
    horizon = max(config.horizons)

    for path in tqdm(episodes, desc="evaluating", unit="episode"):
        frames = np.concatenate(
            list(iter_frames(path, height=vc.image_height, width=vc.image_width))
        )
        labels = read_labels(path)
        tokens = _encode(vision, frames, config.batch_size, device)  # (N, T)
        code_counts += torch.bincount(tokens.flatten().cpu(), minlength=vc.codebook_size).double()
        recon = _decode(vision, tokens, grid, config.batch_size)
        stats.add("recon_psnr", psnr(recon, frames))
        stats.add("recon_ssim", ssim(recon, frames))
        if memory is None:
            continue
        k = memory.config.context_frames
        actions = torch.from_numpy(labels["act"].astype(np.float32)).to(device)  # (N, 22)
        n = len(frames)

        # Teacher forcing: every step with a next frame, one-shot argmax, plus the heads on every step.
        for start in range(0, n, config.batch_size):
            steps = np.arange(start, min(n, start + config.batch_size))
            ctx = _contexts(tokens, steps, k)
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
            for mode in ("true", "random"):
                ctx = _contexts(tokens, t0, k).clone()  # (S, k, T)
                last_h = horizon if mode == "true" else config.control_horizon
                for h in range(1, last_h + 1):
                    if mode == "true":
                        act = actions[torch.from_numpy(t0 + h - 1)]
                    else:
                        act = torch.from_numpy(
                            all_actions[rng.integers(0, len(all_actions), len(t0))]
                        ).to(device)
                    sample = memory.sample(
                        ctx[:, -1], act, ctx[:, :-1] if k > 1 else None, temperature=config.temperature,
                        top_k=config.top_k, steps=config.sampling_steps, generator=generator,
                    )  # fmt: skip
                    ctx = torch.cat([ctx[:, 1:], sample.tokens[:, None]], dim=1)
                    if h in config.horizons or h == config.control_horizon:
                        real = frames[t0 + h]
                        dream = _decode(vision, sample.tokens, grid, config.batch_size)
                        stats.add(f"{mode}_h{h}", psnr(dream, real))
                        if mode == "true":
                            stats.add(f"copy_h{h}", psnr(frames[t0], real))
                            stats.add(f"recon_h{h}", psnr(recon[t0 + h], real))

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
    if heads["end_pred"]:
        results["memory"]["end_head"] = precision_recall(
            np.concatenate(heads["end_pred"]), np.concatenate(heads["end_true"])
        )
    if heads["rew_pred"]:
        pred, true = np.concatenate(heads["rew_pred"]), np.concatenate(heads["rew_true"])
        results["memory"]["reward_head"] = {
            "mse": float(np.mean((pred - true) ** 2)),
            **precision_recall(
                np.abs(pred) > config.reward_threshold, np.abs(true) > config.reward_threshold
            ),
        }
    return results


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
                head = m[name]
                lines.append(
                    f"| {name.replace('_', ' ')} precision / recall | {_fmt(head['precision'])} / {_fmt(head['recall'])} ({head['predicted']} predicted, {head['actual']} actual) |"
                )
        lines += [
            "",
            "| horizon | dream PSNR | copy-last PSNR | dream - copy-last | reconstruction ceiling | starts |",
            "|---|---|---|---|---|---|",
        ]
        for h, row in m["rollout_psnr"].items():
            lines.append(
                f"| {h} | {_fmt(row['dream'])} | {_fmt(row['copy_last'])} | {_fmt(row['dream'] - row['copy_last'])} | {_fmt(row['reconstruction'])} | {row['starts']} |"
            )
    return "\n".join(lines) + "\n"


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
        "baseline, controllability (delta-PSNR) and the reward/end heads. Writes eval.json, eval.md and "
        "psnr_vs_horizon.png to --out.",
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
        "--batch-size", type=int, default=16, help="frames per batch (default: %(default)s)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for random actions and sampling (default: %(default)s)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: %(default)s)")
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """``elworld eval``."""
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
    config = EvalConfig(
        horizons=horizons, start_stride=args.start_stride, max_episodes=args.max_episodes, batch_size=args.batch_size,
        temperature=args.temperature, sampling_steps=args.sampling_steps, seed=args.seed,
    )  # fmt: skip
    results = evaluate(vision, memory, find_episodes(args.data), config, device)
    results["checkpoints"] = {
        "vision": str(args.vision),
        "memory": str(args.memory) if args.memory else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "eval.md").write_text(markdown_report(results))
    if memory is not None:
        plot_psnr(results, args.out / "psnr_vs_horizon.png")
    logger.info("wrote %s", args.out / "eval.json")
    print(markdown_report(results))
    return 0
