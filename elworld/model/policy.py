"""The control policy: compact features of a token grid -> one of a few key choices.

Features (no learning; fixed when training starts):

1. Each token becomes ``components`` numbers: its vision codebook vector
   projected on the first principal axes of the codebook (weighted by how often
   each code occurs in the start frames), so "fireball", "wall" and "floor"
   tokens land far apart with a handful of numbers.
2. The grid ``(gh, gw, components)`` is average-pooled into ``row_bands`` x
   ``col_bands`` cells; take_cover is about *where along x* a fireball is, so
   the default keeps 8 column bands and 2 row bands.
3. Standardised with the start frames' mean and std; with ``velocity`` the
   change since the previous frame is appended (fireballs grow as they come).
4. With ``memory_state = H`` the world's own memory is appended: the
   episode-end model's GRU state (``H`` numbers in [-1, 1]) after the frames
   and keys so far, as World Models' controller read its RNN's state. It holds
   what two frames cannot show (how many hits came before); the dream keeps it
   per dream (``DreamWorld.end_state``) and ``Agent`` runs the same model on
   real frames.

The head is linear (``hidden=0``, as World Models' controller) or a one-layer
tanh MLP, and the action is the argmax over ``choices`` (e.g. none / left /
right), each a set of keys of the 22-key layout. With ``hold = k`` a decision
is kept for ``k`` steps (the features still see every frame): the policy then
cannot flicker between keys every step, a behaviour the dream rewards and
the real game does not (docs/CONTROL.md). All parameters live in one flat
vector, which is what CMA-ES searches; :meth:`ControlPolicy.batched_logits`
scores many candidate vectors at once, one per dream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from elworld.keys import KEY_INDEX, NUM_KEYS

NO_KEY = "none"


def parse_choice(choice: str) -> list[int]:
    """Key indices of a choice: ``"none"`` -> ``[]``, ``"left+z"`` -> ``[3, 5]``."""
    if choice == NO_KEY:
        return []
    names = choice.split("+")
    unknown = [name for name in names if name not in KEY_INDEX]
    if unknown or not choice:
        raise ValueError(
            f"choice {choice!r} must be {NO_KEY!r} or key names joined by '+' "
            f"(keys: {', '.join(KEY_INDEX)}), got unknown {unknown}"
        )
    return [KEY_INDEX[name] for name in names]


def default_choices(keys: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """No key, then each key alone: ``["left", "right"]`` -> ``("none", "left", "right")``."""
    return (NO_KEY, *keys)


@dataclass
class ControlConfig:
    """Shape of a control policy; saved as the checkpoint's ``config.json``."""

    vocab_size: int = 512  # the vision codebook size
    grid_height: int = 24
    grid_width: int = 32
    components: int = 2  # numbers per token (principal axes of the codebook)
    row_bands: int = 2
    col_bands: int = 8
    velocity: bool = True  # append the change since the previous frame
    hidden: int = 0  # 0: linear head; else a tanh layer of this width
    hold: int = 1  # steps each decision is held (1: decide every step)
    memory_state: int = 0  # inputs from the episode-end model's GRU state (0: none)
    choices: tuple[str, ...] = ("none", "left", "right")
    action_dim: int = NUM_KEYS

    def __post_init__(self) -> None:
        for name in ("vocab_size", "grid_height", "grid_width", "components", "row_bands", "col_bands"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.row_bands > self.grid_height or self.col_bands > self.grid_width:
            raise ValueError(
                f"row_bands x col_bands ({self.row_bands}x{self.col_bands}) must fit the token "
                f"grid ({self.grid_height}x{self.grid_width})"
            )
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 0:
            raise ValueError(f"hidden must be an int >= 0, got {self.hidden!r}")
        if isinstance(self.hold, bool) or not isinstance(self.hold, int) or self.hold < 1:
            raise ValueError(f"hold must be a positive int, got {self.hold!r}")
        if isinstance(self.memory_state, bool) or not isinstance(self.memory_state, int) or self.memory_state < 0:  # fmt: skip
            raise ValueError(f"memory_state must be an int >= 0, got {self.memory_state!r}")
        self.choices = tuple(self.choices)
        if len(self.choices) < 2 or len(set(self.choices)) != len(self.choices):
            raise ValueError(f"choices must be at least 2 distinct entries, got {self.choices}")
        for choice in self.choices:
            parse_choice(choice)

    @property
    def frame_features(self) -> int:
        """Features of one frame (before the velocity half)."""
        return self.components * self.row_bands * self.col_bands

    @property
    def num_features(self) -> int:
        """Inputs of the head."""
        return self.frame_features * (2 if self.velocity else 1) + self.memory_state

    @property
    def num_params(self) -> int:
        """Length of the flat parameter vector CMA-ES searches."""
        f, a, h = self.num_features, len(self.choices), self.hidden
        return (f + 1) * a if h == 0 else (f + 1) * h + (h + 1) * a


class ControlPolicy(nn.Module):
    """Token grids ``(N, gh, gw)`` -> key choices; see the module docstring.

    Buffers (saved with the weights, set by :meth:`fit_features`): ``token_table``
    ``(vocab, components)``, ``feature_mean`` / ``feature_std`` ``(frame_features,)``.
    """

    kind = "control"
    config_class = ControlConfig

    def __init__(self, config: ControlConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.register_buffer("token_table", torch.zeros(c.vocab_size, c.components))
        self.register_buffer("feature_mean", torch.zeros(c.frame_features))
        self.register_buffer("feature_std", torch.ones(c.frame_features))
        actions = torch.zeros(len(c.choices), c.action_dim, dtype=torch.uint8)
        for row, choice in enumerate(c.choices):
            actions[row, parse_choice(choice)] = 1
        self.register_buffer("choice_actions", actions, persistent=False)  # (A, 22)
        if c.hidden == 0:
            self.head = nn.Linear(c.num_features, len(c.choices))
            self.hidden_layer = None
        else:
            self.hidden_layer = nn.Linear(c.num_features, c.hidden)
            self.head = nn.Linear(c.hidden, len(c.choices))
        self._shapes = [(name, p.shape) for name, p in self.named_parameters()]
        assert sum(math.prod(s) for _, s in self._shapes) == c.num_params

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> ControlPolicy:
        """Load a saved policy (eval mode) from a checkpoint folder (no world check: see ``Agent``)."""
        from elworld.checkpoint import load_model

        return load_model(path, cls, device=device)

    # ---------------------------------------------------------------- features
    @torch.no_grad()
    def fit_features(self, codebook: torch.Tensor, bank_tokens: torch.Tensor) -> None:
        """Set the token table and feature statistics from the vision codebook and start frames.

        ``codebook``: ``(vocab, code_dim)`` vision codebook vectors; ``bank_tokens``:
        ``(S, gh, gw)`` tokens of real frames.
        """
        c = self.config
        codebook = codebook.detach().double().cpu()
        assert codebook.shape[0] == c.vocab_size, "codebook size != vocab_size"
        counts = torch.bincount(bank_tokens.reshape(-1).cpu(), minlength=c.vocab_size).double()
        weights = (counts + 1e-3) / (counts + 1e-3).sum()  # (V,): unseen codes still count a little
        mean = weights @ codebook  # (D,)
        centred = codebook - mean  # (V, D)
        cov = centred.T @ (centred * weights[:, None])  # (D, D)
        _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
        axes = vectors[:, -c.components :].flip(-1)  # (D, C), largest first
        if axes.shape[1] < c.components:  # code_dim < components: pad with zeros
            axes = F.pad(axes, (0, c.components - axes.shape[1]))
        self.token_table.copy_((centred @ axes).float())
        raw = self._pooled(bank_tokens.to(self.token_table.device))  # (S, Ff)
        self.feature_mean.copy_(raw.mean(0))
        self.feature_std.copy_(raw.std(0, unbiased=False).clamp_min(1e-3))

    def _pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        c = self.config
        grid = self.token_table[tokens.long()]  # (N, gh, gw, C)
        grid = grid.permute(0, 3, 1, 2)  # (N, C, gh, gw)
        pooled = F.adaptive_avg_pool2d(grid, (c.row_bands, c.col_bands))  # (N, C, rb, cb)
        return pooled.reshape(len(tokens), -1)  # (N, Ff)

    @torch.no_grad()
    def frame_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Standardised features ``(N, frame_features)`` of token grids ``(N, gh, gw)``."""
        c = self.config
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != (c.grid_height, c.grid_width):
            raise ValueError(
                f"tokens must have shape (N, {c.grid_height}, {c.grid_width}), got {tuple(tokens.shape)}"
            )
        return (self._pooled(tokens) - self.feature_mean) / self.feature_std

    def features(
        self,
        current: torch.Tensor,
        previous: torch.Tensor | None,
        memory_state: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Head inputs ``(N, num_features)`` from this and the previous frame's features and,
        when the policy reads it, the world's memory state ``(N, memory_state)``."""
        c = self.config
        parts = [current]
        if c.velocity:
            parts.append(torch.zeros_like(current) if previous is None else current - previous)
        if c.memory_state:
            if memory_state is None or tuple(memory_state.shape) != (len(current), c.memory_state):
                got = None if memory_state is None else tuple(memory_state.shape)
                raise ValueError(
                    f"this policy reads the episode-end model's state, shape ({len(current)}, "
                    f"{c.memory_state}); got {got}"
                )
            parts.append(memory_state.to(current.dtype))
        return torch.cat(parts, dim=1) if len(parts) > 1 else current

    # -------------------------------------------------------------- parameters
    def get_flat(self) -> np.ndarray:
        """The parameters as one float64 vector ``(num_params,)``."""
        return nn.utils.parameters_to_vector(self.parameters()).detach().double().cpu().numpy()

    @torch.no_grad()
    def set_flat(self, flat: np.ndarray) -> None:
        """Load parameters from a vector ``(num_params,)``."""
        vector = torch.as_tensor(np.asarray(flat), dtype=torch.float32)
        if vector.shape != (self.config.num_params,):
            raise ValueError(
                f"expected {self.config.num_params} parameters, got {tuple(vector.shape)}"
            )
        nn.utils.vector_to_parameters(vector.to(self.token_table.device), self.parameters())

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows ``(N, num_params)`` -> ``{name: (N, *shape)}`` in ``named_parameters`` order."""
        out, start = {}, 0
        for name, shape in self._shapes:
            size = math.prod(shape)
            out[name] = flat[:, start : start + size].reshape(len(flat), *shape)
            start += size
        return out

    @torch.no_grad()
    def batched_logits(self, features: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, choices)``: row ``i`` of ``features`` through parameter row ``flat[i]``."""
        p = self._unflatten(flat.to(features.dtype))
        x = features
        if self.hidden_layer is not None:
            x = torch.tanh(
                torch.einsum("nf,nhf->nh", x, p["hidden_layer.weight"]) + p["hidden_layer.bias"]
            )
        return torch.einsum("nf,naf->na", x, p["head.weight"]) + p["head.bias"]  # (N, A)

    @torch.no_grad()
    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, choices)`` with the policy's own parameters."""
        x = features
        if self.hidden_layer is not None:
            x = torch.tanh(self.hidden_layer(x))
        return self.head(x)

    def actions(self, choice: torch.Tensor) -> np.ndarray:
        """``(N, 22)`` uint8 actions of choice indices ``(N,)``."""
        return self.choice_actions[choice.long()].cpu().numpy()
