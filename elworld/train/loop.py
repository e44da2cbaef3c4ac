"""The training loop every model shares.

A model plugs in through ``compute_loss(batch) -> LossOutput``. The loop owns
what every run needs: seeded per-epoch data order, AdamW with warm-up and
cosine decay, bf16 autocast (``precision``, CPU and CUDA), gradient clipping, validation each epoch,
atomic epoch checkpoints, ``best_model`` replaced on lower validation loss,
pruning to the last K epochs, and ``--resume`` from optimizer, scheduler,
epoch and RNG state. Under ``torchrun`` it wraps the model in DDP; every rank
reads its own share of episodes and only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from elworld import checkpoint
from elworld.model.common import autocast, resolve_precision
from elworld.train.distributed import DistInfo, all_reduce_min, all_reduce_sum, barrier

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings shared by every model's training."""

    out: Path = Path("checkpoints")  # checkpoint root (holds vision/, memory/, control/)
    epochs: int = 10
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    steps_per_epoch: int | None = None  # cap on optimizer steps per epoch (None: one full pass)
    val_batches: int | None = None  # cap on validation batches (None: the whole split)
    seed: int = 0
    num_workers: int = 0
    keep_last: int | None = 3  # epoch checkpoints to keep (None: all)
    resume: bool = False
    # Continue from this checkpoint folder (an epoch checkpoint or a best_model with its
    # optimizer, scheduler and trainer state, e.g. the bundled world's), writing to out.
    resume_from: Path | None = None
    precision: str = (
        "auto"  # "bf16": autocast matmuls (CPU, CUDA); "fp32": off; "auto": bf16 where native
    )
    time_limit_min: float | None = None  # stop after the epoch in which this many minutes pass
    compile: bool = (
        False  # torch.compile the loss (fuses casts and elementwise ops; slow first steps)
    )
    info: dict[str, Any] = field(default_factory=dict)  # extra facts for training_info.json


class _LossModule(nn.Module):
    """Routes ``forward(batch)`` to ``compute_loss`` so DDP's hooks see each step."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.model.compute_loss(batch)
        return out.loss, out.metrics


def _lr_lambda(warmup: int, total: int):
    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return schedule


def _batches(
    dataset: Dataset, cfg: TrainConfig, epoch: int, rank: int, shuffle: bool
) -> DataLoader:
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch * 1_009 + rank)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        drop_last=shuffle,
        generator=generator,
        num_workers=cfg.num_workers,
        persistent_workers=False,
    )


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def _autocast(cfg: TrainConfig, device: torch.device):
    return autocast(device, cfg.precision)


def _take(loader: DataLoader, limit: int | None) -> Iterator[dict[str, torch.Tensor]]:
    for index, batch in enumerate(loader):
        if limit is not None and index >= limit:
            return
        yield batch


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Dataset, cfg: TrainConfig, dist_info: DistInfo
) -> dict[str, float]:
    """Mean of each ``compute_loss`` metric over the validation split (all ranks pooled)."""
    model.eval()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for batch in _take(_batches(dataset, cfg, 0, dist_info.rank, shuffle=False), cfg.val_batches):
        batch = _to_device(batch, dist_info.device)
        with _autocast(cfg, dist_info.device):
            metrics = model.compute_loss(batch).metrics
        size = next(iter(batch.values())).shape[0]
        for key, value in metrics.items():  # some metrics exist only for some batches
            sums[key] = sums.get(key, 0.0) + float(value) * size
            counts[key] = counts.get(key, 0.0) + size
    keys = sorted(sums)
    local = torch.tensor(
        [sums[k] for k in keys] + [counts[k] for k in keys],
        dtype=torch.float64,
        device=dist_info.device,
    )
    totals = all_reduce_sum(local, dist_info)
    return {
        key: float(totals[i]) / max(1.0, float(totals[len(keys) + i])) for i, key in enumerate(keys)
    }


def resume_point(cfg: TrainConfig, kind: str) -> tuple[int, Path]:
    """The epoch done and the folder a resumed run starts from.

    ``--resume``: the newest epoch checkpoint under ``cfg.out``. ``--resume-from DIR``:
    ``DIR`` itself, an epoch checkpoint or a ``best_model`` (the epoch comes from its
    ``trainer_state.pth``), as long as it holds the optimizer, scheduler and trainer
    state a resume needs. Raises ``FileNotFoundError`` naming what is missing.
    """
    if cfg.resume and cfg.resume_from is not None:
        raise ValueError(
            "pass --resume (the newest epoch under --out) or --resume-from DIR, not both"
        )
    if cfg.resume_from is None:
        found = checkpoint.list_epoch_checkpoints(cfg.out, kind)
        if not found:
            raise FileNotFoundError(
                f"--resume: no {kind} epoch checkpoint under {checkpoint.kind_dir(cfg.out, kind)}"
            )
        return found[-1]
    folder = Path(cfg.resume_from)
    needed = ("model.safetensors", "optimizer.pth", "scheduler.pth", "trainer_state.pth")
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"--resume-from {folder}: no {', '.join(missing)} there (a resume needs the model, "
            "optimizer, scheduler and trainer state; a checkpoint without them can only be "
            "evaluated or used as a starting point by hand)"
        )
    state = checkpoint.load_training_state(folder)["trainer_state"] or {}
    if "epoch" not in state:
        raise FileNotFoundError(f"--resume-from {folder}: trainer_state.pth records no epoch")
    return int(state["epoch"]), folder


def train(
    model: nn.Module,
    model_config: Any,
    train_set: Dataset,
    val_set: Dataset,
    cfg: TrainConfig,
    dist_info: DistInfo,
) -> dict[str, Any]:
    """Train ``model`` and write checkpoints under ``cfg.out/<model.kind>/``.

    Returns a summary: epochs run, best validation loss and the best checkpoint path.
    """
    kind = model.kind
    device = dist_info.device
    # "auto" is resolved once, so the checkpoint records the precision that was used.
    cfg = replace(cfg, precision=resolve_precision(cfg.precision, device))
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model.to(device)

    steps_per_epoch = len(train_set) // cfg.batch_size
    if cfg.steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.steps_per_epoch)
    steps_per_epoch = all_reduce_min(steps_per_epoch, dist_info)
    if steps_per_epoch < 1:
        raise ValueError(
            f"the training split has {len(train_set)} samples on rank {dist_info.rank}, fewer than "
            f"--batch-size {cfg.batch_size}: record more episodes or lower --batch-size"
        )
    total_steps = steps_per_epoch * cfg.epochs

    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(cfg.warmup_steps, total_steps)
    )

    start_epoch, best_val, global_step, elapsed_before = 1, math.inf, 0, 0.0
    if cfg.resume or cfg.resume_from is not None:
        last_epoch, last_path = resume_point(cfg, kind)
        state = checkpoint.load_training_state(last_path)
        model.load_state_dict(checkpoint.load_state_dict(last_path), strict=True)
        model.to(device)
        if state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        if state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        trainer_state = state["trainer_state"] or {}
        start_epoch = last_epoch + 1
        # --resume continues this run, best model included; --resume-from DIR starts a new run
        # under --out (often on other data), whose best model is chosen among its own epochs.
        if cfg.resume:
            best_val = float(trainer_state.get("best_val", math.inf))
        global_step = int(trainer_state.get("global_step", 0))
        elapsed_before = float(trainer_state.get("elapsed_s", 0.0))
        if "rng" in trainer_state:
            checkpoint.set_rng_state(trainer_state["rng"])
        if dist_info.is_main:
            logger.info("resuming %s training from %s (epoch %d done)", kind, last_path, last_epoch)

    net: nn.Module = _LossModule(model)
    if dist_info.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(net, device_ids=device_ids)
    if cfg.compile:  # the model's own parameters are trained and saved; compile only wraps
        net = torch.compile(net)

    started = time.monotonic()
    history: list[dict[str, float]] = []
    best_path = checkpoint.best_model_dir(cfg.out, kind)
    epoch = start_epoch - 1
    for epoch in range(start_epoch, cfg.epochs + 1):
        model.train()
        loader = _batches(train_set, cfg, epoch, dist_info.rank, shuffle=True)
        bar = tqdm(
            _take(loader, steps_per_epoch),
            total=steps_per_epoch,
            desc=f"{kind} epoch {epoch}/{cfg.epochs}",
            disable=not dist_info.is_main,
            dynamic_ncols=True,
        )
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        tick = time.monotonic()
        for step, batch in enumerate(bar, start=1):
            batch = _to_device(batch, device)
            with _autocast(cfg, device):
                loss, metrics = net(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            global_step += 1
            for key, value in metrics.items():  # some metrics exist only for some batches
                sums[key] = sums.get(key, 0.0) + float(value)
                counts[key] = counts.get(key, 0) + 1
            rate = step * cfg.batch_size * dist_info.world_size / max(1e-9, time.monotonic() - tick)
            bar.set_postfix(
                loss=f"{float(loss.detach()):.4f}",
                samples_per_s=f"{rate:.1f}",
                lr=f"{scheduler.get_last_lr()[0]:.2e}",
            )
        train_metrics = {f"train_{k}": v / counts[k] for k, v in sums.items()}
        val_metrics = {f"val_{k}": v for k, v in evaluate(model, val_set, cfg, dist_info).items()}
        val_loss = val_metrics.get("val_loss", math.inf)
        elapsed = elapsed_before + time.monotonic() - started
        record = {"epoch": epoch, **train_metrics, **val_metrics}
        history.append(record)
        improved = val_loss < best_val
        best_val = min(best_val, val_loss)

        if dist_info.is_main:
            logger.info(
                "%s epoch %d: %s",
                kind,
                epoch,
                ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"),
            )
            info = {
                **cfg.info,
                "kind": kind,
                "epoch": epoch,
                "global_step": global_step,
                "metrics": record,
                "best_val_loss": best_val,
                "lr": scheduler.get_last_lr()[0],
                "elapsed_s": round(elapsed, 1),
                "world_size": dist_info.world_size,
                "device": str(device),
                "train_config": {
                    k: str(v) if isinstance(v, Path) else v
                    for k, v in asdict(cfg).items()
                    if k != "info"
                },
            }
            trainer_state = {
                "epoch": epoch,
                "global_step": global_step,
                "best_val": best_val,
                "elapsed_s": elapsed,
                "rng": checkpoint.rng_state(),
            }
            epoch_path = checkpoint.epoch_checkpoint_dir(cfg.out, kind, epoch)
            checkpoint.save_checkpoint(
                epoch_path,
                model=model,
                config=model_config,
                training_info=info,
                optimizer=optimizer,
                scheduler=scheduler,
                trainer_state=trainer_state,
            )
            if improved:
                checkpoint.copy_checkpoint(epoch_path, best_path)
                logger.info("new best %s model (val_loss %.4f) -> %s", kind, val_loss, best_path)
            if cfg.keep_last is not None:
                checkpoint.prune_epoch_checkpoints(cfg.out, kind, cfg.keep_last)
        barrier(dist_info)
        out_of_time = (
            cfg.time_limit_min is not None
            and (time.monotonic() - started) / 60 >= cfg.time_limit_min
        )
        if all_reduce_min(int(not out_of_time), dist_info) == 0:  # any rank out of time stops all
            if dist_info.is_main:
                logger.info(
                    "time limit of %.1f min reached after epoch %d", cfg.time_limit_min, epoch
                )
            break
    return {
        "epochs_run": epoch - start_epoch + 1,
        "last_epoch": epoch,
        "best_val_loss": best_val,
        "best_model": best_path,
        "history": history,
    }
