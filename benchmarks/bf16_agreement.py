"""How far do the bf16 dream passes move the argmax next token from fp32, on real episodes?

Encodes held-out recordings with the world's vision model and, at every step,
compares the memory model's argmax next tokens (one conditional pass, real
context and keys) in fp32 with those of the two bf16 ways: autocast over the
fp32 weights (the landed path, still ``elworld eval``'s) and the bf16
``MemoryModel.inference_copy`` the dream now runs.

    python benchmarks/bf16_agreement.py --checkpoints runs/world_distilled --data data/tc4/heldout
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from elworld.frames import frames_to_tensor
from elworld.model.memory import MemoryModel
from elworld.model.vision import VisionModel
from elworld.world.loading import resolve_checkpoints


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The world, the recordings and how much of them to read."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", default=None, help="world root (default: the bundled)")
    parser.add_argument("--data", required=True, help="folder of held-out .npz recordings")
    parser.add_argument("--episodes", type=int, default=6, help="episodes read, by name order")
    parser.add_argument("--steps", type=int, default=120, help="frames read per episode")
    parser.add_argument("--batch", type=int, default=8, help="steps per memory pass")
    return parser.parse_args(argv)


@torch.inference_mode()
def main(argv: list[str] | None = None) -> int:
    """Print each bf16 way's share of cells whose argmax token equals fp32's."""
    args = parse_args(argv)
    paths = resolve_checkpoints(args.checkpoints, None, None, False)
    vision = VisionModel.from_checkpoint(paths.vision)
    memory = MemoryModel.from_checkpoint(paths.memory)
    copy = memory.inference_copy(torch.bfloat16)
    agree = {"bf16 autocast": 0, "bf16 weight copy": 0}
    cells = 0
    for file in sorted(Path(args.data).glob("*.npz"))[: args.episodes]:
        with np.load(file) as episode:
            frames, keys = episode["obs"][: args.steps], episode["act"][: args.steps]
        tokens = torch.cat(
            [
                vision.encode(frames_to_tensor(frames[i : i + 16])).flatten(1)
                for i in range(0, len(frames), 16)
            ]
        )  # (n, T)
        for low in range(1, len(tokens) - 1, args.batch):
            rows = slice(low, min(low + args.batch, len(tokens) - 1))
            current, action = tokens[rows], torch.as_tensor(keys[rows]).float()
            context = tokens[rows.start - 1 : rows.stop - 1, None]  # (b, 1, T): K = 2
            exact = memory(current, action, context).logits.argmax(-1)  # (b, T)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                autocast = memory(current, action, context).logits.argmax(-1)
            fast = copy(current, action, context).logits.argmax(-1)
            agree["bf16 autocast"] += int((autocast == exact).sum())
            agree["bf16 weight copy"] += int((fast == exact).sum())
            cells += exact.numel()
    for name, count in agree.items():
        print(f"{name:<17} argmax next token = fp32's on {count / cells:.2%} of {cells:,} cells")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
