"""How a dream samples: one settings dataclass, checked once, resolved once.

``SamplingSettings`` holds what every memory pass of a dream uses
(temperature, top_k, sampling_steps, guidance, precision, compile,
step_chunk). ``DreamEnv``, ``DreamVectorEnv``, ``elworld eval``, ``train
control`` and ``eval control`` build one; ``DreamWorld`` resolves it against
its device and checkpoint (``resolve``) and keeps the result.

``resolve_guidance`` is the one place of the rule "guidance ``None`` means the
world's recommended scale": the memory checkpoint's ``training_info.json``
``"sampling"`` (``checkpoint.recommended_guidance``), else 1 (off).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import torch

from elworld.checkpoint import recommended_guidance
from elworld.model.common import check_precision, resolve_precision

# Envs per memory pass on a CPU. A pass over many dreams at once outgrows the
# caches ([n, 768, 512] logits alone are 25 MB at n = 16): on the 2-core dev
# machine dreams stepped 2 at a time ran 2.0x the env-steps/s of one pass over
# all of them at N = 16 and 2.9x at N = 64, flat in N (benchmarks/dream_step.py,
# "one pass" column). Accelerators take all at once.
CPU_STEP_CHUNK = 2


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _is_positive_int(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


@dataclass(frozen=True)
class SamplingSettings:
    """How the memory model samples each dream step.

    - ``temperature``: 0 takes the argmax (deterministic); a finite number >= 0.
    - ``top_k``: sample among the k likeliest tokens (``None``: all).
    - ``sampling_steps``: MaskGIT refinement passes per frame.
    - ``guidance``: classifier-free guidance scale on the keys, 1 = off; ``None``
      takes the world's recommended scale (``resolve_guidance``).
    - ``precision``: ``"auto"`` (bf16 where the device runs it natively),
      ``"bf16"`` or ``"fp32"`` for the memory passes.
    - ``compile``: ``torch.compile`` the memory model.
    - ``step_chunk``: envs per memory pass (``None``: ``CPU_STEP_CHUNK`` on a
      CPU, all of them on an accelerator).

    Raises:
        ValueError: naming the setting that is invalid (NaN and infinity included).
    """

    temperature: float = 1.0
    top_k: int | None = None
    sampling_steps: int = 1
    guidance: float | None = None
    precision: str = "auto"
    compile: bool = False
    step_chunk: int | None = None

    def __post_init__(self) -> None:
        if not _is_number(self.temperature) or self.temperature < 0:
            raise ValueError(
                f"temperature must be a finite number >= 0 (0 = argmax), got {self.temperature!r}"
            )
        if self.guidance is not None and (not _is_number(self.guidance) or self.guidance < 0):
            raise ValueError(
                f"guidance must be a finite number >= 0 (1 = off) or None, got {self.guidance!r}"
            )
        if self.top_k is not None and not _is_positive_int(self.top_k):
            raise ValueError(f"top_k must be a positive int or None, got {self.top_k!r}")
        if not _is_positive_int(self.sampling_steps):
            raise ValueError(f"sampling_steps must be a positive int, got {self.sampling_steps!r}")
        if self.step_chunk is not None and not _is_positive_int(self.step_chunk):
            raise ValueError(f"step_chunk must be a positive int, got {self.step_chunk!r}")
        check_precision(self.precision)

    def resolve(
        self,
        device: torch.device,
        num_envs: int,
        memory_checkpoint: str | os.PathLike | None = None,
    ) -> SamplingSettings:
        """These settings made concrete for one world: guidance a number, precision
        ``"bf16"`` or ``"fp32"`` for ``device``, ``step_chunk`` an int for ``num_envs``."""
        chunk = self.step_chunk
        if chunk is None:
            chunk = CPU_STEP_CHUNK if device.type == "cpu" else num_envs
        return replace(
            self,
            temperature=float(self.temperature),
            guidance=resolve_guidance(self.guidance, memory_checkpoint),
            precision=resolve_precision(self.precision, device),
            step_chunk=chunk,
        )


def resolve_guidance(guidance: float | None, memory_checkpoint: str | os.PathLike | None) -> float:
    """``guidance``, or for ``None`` the memory checkpoint's recommended scale (1 without one)."""
    if guidance is not None:
        return float(guidance)
    return recommended_guidance(memory_checkpoint) if memory_checkpoint is not None else 1.0
