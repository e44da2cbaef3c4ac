"""Training throughput of the vision and memory models, as shares of the matmul peak.

One run measures, on the same machine and device:

1. the machine's matmul peak: the better of float32 and bfloat16 (best of a
   few large matmuls each);
2. vision (VQ-VAE) training: frames/s at a batch size, and the FLOP/s that
   implies (FLOPs of one training step counted with ``torch.utils.flop_counter``:
   forward and backward) as a share of the peak;
3. memory (transformer) training: samples/s and its share of the peak,
   for each ``--precisions`` (bf16 autocast or float32) and ``--attentions``
   (full or axial) setting.

Batches are random data of the real shapes (192x256 frames, 768-token grids):
the cost of a step does not depend on the pixel values.

    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --vision-width 24 --n-embd 128 --steps 5
    python benchmarks/train_throughput.py --attentions axial --precisions bf16
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from elworld.model.common import autocast
from elworld.model.memory import MemoryConfig, MemoryModel
from elworld.model.vision import VisionConfig, VisionModel
from elworld.train.distributed import resolve_device

from common import best_matmul_peak, synchronize


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: %(default)s)")
    parser.add_argument(
        "--steps", type=int, default=8, help="timed training steps per model (default: %(default)s)"
    )
    parser.add_argument(
        "--vision-batch", type=int, default=16, help="vision batch size (default: %(default)s)"
    )
    parser.add_argument(
        "--vision-width",
        type=int,
        default=VisionConfig.width,
        help="VisionConfig.width (default: %(default)s)",
    )
    parser.add_argument(
        "--memory-batch", type=int, default=8, help="memory batch size (default: %(default)s)"
    )
    parser.add_argument(
        "--n-embd",
        type=int,
        default=MemoryConfig.n_embd,
        help="MemoryConfig.n_embd (default: %(default)s)",
    )
    parser.add_argument(
        "--n-layer",
        type=int,
        default=MemoryConfig.n_layer,
        help="MemoryConfig.n_layer (default: %(default)s)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time the memory model's training step under torch.compile (slow warm-up)",
    )
    parser.add_argument(
        "--precisions",
        default="fp32,bf16",
        help="comma-separated precisions to train in: fp32, bf16 (default: %(default)s)",
    )
    parser.add_argument(
        "--attentions",
        default="full,axial",
        help="comma-separated memory attention kinds: full, axial (default: %(default)s)",
    )
    parser.add_argument(
        "--matmul-size",
        type=int,
        default=2048,
        help="side of the peak-measuring matmul (default: %(default)s)",
    )
    return parser.parse_args(argv)


def vision_batch(batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    return {"frames": torch.randint(0, 256, (batch, 192, 256, 3), dtype=torch.uint8, device=device)}


def memory_batch(batch: int, config: MemoryConfig, device: torch.device) -> dict[str, torch.Tensor]:
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


def train_rate(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    steps: int,
    device: torch.device,
    precision: str = "fp32",
    compile_loss: bool = False,
) -> tuple[float, int]:
    """Training steps per second (after warm-up steps) and the FLOPs of one step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    compute_loss = torch.compile(model.compute_loss) if compile_loss else model.compute_loss

    def step(loss_fn=compute_loss) -> None:
        with autocast(device, precision):
            loss = loss_fn(batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up (also initialises the VQ codebook, and compiles)
    if compile_loss:
        step()  # the backward graph compiles on the second step
    counter = FlopCounterMode(display=False)
    with counter:  # counted on the eager step: compiled kernels bypass the counter
        step(model.compute_loss)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps / (time.perf_counter() - start), int(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    peak, peak_dtype = best_matmul_peak(args.matmul_size, device)
    print(
        f"device {device}, {torch.get_num_threads()} threads; best matmul peak "
        f"{peak / 1e9:,.1f} GFLOP/s ({peak_dtype}, {args.matmul_size}^2)"
    )
    precisions = args.precisions.split(",")
    for precision in precisions:
        vision = VisionModel(VisionConfig(width=args.vision_width)).to(device).train()
        batch = vision_batch(args.vision_batch, device)
        rate, flops = train_rate(vision, batch, args.steps, device, precision)
        print(
            f"vision  width {args.vision_width:>3}, batch {args.vision_batch:>3}, {precision}: "
            f"{rate * args.vision_batch:7.1f} frames/s, {flops / 1e9:6.1f} GFLOP/step, "
            f"{rate * flops / peak:6.1%} of peak"
        )
    for attention in args.attentions.split(","):
        for precision in precisions:
            config = MemoryConfig(n_embd=args.n_embd, n_layer=args.n_layer, attention=attention)
            memory = MemoryModel(config).to(device).train()
            batch = memory_batch(args.memory_batch, config, device)
            for compiled in (False, True) if args.compile else (False,):
                rate, flops = train_rate(memory, batch, args.steps, device, precision, compiled)
                print(
                    f"memory  {attention:>5} n_embd {args.n_embd:>3} x {args.n_layer} layers, "
                    f"batch {args.memory_batch:>3}, {precision}{', compiled' if compiled else ''}: "
                    f"{rate * args.memory_batch:7.1f} samples/s, {flops / 1e9:6.1f} GFLOP/step, "
                    f"{rate * flops / peak:6.1%} of peak"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
