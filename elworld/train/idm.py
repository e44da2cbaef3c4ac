"""``elworld train idm``: the inverse-dynamics model's windows, training loop, checkpoint and command.

The network, its inputs and its scores are ``elworld.model.idm``.
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
from tqdm import tqdm

from elworld.cli_args import add_fit_arguments, add_small_model_arguments, command_line
from elworld.data import find_episodes, iter_frames, read_labels, split_episodes
from elworld.keys import KEY_INDEX
from elworld.model.idm import (
    MIRROR_PAIRS,
    IDMConfig,
    InverseDynamicsModel,
    _predict_windows,
    effective_keys,
    frames_to_bands,
    idm_config_for,
    labels_text,
    macro_f1,
    opposing_pairs,
)

logger = logging.getLogger(__name__)


@dataclass
class _Windows:
    """Episodes' bands back to back, with the frames that have a full window."""

    bands: np.ndarray  # (F, bands, cols) float16
    labels: np.ndarray  # (F, K) float32: the scored effective keys held at each step
    steps: np.ndarray  # (S,) int64: indices t with frames t - before .. t + after in one episode

    def batch(self, steps: np.ndarray, config: IDMConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows ``(B, window, bands, cols)`` and key labels ``(B, K)`` of ``steps``."""
        index = steps[:, None] + np.arange(-config.before, config.after + 1)  # (B, window)
        return torch.from_numpy(self.bands[index]).float(), torch.from_numpy(self.labels[steps])


def _load_windows(episodes: list[Path], config: IDMConfig, desc: str) -> _Windows:
    columns = [KEY_INDEX[k] for k in config.keys]
    bands, labels, steps, offset = [], [], [], 0
    for path in tqdm(episodes, desc=desc, unit="episode", leave=False):
        chunks = iter_frames(path, height=config.image_height, width=config.image_width)
        episode = torch.cat([frames_to_bands(c, config.bands, config.cols) for c in chunks])
        n = len(episode)
        bands.append(episode.half().numpy())
        act = read_labels(path)["act"]
        labels.append(effective_keys(act, opposing_pairs(config))[:, columns].astype(np.float32))
        steps.append(offset + np.arange(config.before, n - config.after))
        offset += n
    return _Windows(np.concatenate(bands), np.concatenate(labels), np.concatenate(steps))


def _mirror_columns(keys: tuple[str, ...]) -> np.ndarray | None:
    """Label permutation for a left/right mirrored window (None: a mirror pair is half scored)."""
    index = {k: i for i, k in enumerate(keys)}
    order = list(range(len(keys)))
    for a, b in MIRROR_PAIRS:
        if (a in index) != (b in index):
            return None
        if a in index:
            order[index[a]], order[index[b]] = index[b], index[a]
    return np.array(order)


def _validate(model: InverseDynamicsModel, data: _Windows, batch: int) -> dict[str, Any]:
    model.eval()
    preds = []
    for i in range(0, len(data.steps), batch):
        windows, _ = data.batch(data.steps[i : i + batch], model.config)
        preds.append(_predict_windows(model, windows, batch))
    return macro_f1(np.concatenate(preds), data.labels[data.steps] > 0.5, model.config.keys)


def train_idm(
    train_episodes: list[Path],
    val_episodes: list[Path],
    config: IDMConfig,
    *,
    epochs: int = 30,
    time_limit_min: float | None = None,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[InverseDynamicsModel, dict[str, Any]]:
    """Train an IDM on real episodes; return the best one on ``val_episodes`` and its training info.

    Stops after ``epochs``, or after the epoch in which ``time_limit_min`` minutes
    have passed. The info holds the validation macro-F1 and per-key F1.
    """
    if not train_episodes or not val_episodes:
        raise ValueError(
            f"an IDM needs training and validation episodes, got {len(train_episodes)} and {len(val_episodes)}"
        )
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    device = torch.device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_data = _load_windows(train_episodes, config, "loading training episodes")
    val_data = _load_windows(val_episodes, config, "loading validation episodes")
    if not len(train_data.steps) or not len(val_data.steps):
        raise ValueError(f"episodes are too short for a {config.window}-frame window")
    mirror = _mirror_columns(config.keys) if config.mirror else None
    if mirror is None and config.mirror:
        logger.warning("keys %s hold half of a mirror pair: no mirror augmentation", config.keys)
    model = InverseDynamicsModel(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    logger.info(
        "IDM: %d parameters, keys %s, %d training / %d validation windows",
        sum(p.numel() for p in model.parameters()), ", ".join(config.keys),
        len(train_data.steps), len(val_data.steps),
    )  # fmt: skip
    start = time.monotonic()
    best: dict[str, Any] = {"macro_f1": -math.inf}
    best_state, best_epoch, epoch = None, 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(train_data.steps)
        bar = tqdm(
            range(0, len(order), batch_size), desc=f"idm epoch {epoch}/{epochs}", leave=False
        )
        for i in bar:
            windows, keys = train_data.batch(order[i : i + batch_size], config)
            if mirror is not None:
                flip = torch.from_numpy(rng.random(len(keys)) < 0.5)
                windows[flip] = windows[flip].flip(-1)
                keys[flip] = keys[flip][:, torch.from_numpy(mirror)]
            out = model.compute_loss({"windows": windows.to(device), "keys": keys.to(device)})
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{out.metrics['loss']:.3f}")
        scores = _validate(model, val_data, 4 * batch_size)
        per_key = ", ".join(f"{k} {v:.3f}" for k, v in scores["per_key"].items())
        logger.info(
            "idm epoch %d: validation macro-F1 %.3f (%s)", epoch, scores["macro_f1"], per_key
        )
        if scores["macro_f1"] > best["macro_f1"] or best_state is None:
            best, best_epoch = scores, epoch
            best_state = copy.deepcopy(model.state_dict())
        if time_limit_min is not None and time.monotonic() - start >= 60 * time_limit_min:
            logger.info("time limit of %.1f min reached after epoch %d", time_limit_min, epoch)
            break
    model.load_state_dict(best_state)
    info = {
        "val_macro_f1": best["macro_f1"],
        "val_f1": best["per_key"],
        "val_support": best["support"],
        "val_windows": best["windows"],
        "epoch": best_epoch,
        "epochs_run": epoch,
        "elapsed_s": time.monotonic() - start,
        "train_episodes": len(train_episodes),
        "val_episodes": len(val_episodes),
        "frame_skip": config.frame_skip,
        "scenario": config.scenario,
        "labels": labels_text(config),
    }
    return model.eval(), info


# --------------------------------------------------------------------------- checkpoints


def save_idm(model: InverseDynamicsModel, path: str | Path, info: dict[str, Any]) -> Path:
    """Write the IDM to checkpoint folder ``path`` atomically (safetensors + config.json + training_info.json)."""
    from elworld.checkpoint import save_checkpoint

    cfg = model.config
    f1 = ", ".join(f"{k} {v:.3f}" for k, v in info.get("val_f1", {}).items())
    readme = "\n".join([
        "# Inverse-dynamics model (evaluation instrument)", "",
        "Names the keys held at step t from real frames t-before .. t+after; `elworld eval --idm` "
        "scores dream transitions with it. Trained on real training episodes only.", "",
        f"- Keys scored: {', '.join(cfg.keys)}",
        f"- Labels: {info.get('labels', 'raw recorded keys')}",
        f"- Frame skip: {cfg.frame_skip}; scenario: {cfg.scenario}",
        f"- Validation macro-F1: {info.get('val_macro_f1', math.nan):.3f} ({f1})",
        f"- Data: {info.get('data')}", f"- Command: `{info.get('command')}`", "",
        "```python", "from elworld.model.idm import InverseDynamicsModel", "",
        'idm = InverseDynamicsModel.from_checkpoint("path/to/this/folder")', "```", "",
    ])  # fmt: skip
    return save_checkpoint(path, model=model, config=cfg, training_info=info, readme=readme)


# --------------------------------------------------------------------------- CLI


def register_train(models: argparse._SubParsersAction) -> None:
    """Add ``elworld train idm`` to the ``elworld train`` model subparsers."""
    parser = models.add_parser(
        "idm",
        help="train the inverse-dynamics model that `elworld eval --idm` scores dreams with",
        description="Train an inverse-dynamics model (IDM): from real frames t-1..t+2 it names the keys held "
        "at step t. It is an evaluation instrument for controllability, not part of the world model: "
        "`elworld eval --idm` scores dream transitions driven by known keys with it. Train it on REAL "
        "training episodes, never on the held-out ones it will evaluate. Writes OUT/idm/best_model/ "
        "(the epoch with the best validation macro-F1 on held-out training episodes).",
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="folder of real training .npz episodes"
    )
    add_small_model_arguments(parser, epochs=30)
    add_fit_arguments(
        parser,
        max_episodes_help="use only the first N episodes (sorted by name); ~50 are enough, ~200 are better",
        val_fraction=0.1, val_help="share of the episodes held out for validation",
        batch_size=64, batch_unit="windows", lr=2e-3, optimizer="AdamW",
    )  # fmt: skip
    parser.add_argument(
        "--width", type=int, default=64, help="conv channels (default: %(default)s)"
    )
    parser.add_argument(
        "--mirror", action=argparse.BooleanOptionalAction, default=None,
        help="mirror half of each batch left/right, swapping left/right and a/d labels (for "
        "games that look the same mirrored; default: on when the keys pressed include left and "
        "right, or a and d)",
    )  # fmt: skip
    parser.add_argument(
        "--cancel-opposing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="label opposing keys held together (left+right, up+down, a+d) as neither, as they "
        "act in ViZDoom (default: on for ViZDoom recordings, off for other games)",
    )
    parser.set_defaults(func=run_train_idm)


def run_train_idm(args: argparse.Namespace) -> int:
    """``elworld train idm``."""
    from elworld.checkpoint import best_model_dir
    from elworld.train.distributed import resolve_device

    if args.max_episodes is not None and args.max_episodes < 2:
        raise ValueError(
            f"--max-episodes must be >= 2 (one is held out for validation), got {args.max_episodes}"
        )
    episodes = find_episodes(args.data)[: args.max_episodes]
    if len(episodes) < 2:
        raise ValueError(
            f"--data {args.data}: found {len(episodes)} episode(s); an IDM needs at least 2"
        )
    train_eps, val_eps = split_episodes(episodes, args.val_fraction, args.seed)
    config = idm_config_for(
        train_eps, width=args.width, mirror=args.mirror, cancel_opposing=args.cancel_opposing
    )
    model, info = train_idm(
        train_eps, val_eps, config, epochs=args.epochs, time_limit_min=args.time_limit,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=resolve_device(args.device),
    )  # fmt: skip
    info |= {
        "command": command_line(),
        "data": str(args.data),
        "config": asdict(config),
    }
    path = save_idm(model, best_model_dir(args.out, "idm"), info)
    per_key = ", ".join(f"{k} {v:.3f}" for k, v in info["val_f1"].items())
    logger.info(
        "IDM saved to %s: validation macro-F1 %.3f (%s)", path, info["val_macro_f1"], per_key
    )
    return 0
