"""Small types shared by every trainable model."""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

# "auto": bf16 where the device runs it natively, fp32 elsewhere (``choose_precision``).
PRECISIONS = ("auto", "bf16", "fp32")


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


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses (``"bf16"`` or ``"fp32"``) and why it was chosen."""

    precision: str
    reason: str


@functools.cache
def cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU runs bf16 matmuls natively (AVX-512 BF16 or AMX), and what says so.

    Without either, PyTorch emulates every bf16 matmul: measured on an AVX2-only
    AMD EPYC (Zen 3), a 1024^2 matmul ran at 104 GFLOP/s in fp32 and 1 GFLOP/s in
    bf16. The answer comes from PyTorch's own CPU feature probe (the flags
    oneDNN dispatches on), falling back to ``/proc/cpuinfo`` where it is missing.
    """
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_tile": "_is_amx_tile_supported"}
    found = {}
    for flag, probe in probes.items():
        check = getattr(torch.cpu, probe, None)
        if check is not None:
            found[flag] = bool(check())
    if not found:  # an older torch: read the kernel's view of the CPU flags
        try:
            flags = set(Path("/proc/cpuinfo").read_text().split())
        except OSError:
            flags = set()
        found = {flag: flag in flags for flag in probes}
    native = [flag for flag, present in found.items() if present]
    capability = torch.backends.cpu.get_cpu_capability()
    if native:
        return True, f"CPU capability {capability} with {' and '.join(native)}"
    return False, f"CPU capability {capability} without avx512_bf16 or amx_tile (bf16 is emulated)"


def choose_precision(
    requested: str,
    device: torch.device | str,
    *,
    cpu_bf16: tuple[bool, str] | None = None,
    cuda_bf16: bool | None = None,
) -> PrecisionChoice:
    """Resolve ``requested`` (``"auto"``, ``"bf16"`` or ``"fp32"``) on ``device``.

    An explicit ``"bf16"`` or ``"fp32"`` always wins. ``"auto"`` takes bf16 only
    where the device runs it natively: a CUDA device that supports bf16, or a CPU
    with AVX-512 BF16 or AMX (``cpu_bf16_support``); fp32 everywhere else (an
    AVX2-only CPU, MPS, a CUDA device without bf16). ``cpu_bf16`` and
    ``cuda_bf16`` override the probes (for tests and for callers that know).
    """
    check_precision(requested)
    device = torch.device(device)
    if requested != "auto":
        return PrecisionChoice(requested, "asked for")
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        if native:
            return PrecisionChoice("bf16", "CUDA device with native bf16")
        return PrecisionChoice("fp32", "CUDA device without native bf16")
    if device.type == "cpu":
        native, why = cpu_bf16_support() if cpu_bf16 is None else cpu_bf16
        return PrecisionChoice("bf16" if native else "fp32", why)
    return PrecisionChoice("fp32", f"no bf16 autocast on {device.type}")


@functools.cache
def _log_choice(device_type: str, requested: str, precision: str, reason: str) -> None:
    logger.info("precision %s (asked %s) on %s: %s", precision, requested, device_type, reason)


def resolve_precision(requested: str, device: torch.device | str) -> str:
    """``choose_precision(requested, device).precision``; each distinct "auto" choice is logged once."""
    choice = choose_precision(requested, device)
    if requested == "auto":
        _log_choice(torch.device(device).type, requested, choice.precision, choice.reason)
    return choice.precision


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` (CPU or CUDA) for ``precision="bf16"``; a no-op for ``"fp32"``.

    ``"auto"`` is resolved by ``resolve_precision`` first. Matmuls, convolutions
    and attention then run in bfloat16 while reductions such as softmax,
    LayerNorm and the losses stay in float32 (PyTorch's autocast op lists).
    """
    enabled = compute_dtype(device, precision) == torch.bfloat16
    return torch.autocast(
        device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=enabled
    )


def compute_dtype(device: torch.device | str, precision: str) -> torch.dtype:
    """What ``precision`` computes in on ``device``: bfloat16 for bf16 on a CPU or CUDA, else float32.

    ``"auto"`` is resolved first (``resolve_precision``). Elsewhere (MPS) bf16
    autocast is off, so fp32 it is. A model can be cast to this dtype once
    instead of running under ``autocast`` (``MemoryModel.inference_copy``).
    """
    bf16 = resolve_precision(precision, device) == "bf16"
    return (
        torch.bfloat16 if bf16 and torch.device(device).type in ("cpu", "cuda") else torch.float32
    )
