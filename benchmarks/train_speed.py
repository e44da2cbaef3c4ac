"""Training speed by precision on this machine: bf16 / fp32 ratios measured in one run.

Prints the CPU's kind (model, bf16-relevant flags, what torch reports, what
``precision="auto"`` chooses), then trains, interleaved round by round so that
a noisy (shared) machine slows every variant alike:

- the memory model in fp32 and in bf16 autocast (samples/s; ``"auto"``
  trains in whichever of the two the machine line names);
- the vision model in fp32 (its default) and in bf16 autocast (frames/s).

Each variant is a fresh model of the world's architecture (the configs of
``--checkpoints``), its own AdamW and the trainer's gradient clipping, on random
batches of the real shapes (the cost of a step does not depend on the values).
A figure is the median over rounds (and the best round, the least disturbed);
a ratio is of the medians.

    python benchmarks/train_speed.py                       # bundled world's configs
    python benchmarks/train_speed.py --rounds 5 --steps 4
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import torch

from elworld.checkpoint import load_config
from elworld.model.common import autocast
from elworld.model.memory import MemoryConfig, MemoryModel
from elworld.model.vision import VisionConfig, VisionModel
from elworld.train.distributed import resolve_device
from elworld.world.loading import resolve_checkpoints

from common import cpu_kind, synchronize


@dataclass
class Args:
    """Benchmark settings; help text in ``HELP``."""

    checkpoints: str | None = None
    device: str = "auto"
    memory_batch: int = 16
    vision_batch: int = 16
    steps: int = 3
    rounds: int = 4
    threads: int = 0
    quick: bool = False


HELP = {
    "checkpoints": "world whose model configs are trained (default: $ELWORLD_CHECKPOINTS, else the bundled demo)",
    "device": "auto | cpu | cuda",
    "memory_batch": "memory training batch size (the bundled world's: 16)",
    "vision_batch": "vision training batch size (the bundled world's: 16)",
    "steps": "timed optimizer steps per variant per round",
    "rounds": "interleaved rounds (each runs every variant once)",
    "threads": "torch CPU threads (0: torch's default)",
    "quick": "tiny numbers (a smoke run, not a measurement)",
}


def parse_args(argv: list[str] | None = None) -> Args:
    """Parse ``argv`` into ``Args``; ``--quick`` shrinks every count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for field in fields(Args):
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            parser.add_argument(flag, action="store_true", help=HELP[field.name])
        else:
            kind = {"int": int}.get(str(field.type), str)
            parser.add_argument(flag, type=kind, default=field.default, help=HELP[field.name])
    args = Args(**vars(parser.parse_args(argv)))
    if args.quick:
        args.steps, args.rounds, args.memory_batch, args.vision_batch = 1, 2, 2, 2
    return args


def vision_batch(batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Random uint8 frames ``(batch, 192, 256, 3)``: a vision training batch."""
    return {"frames": torch.randint(0, 256, (batch, 192, 256, 3), dtype=torch.uint8, device=device)}


def memory_batch(batch: int, config: MemoryConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """A memory training batch of random tokens and keys, every row with a target and heads."""
    T, K = config.tokens_per_frame, config.context_frames
    ones = torch.ones(batch, dtype=torch.bool, device=device)
    return {
        "context": torch.randint(0, config.vocab_size, (batch, K, T), device=device),
        "action": (torch.rand(batch, config.action_dim, device=device) < 0.2).float(),
        "target": torch.randint(0, config.vocab_size, (batch, T), device=device),
        "has_target": ones,
        "reward": torch.zeros(batch, device=device),
        "done": torch.zeros(batch, device=device),
        "has_reward": ones,
        "has_done": ones,
    }


def trainer(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], precision: str, device: torch.device
) -> Callable[[], None]:
    """One optimizer step of ``model`` on ``batch``, as ``elworld.train.loop`` takes it."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    model.train()

    def step() -> None:
        with autocast(device, precision):
            loss = model.compute_loss(batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def interleaved(
    variants: dict[str, Callable[[], None]], rows: int, args: Args, device: torch.device
) -> dict[str, list[float]]:
    """Rows per second of each variant, one figure per round, the variants taking turns."""
    for step in variants.values():  # warm-up (the VQ codebook initialises on its first batch)
        step()
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            synchronize(device)
            rates[name].append(rows * args.steps / (time.perf_counter() - start))
    return rates


def report(title: str, unit: str, rates: dict[str, list[float]]) -> None:
    """Print each variant's median and best round, and bf16 / fp32 of the medians."""
    print(f"\n== {title} ({unit}; median of rounds, best round in brackets)")
    for name, values in rates.items():
        print(f"{name:<6} {np.median(values):8.1f}  [{max(values):7.1f}]   rounds: "
              + " ".join(f"{v:.1f}" for v in values))  # fmt: skip
    ratio = np.median(rates["bf16"]) / np.median(rates["fp32"])
    print(f"bf16 / fp32: {ratio:.2f}x")


def main(argv: list[str] | None = None) -> int:
    """Measure and print the report."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print("\n".join(cpu_kind()))
    paths = resolve_checkpoints(args.checkpoints, None, None, False)
    memory_config = load_config(paths.memory, MemoryConfig)
    vision_config = load_config(paths.vision, VisionConfig)
    print(
        f"device {device}; world {paths.root}: memory {memory_config.n_layer} x "
        f"{memory_config.n_embd} {memory_config.attention}, batch {args.memory_batch}; vision "
        f"width {vision_config.width}, batch {args.vision_batch}; {args.steps} steps x "
        f"{args.rounds} rounds per variant"
    )
    torch.manual_seed(0)
    batch = memory_batch(args.memory_batch, memory_config, device)
    memory = {
        precision: trainer(MemoryModel(memory_config).to(device), batch, precision, device)
        for precision in ("fp32", "bf16")
    }
    report(
        "memory training",
        "samples/s",
        interleaved(memory, args.memory_batch, args, device),
    )
    frames = vision_batch(args.vision_batch, device)
    vision = {
        precision: trainer(VisionModel(vision_config).to(device), frames, precision, device)
        for precision in ("fp32", "bf16")
    }
    report("vision training", "frames/s", interleaved(vision, args.vision_batch, args, device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
