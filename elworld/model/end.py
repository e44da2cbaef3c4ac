"""Episode-end model: the chance the real game ends this step, read from the frames so far.

Why a model of its own. In take_cover the player dies after enough fireballs
hit it; how many have hit is nowhere in the last two frames the memory model
sees (the HUD is off), so its end head can only guess from the current picture.
World Models' MDN-RNN carried that count in its hidden state; this model does
the same, cheaply: a GRU over the episode so far.

Input per step ``t``: the frame's tokens (``tokens_per_frame`` ids from the
vision model's codebook), pooled by two bags of learned embeddings (mean and
max: how much of the screen a thing fills, and whether it is there at all),
plus the keys held at ``t``. Output: the hazard ``h_t = P(the episode ends
after step t | it reached t)``, trained by per-step binary cross-entropy on
the recordings' ``done`` flags (one positive at the end of every episode that
ended by itself) without a positive weight, so ``h`` is a calibrated chance:
the dream draws its episode ends from it, and ``sum_t prod_{s<t} (1 - h_s)``
is an expected episode length comparable with the real game's.

``EndModel.step`` runs one step for many dreams at once (``DreamWorld`` keeps
one hidden state per dream); ``forward`` runs whole episodes for training.
Trained by ``elworld train end`` on the same token cache as the memory model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from elworld.keys import NUM_KEYS
from elworld.model.common import LossOutput

logger = logging.getLogger(__name__)


@dataclass
class EndConfig:
    """The episode-end model's shape and what it reads (saved as ``config.json``)."""

    vocab_size: int = 512  # the vision model's codebook size
    tokens_per_frame: int = 768  # grid_height * grid_width of the vision model
    action_dim: int = NUM_KEYS
    n_embd: int = 32  # width of each token-bag embedding (mean and max)
    hidden: int = 64  # GRU state size
    frame_skip: int | None = None  # from the training recordings' sidecars
    scenario: str | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "tokens_per_frame", "action_dim", "n_embd", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class EndModel(nn.Module):
    """Tokens and keys of steps ``0..t`` -> the hazard of step ``t`` (a GRU over the episode)."""

    kind = "end"
    config_class = EndConfig

    def __init__(self, config: EndConfig) -> None:
        super().__init__()
        self.config = config
        self.bag_mean = nn.EmbeddingBag(config.vocab_size, config.n_embd, mode="mean")
        self.bag_max = nn.EmbeddingBag(config.vocab_size, config.n_embd, mode="max")
        self.gru = nn.GRU(2 * config.n_embd + config.action_dim, config.hidden, batch_first=True)
        self.head = nn.Linear(config.hidden, 1)

    def _inputs(self, tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``tokens (..., T)`` long, ``actions (..., A)`` -> GRU inputs ``(..., 2 n_embd + A)``."""
        lead = tokens.shape[:-1]
        flat = tokens.reshape(-1, tokens.shape[-1])
        bags = torch.cat([self.bag_mean(flat), self.bag_max(flat)], dim=-1)
        return torch.cat([bags.view(*lead, -1), actions.to(bags.dtype)], dim=-1)

    def forward(self, tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Whole episodes: ``tokens (B, L, T)``, ``actions (B, L, A)`` -> hazard logits ``(B, L)``."""
        out, _ = self.gru(self._inputs(tokens.long(), actions))
        return self.head(out).squeeze(-1)

    def initial_state(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The hidden state ``(n, hidden)`` of ``n`` episodes that have not started."""
        return torch.zeros(n, self.config.hidden, device=device)

    def step(
        self, tokens: torch.Tensor, actions: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of ``n`` episodes: ``tokens (n, T)``, ``actions (n, A)``, ``state (n, hidden)``
        -> ``(hazard (n,) float in [0, 1], next state)``."""
        x = self._inputs(tokens.long(), actions)[:, None]  # (n, 1, F)
        out, state = self.gru(x, state[None].contiguous())
        return torch.sigmoid(self.head(out[:, 0]).squeeze(-1)), state[0]

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> LossOutput:
        """``{"tokens" (B, L, T), "actions" (B, L, A), "done" (B, L), "mask" (B, L)}`` -> masked BCE."""
        logits = self(batch["tokens"], batch["actions"])
        mask = batch["mask"]
        loss = (
            F.binary_cross_entropy_with_logits(logits, batch["done"], reduction="none") * mask
        ).sum() / mask.sum().clamp(min=1)
        return LossOutput(loss=loss, metrics={"loss": loss.item()})

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> EndModel:
        """Load a saved episode-end model (eval mode) from a checkpoint folder."""
        from elworld.checkpoint import load_model

        return load_model(path, cls, device=device)


def check_end_model_fits(config: EndConfig, memory_config: Any, memory_name: str) -> None:
    """Raise ``ValueError`` when the end model reads tokens of another shape than the memory model makes."""
    grid = memory_config.grid_height * memory_config.grid_width
    if (config.vocab_size, config.tokens_per_frame) != (memory_config.vocab_size, grid):
        raise ValueError(
            f"the episode-end model reads {config.tokens_per_frame} tokens from a {config.vocab_size}-code "
            f"codebook, but memory model {memory_name} makes {grid} from {memory_config.vocab_size}: "
            "train the end model on this world's vision model (`elworld train end --vision ...`)"
        )
