"""Frame and event metrics of ``elworld eval``: PSNR, SSIM, precision / recall, running means.

PSNR is per frame on uint8 RGB, capped at 50 dB so identical frames cannot
swamp a mean, then averaged over frames.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from elworld.frames import frames_to_tensor

PSNR_CAP = 50.0


def psnr(a: np.ndarray, b: np.ndarray, cap: float = PSNR_CAP) -> np.ndarray:
    """Per-frame PSNR in dB of uint8 frames ``(N, H, W, 3)``, capped at ``cap``."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(255.0**2 / mse)
    return np.minimum(values, cap)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame SSIM of uint8 frames ``(N, H, W, 3)`` (11x11 Gaussian window, sigma 1.5, channel mean)."""
    x, y = frames_to_tensor(a), frames_to_tensor(b)  # (N, 3, H, W)
    coords = torch.arange(11, dtype=torch.float32) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    rows, cols = g.view(1, 1, 11, 1).expand(3, 1, 11, 1), g.view(1, 1, 1, 11).expand(3, 1, 1, 11)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid padding
        return F.conv2d(F.conv2d(t, rows, groups=3), cols, groups=3)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return value.mean(dim=(1, 2, 3)).double().numpy()


def precision_recall(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float | int]:
    """Precision and recall of boolean predictions (NaN when undefined), with the counts."""
    tp = int(np.sum(predicted & actual))
    return {
        "precision": tp / int(predicted.sum()) if predicted.any() else math.nan,
        "recall": tp / int(actual.sum()) if actual.any() else math.nan,
        "predicted": int(predicted.sum()),
        "actual": int(actual.sum()),
    }


class Stats:
    """Running lists of per-item values, averaged at the end."""

    def __init__(self) -> None:
        self.values: dict[str, list[np.ndarray]] = {}

    def add(self, key: str, values: np.ndarray | float) -> None:
        self.values.setdefault(key, []).append(np.atleast_1d(np.asarray(values, dtype=np.float64)))

    def all(self, key: str) -> np.ndarray:
        return np.concatenate(self.values[key]) if key in self.values else np.zeros(0)

    def mean(self, key: str) -> float:
        values = self.all(key)
        return float(values.mean()) if values.size else math.nan
