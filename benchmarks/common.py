"""Measurements shared by the benchmark scripts (imported as a sibling module)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

from elworld.model.common import choose_precision, cpu_bf16_support


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


def cpu_kind() -> list[str]:
    """Lines naming this CPU: model, the flags bf16 speed depends on, and torch's view."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    shown = " ".join(f"{flag}{'+' if flag in flags else '-'}" for flag in wanted)
    native, reason = cpu_bf16_support()
    choice = choose_precision("auto", "cpu")
    return [
        f"CPU: {model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; flags {shown}",
        f"torch.backends.cpu.get_cpu_capability(): {torch.backends.cpu.get_cpu_capability()}; "
        f"native bf16: {native}",
        f'precision="auto" chooses {choice.precision} on the CPU ({reason})',
    ]
