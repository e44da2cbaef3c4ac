"""``elworld train end``: the episode-end model's data, training loop, checkpoint and command.

The network is ``elworld.model.end``; ``end_scores`` also serves ``elworld eval --end``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from elworld.checkpoint.lineage import start_record
from elworld.cli_args import add_fit_arguments, add_small_model_arguments, command_line
from elworld.data import build_token_cache, find_episodes, load_tokens, read_labels, split_episodes
from elworld.model.end import EndConfig, EndModel

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data


@dataclass
class EndEpisode:
    """One recorded episode as the end model reads it."""

    tokens: np.ndarray  # (L, T) token ids
    actions: np.ndarray  # (L, A) uint8
    done: np.ndarray  # (L,) float32


def _load_episodes(episodes: list[Path], token_files: list[Path]) -> list[EndEpisode]:
    out = []
    for path, file in zip(episodes, token_files, strict=True):
        labels = read_labels(path)
        tokens = np.asarray(load_tokens(file))
        tokens = tokens.reshape(len(tokens), -1)
        done = labels.get("done")
        done = np.zeros(len(tokens), np.float32) if done is None else done.astype(np.float32)
        if not (len(tokens) == len(labels["act"]) == len(done)):
            raise ValueError(f"{path}: frames, keys and done flags differ in length")
        out.append(EndEpisode(tokens, labels["act"], done))
    return out


def _batch(episodes: list[EndEpisode], device: torch.device) -> dict[str, torch.Tensor]:
    """Pad episodes to the longest: tokens, actions, done and the mask of real steps."""
    n, length = len(episodes), max(len(e.tokens) for e in episodes)
    tokens = torch.zeros(n, length, episodes[0].tokens.shape[1], dtype=torch.long)
    actions = torch.zeros(n, length, episodes[0].actions.shape[1])
    done = torch.zeros(n, length)
    mask = torch.zeros(n, length)
    for i, e in enumerate(episodes):
        k = len(e.tokens)
        tokens[i, :k] = torch.from_numpy(e.tokens.astype(np.int64))
        actions[i, :k] = torch.from_numpy(e.actions.astype(np.float32))
        done[i, :k] = torch.from_numpy(e.done)
        mask[i, :k] = 1.0
    batch = {"tokens": tokens, "actions": actions, "done": done, "mask": mask}
    return {k: v.to(device) for k, v in batch.items()}


@torch.inference_mode()
def end_scores(
    model: EndModel, episodes: list[EndEpisode], batch_size: int = 32
) -> dict[str, float]:
    """How well the hazard fits real episodes.

    - ``nll``: mean per-step BCE; ``constant_nll``: the same for the best constant
      hazard on these episodes (the share of steps that end an episode);
    - ``hazard_at_ends`` / ``hazard_elsewhere``: mean hazard on ending steps and on the others;
    - ``expected_ends`` / ``ends``: the summed hazard over all steps (the ends it
      expects) against the real count: equal when it is calibrated.
    """
    device = next(model.parameters()).device
    total, steps, at_ends, elsewhere, expected = 0.0, 0.0, 0.0, 0.0, 0.0
    ends = sum(float(e.done.sum()) for e in episodes)
    for i in range(0, len(episodes), batch_size):
        batch = _batch(episodes[i : i + batch_size], device)
        logits, mask, done = (
            model(batch["tokens"], batch["actions"]).float(),
            batch["mask"],
            batch["done"],
        )
        total += float(
            (F.binary_cross_entropy_with_logits(logits, done, reduction="none") * mask).sum()
        )
        hazard = torch.sigmoid(logits) * mask
        steps += float(mask.sum())
        at_ends += float((hazard * done).sum())
        elsewhere += float((hazard * (1 - done)).sum())
        expected += float(hazard.sum())
    rate = min(max(ends / max(steps, 1.0), 1e-9), 1 - 1e-9)
    constant = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    return {
        "nll": total / max(steps, 1.0),
        "constant_nll": constant,
        "hazard_at_ends": at_ends / max(ends, 1.0),
        "hazard_elsewhere": elsewhere / max(steps - ends, 1.0),
        "expected_ends": expected,
        "ends": ends,
        "steps": steps,
        "episodes": len(episodes),
    }


def train_end_model(
    train: list[EndEpisode],
    val: list[EndEpisode],
    config: EndConfig,
    *,
    epochs: int = 40,
    time_limit_min: float | None = None,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    init: EndModel | None = None,
) -> tuple[EndModel, dict[str, Any]]:
    """Train on ``train`` episodes; return the epoch with the lowest validation NLL and its info.

    ``init``: a trained end model to start from (a refit on more data); its config must be
    ``config``. Without it the model starts from a fresh initialisation.
    """
    if not train or not val:
        raise ValueError(
            f"an end model needs training and validation episodes, got {len(train)} and {len(val)}"
        )
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not any(e.done.any() for e in train):
        raise ValueError("no training episode ends by itself (no done flag): nothing to learn")
    device = torch.device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = EndModel(config).to(device)
    if init is not None:
        if init.config != config:
            raise ValueError(
                f"the starting end model's config {init.config} differs from {config}: "
                "a refit must keep the vocabulary, grid, state size, frame skip and scenario"
            )
        model.load_state_dict(init.state_dict(), strict=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    logger.info(
        "end model: %d parameters, %d training / %d validation episodes",
        sum(p.numel() for p in model.parameters()), len(train), len(val),
    )  # fmt: skip
    start = time.monotonic()
    best: dict[str, Any] = {"nll": math.inf}
    best_state, best_epoch, epoch = None, 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(len(train))
        bar = tqdm(
            range(0, len(order), batch_size), desc=f"end epoch {epoch}/{epochs}", leave=False
        )
        for i in bar:
            out = model.compute_loss(_batch([train[j] for j in order[i : i + batch_size]], device))
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{out.metrics['loss']:.4f}")
        model.eval()
        scores = end_scores(model, val)
        logger.info(
            "end epoch %d: validation NLL %.4f (constant hazard %.4f), hazard at ends %.3f vs %.4f "
            "elsewhere, %.1f ends expected of %d",
            epoch, scores["nll"], scores["constant_nll"], scores["hazard_at_ends"],
            scores["hazard_elsewhere"], scores["expected_ends"], scores["ends"],
        )  # fmt: skip
        if scores["nll"] < best["nll"]:
            best, best_epoch = scores, epoch
            best_state = copy.deepcopy(model.state_dict())
        if time_limit_min is not None and time.monotonic() - start >= 60 * time_limit_min:
            logger.info("time limit of %.1f min reached after epoch %d", time_limit_min, epoch)
            break
    model.load_state_dict(best_state)
    info = {
        "val": best,
        "epoch": best_epoch,
        "epochs_run": epoch,
        "elapsed_s": time.monotonic() - start,
        "train_episodes": len(train),
        "val_episodes": len(val),
        "frame_skip": config.frame_skip,
        "scenario": config.scenario,
    }
    return model.eval(), info


# --------------------------------------------------------------------------- checkpoints


def save_end_model(model: EndModel, path: str | Path, info: dict[str, Any]) -> Path:
    """Write the model to checkpoint folder ``path`` atomically (safetensors + config + training info)."""
    from elworld.checkpoint import save_checkpoint

    val = info.get("val", {})
    readme = "\n".join([
        "# Episode-end model", "",
        "A GRU over the episode's frame tokens and keys that gives the chance the real game ends "
        "at each step. The dream env draws its episode ends from it (terminated = a draw below the "
        "hazard) and control training weights rewards by the chance of still being alive.", "",
        f"- Frame skip: {model.config.frame_skip}; scenario: {model.config.scenario}",
        f"- Vision checkpoint whose tokens it reads: {info.get('vision_checkpoint')}",
        f"- Validation NLL per step: {val.get('nll', math.nan):.4f} "
        f"(constant hazard: {val.get('constant_nll', math.nan):.4f})",
        f"- Hazard at real ends {val.get('hazard_at_ends', math.nan):.3f}, elsewhere "
        f"{val.get('hazard_elsewhere', math.nan):.4f}; ends expected {val.get('expected_ends', math.nan):.1f} "
        f"of {val.get('ends', math.nan):.0f}",
        f"- Data: {info.get('data')} (validation: {info.get('val_data')})",
        f"- Command: `{info.get('command')}`", "",
    ])  # fmt: skip
    return save_checkpoint(
        path, model=model, config=model.config, training_info=info, readme=readme
    )


# --------------------------------------------------------------------------- CLI


def register_train(models: argparse._SubParsersAction) -> None:
    """Add ``elworld train end`` to the ``elworld train`` model subparsers."""
    parser = models.add_parser(
        "end",
        help="train the episode-end model the dream draws its episode ends from",
        description="Train the episode-end model: a GRU over an episode's frame tokens (from --vision) "
        "and keys that gives the chance the real game ends at each step. With it in OUT/end/best_model "
        "the dream env ends episodes as often as the recordings did, and control agents learn from it. "
        "Frames are tokenized once into the same token cache memory training uses. Keeps the epoch with "
        "the lowest validation NLL.",
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="folder of real training .npz episodes"
    )
    parser.add_argument(
        "--val-data", type=Path, default=None,
        help="folder of validation episodes (default: --val-fraction of --data)",
    )  # fmt: skip
    parser.add_argument(
        "--vision",
        type=Path,
        required=True,
        help="vision checkpoint folder whose tokens the model reads",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None,
        help="token cache root (default: DATA/.elworld-cache; tokens go to CACHE/tokens)",
    )  # fmt: skip
    add_small_model_arguments(parser, epochs=40)
    add_fit_arguments(
        parser, max_episodes_help="use only the first N episodes of --data (sorted by name)",
        val_fraction=0.05, val_help="share of --data held out for validation when --val-data is not given",
        batch_size=16, batch_unit="episodes", lr=3e-3, optimizer="Adam",
    )  # fmt: skip
    parser.add_argument(
        "--hidden", type=int, default=64, help="GRU state size (default: %(default)s)"
    )
    parser.add_argument(
        "--init-from", type=Path, default=None, metavar="DIR",
        help="start from this end-model checkpoint (e.g. checkpoints/end/best_model) instead of a "
        "fresh initialisation: a refit on more data; its config must match (--hidden is ignored)",
    )  # fmt: skip
    parser.set_defaults(func=run_train_end)


def run_train_end(args: argparse.Namespace) -> int:
    """``elworld train end``."""
    from elworld.checkpoint import best_model_dir, checkpoint_fingerprint
    from elworld.model.idm import sidecar_value
    from elworld.model.vision import VisionModel
    from elworld.train.distributed import resolve_device

    device = resolve_device(args.device)
    episodes = find_episodes(args.data)[: args.max_episodes]
    if args.val_data is not None:
        train_eps, val_eps = episodes, find_episodes(args.val_data)
    else:
        if len(episodes) < 2:
            raise ValueError(
                f"--data {args.data}: found {len(episodes)} episode(s); need at least 2"
            )
        train_eps, val_eps = split_episodes(episodes, args.val_fraction, args.seed)
    vision = VisionModel.from_checkpoint(args.vision, device=device)
    vc = vision.config
    cache = (
        args.cache_dir if args.cache_dir is not None else args.data / ".elworld-cache"
    ) / "tokens"
    files = build_token_cache(
        train_eps + val_eps, vision, checkpoint_fingerprint(args.vision), cache, device=device
    )
    del vision
    init = None
    if args.init_from is not None:
        init = EndModel.from_checkpoint(args.init_from, device=device)
    config = EndConfig(
        vocab_size=vc.codebook_size,
        tokens_per_frame=vc.grid_height * vc.grid_width,
        hidden=init.config.hidden if init is not None else args.hidden,
        frame_skip=sidecar_value(train_eps, "frame_skip"),
        scenario=sidecar_value(train_eps, "scenario"),
    )
    train = _load_episodes(train_eps, files[: len(train_eps)])
    val = _load_episodes(val_eps, files[len(train_eps) :])
    model, info = train_end_model(
        train, val, config, epochs=args.epochs, time_limit_min=args.time_limit,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=device,
        init=init,
    )  # fmt: skip
    info |= {
        "command": command_line(),
        "data": str(args.data),
        "val_data": str(args.val_data)
        if args.val_data is not None
        else f"{args.val_fraction} of --data",
        "vision_checkpoint": str(args.vision),
        "vision_fingerprint": checkpoint_fingerprint(args.vision),
        "init_from": str(args.init_from) if args.init_from is not None else None,
        **({"started_from": start_record(args.init_from, "--init-from")} if args.init_from else {}),
        "config": asdict(config),
    }
    path = save_end_model(model, best_model_dir(args.out, "end"), info)
    logger.info(
        "end model saved to %s: validation NLL %.4f (constant hazard %.4f)",
        path, info["val"]["nll"], info["val"]["constant_nll"],
    )  # fmt: skip
    return 0
