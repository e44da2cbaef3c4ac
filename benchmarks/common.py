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


def best_matmul_peak(size: int, device: torch.device) -> tuple[float, str]:
    """The better of the float32 and bfloat16 matmul peaks (FLOP/s) and which dtype gave it."""
    peaks = {
        "fp32": matmul_peak(size, device, dtype=torch.float32),
        "bf16": matmul_peak(size, device, dtype=torch.bfloat16),
    }
    name = max(peaks, key=peaks.get)
    return peaks[name], name
