"""Small types shared by every trainable model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossOutput:
    """What ``compute_loss(batch)`` returns for every trainable model.

    ``loss`` is the scalar to backpropagate; ``metrics`` are plain floats for
    logs and progress bars (``loss`` itself is always among them).
    """

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
