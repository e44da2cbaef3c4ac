"""Measurements shared by the benchmark scripts (imported as a sibling module)."""

from __future__ import annotations

import math
import time

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so a timer reads real elapsed time."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(
    size: int, device: torch.device, repeats: int = 5, dtype: torch.dtype = torch.float32
) -> float:
    """Best FLOP/s of a ``size x size`` matmul on ``device``: the machine's practical peak."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best
