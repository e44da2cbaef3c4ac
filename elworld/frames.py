"""Frame format shared by recorders, models and the dream env.

A frame the models see is RGB ``uint8`` of shape ``(FRAME_HEIGHT, FRAME_WIDTH, 3)``
= ``(192, 256, 3)``. This module converts between that and the rest of the world:

- ``resize_frames``: any-size ``uint8`` frames -> target size (antialiased
  bilinear, in bounded-memory chunks).
- ``frames_to_tensor``: ``uint8 (N, H, W, 3)`` numpy/torch -> ``float32
  (N, 3, H, W)`` torch in ``[0, 1]``.
- ``tensor_to_frames``: ``float (N, 3, H, W)`` torch -> ``uint8 (N, H, W, 3)``
  numpy (clamped and rounded).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

FRAME_HEIGHT = 192
FRAME_WIDTH = 256

# Upper bound on float32 values held by one resize chunk (~128 MiB of input).
_CHUNK_VALUES = 1 << 25


def _check_uint8_frames(frames: np.ndarray | torch.Tensor, name: str, allow_single: bool) -> None:
    """Raise ``ValueError`` unless ``frames`` is uint8 ``(N, H, W, 3)`` (or ``(H, W, 3)``)."""
    ndims = (3, 4) if allow_single else (4,)
    expected = "(H, W, 3) or (N, H, W, 3)" if allow_single else "(N, H, W, 3)"
    shape = tuple(frames.shape)
    if len(shape) not in ndims or shape[-1] != 3:
        hint = "" if allow_single or len(shape) != 3 else " (add a batch axis: frames[None])"
        raise ValueError(f"{name} must be RGB frames of shape {expected}, got shape {shape}{hint}")
    dtype_ok = frames.dtype == (torch.uint8 if isinstance(frames, torch.Tensor) else np.uint8)
    if not dtype_ok:
        raise ValueError(f"{name} must have dtype uint8 (values 0..255), got {frames.dtype}")


def resize_frames(
    frames: np.ndarray, height: int = FRAME_HEIGHT, width: int = FRAME_WIDTH
) -> np.ndarray:
    """Resize uint8 RGB frames ``(H, W, 3)`` or ``(N, H, W, 3)`` to ``(height, width)``.

    Uses antialiased bilinear interpolation, so downscaling (e.g. 600x800 ->
    192x256) does not alias. Returns a new uint8 array with the same number of
    axes; frames already at the target size come back as an unchanged copy.
    Large ``N`` is processed in chunks, so memory stays bounded.

    Raises:
        ValueError: ``frames`` is not a uint8 array of shape ``(H, W, 3)`` /
            ``(N, H, W, 3)``, or ``height`` / ``width`` is not a positive int.
    """
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array, got {type(frames).__name__}")
    _check_uint8_frames(frames, "frames", allow_single=True)
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    height, width = int(height), int(width)
    single = frames.ndim == 3
    batch = frames[None] if single else frames  # (N, H, W, 3)
    n, in_h, in_w, _ = batch.shape
    if (in_h, in_w) == (height, width):
        return frames.copy()
    if in_h == 0 or in_w == 0:
        raise ValueError(f"frames must have non-empty height and width, got shape {frames.shape}")

    out = np.empty((n, height, width, 3), dtype=np.uint8)
    chunk = max(1, _CHUNK_VALUES // (max(in_h * in_w, height * width) * 3))
    with torch.no_grad():
        for start in range(0, n, chunk):
            part = torch.from_numpy(np.ascontiguousarray(batch[start : start + chunk]))
            x = part.permute(0, 3, 1, 2).float()  # (n, 3, H, W)
            x = F.interpolate(
                x, size=(height, width), mode="bilinear", antialias=True, align_corners=False
            )
            x = x.round_().clamp_(0, 255).to(torch.uint8)
            out[start : start + chunk] = x.permute(0, 2, 3, 1).numpy()  # (n, h, w, 3)
    return out[0] if single else out


def frames_to_tensor(
    frames: np.ndarray | torch.Tensor, device: torch.device | str | None = None
) -> torch.Tensor:
    """Convert uint8 frames ``(N, H, W, 3)`` to float32 ``(N, 3, H, W)`` in ``[0, 1]``.

    Accepts a numpy array or a torch tensor; the uint8 data moves to ``device``
    (default: where it already is, CPU for numpy) before conversion.

    Raises:
        ValueError: ``frames`` is not uint8 of shape ``(N, H, W, 3)``.
    """
    if not isinstance(frames, np.ndarray | torch.Tensor):
        raise ValueError(
            f"frames must be a numpy array or torch tensor, got {type(frames).__name__}"
        )
    _check_uint8_frames(frames, "frames", allow_single=False)
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if device is not None:
        frames = frames.to(device, non_blocking=True)
    x = frames.permute(0, 3, 1, 2)  # (N, 3, H, W)
    return x.to(torch.float32).div_(255.0).contiguous()


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """Convert float images ``(N, 3, H, W)`` in ``[0, 1]`` to uint8 ``(N, H, W, 3)`` numpy.

    Values are clamped to ``[0, 1]`` and rounded; the result is a new,
    C-contiguous array on the CPU.

    Raises:
        ValueError: ``x`` is not a floating-point tensor of shape ``(N, 3, H, W)``.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        kind = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating-point torch tensor, got {kind}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"x must have shape (N, 3, H, W), got {tuple(x.shape)}")
    x = x.detach().float().clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # (N, H, W, 3)
