"""Small types shared by every trainable model."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

PRECISIONS = ("bf16", "fp32")


@dataclass
class LossOutput:
    """What ``compute_loss(batch)`` returns for every trainable model.

    ``loss`` is the scalar to backpropagate; ``metrics`` are plain floats for
    logs and progress bars (``loss`` itself is always among them).
    """

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def check_models_fit(
    vision_config: Any, memory_config: Any, vision_path: Path | str, memory_path: Path | str
) -> None:
    """Raise ``ValueError`` when a memory config cannot run on a vision config's tokens."""
    problems = []
    if memory_config.vocab_size != vision_config.codebook_size:
        problems.append(
            f"memory vocab_size {memory_config.vocab_size} != vision codebook_size {vision_config.codebook_size}"
        )
    grid = (vision_config.grid_height, vision_config.grid_width)
    if (memory_config.grid_height, memory_config.grid_width) != grid:
        problems.append(
            f"memory grid {memory_config.grid_height}x{memory_config.grid_width} != vision grid {grid[0]}x{grid[1]}"
        )
    if problems:
        raise ValueError(
            f"vision checkpoint {vision_path} and memory model {memory_path} do not fit: "
            + "; ".join(problems)
        )


def check_precision(precision: str, name: str = "precision") -> str:
    """Return ``precision`` if it is one of ``PRECISIONS``, else raise ``ValueError`` naming ``name``."""
    if precision not in PRECISIONS:
        raise ValueError(f"{name} must be one of {PRECISIONS}, got {precision!r}")
    return precision


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` (CPU or CUDA) for ``precision="bf16"``; a no-op for ``"fp32"``.

    Matmuls, convolutions and attention then run in bfloat16 while reductions
    such as softmax, LayerNorm and the losses stay in float32 (PyTorch's
    autocast op lists).
    """
    device_type = torch.device(device).type
    enabled = check_precision(precision) == "bf16" and device_type in ("cpu", "cuda")
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=enabled)
