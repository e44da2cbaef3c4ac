"""The memory model: predicts the next frame's tokens from recent frames and an action.

Design
------
A frame is a ``grid_height x grid_width`` grid of vision tokens (24 x 32 = 768,
vocab 512). The model is a *bidirectional* transformer (nanoGPT-style blocks:
pre-LayerNorm, ``F.scaled_dot_product_attention`` without a causal mask, GELU
MLP) over ONE sequence: a prefix action token followed by one position per grid
cell. At grid cell ``p`` the input embedding is the sum of

- the current frame's token at ``p`` (``current_emb``),
- each previous context frame's token at ``p``, one table per context slot
  (``context_emb``, a single table split into ``context_frames - 1`` blocks of
  ``vocab_size`` rows, so all slots are one lookup),
- the partially known NEXT frame's token at ``p`` (``next_emb``), where an
  unknown cell holds the special ``MASK`` id (``vocab_size``),
- a learned 2D position embedding (row + column; attention also uses 2D
  rotary positions, see below),
- the action embedding ``Linear(action_dim -> n_embd)`` of the multi-hot action.

The head at cell ``p`` gives logits over the vocab for the next frame's token
at ``p``.

Why one-shot / MaskGIT. Sampling 768 tokens one by one (the original MinGPT
design) costs 768 forward passes per frame, far too slow for an environment
step. Here every cell is predicted at once: with all next tokens masked, one
forward pass gives the whole next frame (one-shot). ``sample(..., steps=S)``
refines MaskGIT-style: each pass commits the most confident still-masked cells
(cosine schedule) and feeds them back as known next tokens, so later cells are
predicted consistently with earlier choices. Training masks a random fraction
of the target (cosine schedule, half of the rows fully masked so the one-shot
case is learnt well) and scores the masked cells.

How the action enters. The action embedding is added to *every* grid cell, so
every output depends on the action directly, not only through attention (this
matters for controllability); the prefix action token additionally carries it
(and its output feeds the optional reward and episode-end heads).

Why rotary positions too. Besides the learned absolute embedding, queries and
keys get 2D rotary position encodings (RoPE: half the rotated pairs by row,
half by column), so an attention score depends on the *relative* offset of two
cells. That is what lets an additively-embedded action choose WHICH neighbour a
cell copies from, i.e. which way the scene scrolls: with absolute positions
only, a query-key score is a sum of pairwise terms and none multiplies the
action with the offset, so a toy "shift left/right by action" task plateaued at
~50% accuracy for thousands of steps; with rotary positions the same tiny
model learns it in about 150 steps.

Heads. The optional reward (MSE) and episode-end (BCE with logits) heads read
the action token's output and train only on rows whose ``has_reward`` /
``has_done`` is set. Their losses are scaled by ``head_loss_weight`` (0.1): at
full weight the quickly learnt heads stalled the token loss of a tiny model for
hundreds of steps (they dominate the shared trunk's early Adam updates).

The copy gate. Most cells of the next frame keep their current token, so a
per-cell gate (``copy_head``, a linear read-out of the cell's final hidden
state) adds a logit bonus to the current token at that cell. The model starts
out copying (bias ``COPY_GATE_INIT``) and learns where things change, instead
of re-deriving every static token from scratch.

How context gives motion. One frame cannot tell which way something moves; with
``context_frames = K`` the ``K - 1`` previous frames are summed into each cell's
embedding, and attention compares a cell with its neighbours across frames, so
velocity is representable. Without a history (episode start), ``forward`` uses
copies of the current frame: a still scene.

Axial attention (``attention="axial"``). Full attention over 769 positions
costs ``L^2`` per layer and dominates the pass on a CPU. Axial blocks attend
along each row (32 cells) and then along each column (24 cells), as Genie's
spatial blocks factorise attention: two hops reach every cell, the attention
FLOPs drop ~14x, and a horizontal scroll (strafing) is one row attention. There
is no prefix token then: the reward / end heads read the mean cell output plus
the conditioning vector.

Conditioning at every layer (``adaln=True``). The action (and the context-noise
level, below) is embedded once into a vector ``c`` that sets a per-block scale
and shift of every LayerNorm (AdaLN, as DiT / DIAMOND condition on the noise
level), zero-initialised so training starts from the plain block.

Classifier-free guidance (``action_dropout > 0``). Training replaces the action
of that share of rows by a learned "no action given" embedding; sampling with
``guidance=g`` then mixes ``uncond + g * (cond - uncond)`` logits (two passes
in one batch), which sharpens what the keys change (GameNGen, Genie 2).

Context noise (``context_noise > 0``). A dream feeds the model its own samples,
so training corrupts each row's context tokens (current frame included) with
random tokens at a rate drawn from ``[0, context_noise]`` and tells the model
the rate (embedded into ``c``), as GameNGen's noise augmentation does against
drift; sampling uses rate 0.

Cost per sample. ``steps`` forward passes over ``tokens_per_frame + 1``
positions: ``O(steps * n_layer * (L^2 * n_embd + L * n_embd^2))`` with
``L = 769`` for the default grid (``L * (H + W) * n_embd`` attention with axial
blocks); independent of ``context_frames`` apart from the embedding lookups;
twice that with guidance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from elworld.model.common import LossOutput

MASK_SCHEDULES = ("cosine", "linear", "full")
ATTENTIONS = ("full", "axial")
# Initial copy-gate bonus (in logits) for keeping a cell's current token.
COPY_GATE_INIT = 2.0
# Fraction of training rows whose next frame is fully masked (the one-shot case).
FULL_MASK_FRACTION = 0.5


@dataclass
class MemoryConfig:
    """Architecture of the memory model (saved as ``config.json``)."""

    vocab_size: int = 512
    grid_height: int = 24
    grid_width: int = 32
    action_dim: int = 22
    context_frames: int = 2  # frames seen, current included (1 = current only)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    reward_head: bool = True
    end_head: bool = True
    mask_schedule: str = "cosine"  # training mask ratio distribution for next-frame tokens
    head_loss_weight: float = 0.1  # weight of the reward / end losses next to the token loss
    end_pos_weight: float = 1.0  # weight of episode-end positives in the end loss (ends are rare)
    copy_gate: bool = True  # a per-cell logit bonus for keeping the current token (see docstring)
    attention: str = "full"  # "full" over all cells, or "axial" (rows then columns)
    adaln: bool = False  # condition every block's LayerNorms on the action (AdaLN)
    action_dropout: float = 0.0  # share of training rows without action (enables guidance)
    context_noise: float = 0.0  # max share of context tokens replaced by random ones in training

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "grid_height",
            "grid_width",
            "action_dim",
            "context_frames",
            "n_layer",
            "n_head",
            "n_embd",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MemoryConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"MemoryConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MemoryConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not self.end_pos_weight > 0.0:
            raise ValueError(
                f"MemoryConfig.end_pos_weight must be > 0, got {self.end_pos_weight!r}"
            )
        if not self.head_loss_weight >= 0.0:
            raise ValueError(
                f"MemoryConfig.head_loss_weight must be >= 0, got {self.head_loss_weight!r}"
            )
        if self.attention not in ATTENTIONS:
            raise ValueError(
                f"MemoryConfig.attention must be one of {ATTENTIONS}, got {self.attention!r}"
            )
        for name in ("action_dropout", "context_noise"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(
                    f"MemoryConfig.{name} must be in [0, 1), got {getattr(self, name)!r}"
                )
        if self.mask_schedule not in MASK_SCHEDULES:
            raise ValueError(
                f"MemoryConfig.mask_schedule must be one of {MASK_SCHEDULES}, "
                f"got {self.mask_schedule!r}"
            )

    @property
    def tokens_per_frame(self) -> int:
        """Grid cells per frame (``grid_height * grid_width``)."""
        return self.grid_height * self.grid_width


@dataclass
class MemoryOutput:
    """``forward`` result: next-frame logits ``[B, T, V]`` and optional head outputs ``[B]``."""

    logits: torch.Tensor
    reward: torch.Tensor | None = None
    end_logit: torch.Tensor | None = None


@dataclass
class MemorySample:
    """``sample`` result: next-frame tokens ``[B, T]``, reward ``[B]``, episode-end probability ``[B]``.

    ``reward`` and ``end_prob`` are zeros when the model has no such head.
    """

    tokens: torch.Tensor
    reward: torch.Tensor
    end_prob: torch.Tensor


def _rotary_freqs(count: int, base: float) -> torch.Tensor:
    """``count`` rotation frequencies ``base ** (-i / count)``, from 1 down (one per rotated pair)."""
    return base ** (-torch.arange(count, dtype=torch.float32) / max(count, 1))


def rotary_tables(config: MemoryConfig, base: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """2D rotary position tables ``cos, sin`` of shape ``(1 + T, R)`` for the action + grid sequence.

    Each head's first ``R = 4 * (head_size // 4)`` dims are rotated: half of the
    rotation pairs by the cell's row, half by its column; the action token (index
    0) is not rotated. Rotating queries and keys makes attention scores depend on
    the *relative* offset between cells, so an additive action embedding alone
    can steer which neighbour a cell attends to (i.e. which way the scene moves).
    """
    quarter = (config.n_embd // config.n_head) // 4
    freqs = _rotary_freqs(quarter, base)  # (R/4,)
    rows = torch.arange(config.grid_height, dtype=torch.float32)
    cols = torch.arange(config.grid_width, dtype=torch.float32)
    row_angles = (
        (rows[:, None] * freqs).unsqueeze(1).expand(-1, config.grid_width, -1)
    )  # (H, W, R/4)
    col_angles = (
        (cols[:, None] * freqs).unsqueeze(0).expand(config.grid_height, -1, -1)
    )  # (H, W, R/4)
    angles = torch.cat([row_angles, col_angles], dim=-1).reshape(
        config.tokens_per_frame, -1
    )  # (T, R/2)
    angles = torch.cat([torch.zeros(1, 2 * quarter), angles], dim=0)  # (1 + T, R/2)
    angles = torch.cat([angles, angles], dim=-1)  # (1 + T, R)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``R`` dims of ``x`` ``(B, nh, L, hs)`` by ``cos, sin`` ``(L, R)``."""
    R = cos.shape[-1]
    if R == 0:
        return x
    rot, rest = x[..., :R], x[..., R:]
    first, second = rot.chunk(2, dim=-1)  # 2 x (B, nh, L, R/2)
    rotated = rot * cos + torch.cat([-second, first], dim=-1) * sin  # (B, nh, L, R)
    return torch.cat([rotated, rest], dim=-1)


def rotary_table_1d(
    length: int, head_size: int, base: float = 100.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """1D rotary tables ``cos, sin`` of shape ``(length, R)``, ``R = 2 * (head_size // 2)``."""
    freqs = _rotary_freqs(head_size // 2, base)  # (R/2,)
    angles = torch.arange(length, dtype=torch.float32)[:, None] * freqs  # (length, R/2)
    angles = torch.cat([angles, angles], dim=-1)  # (length, R)
    return angles.cos(), angles.sin()


def _split_heads(t: torch.Tensor, n_head: int) -> torch.Tensor:
    """``(..., L, C)`` -> ``(..., nh, L, hs)``."""
    *lead, L, C = t.shape
    return t.view(*lead, L, n_head, C // n_head).transpose(-3, -2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    """``(..., nh, L, hs)`` -> ``(..., L, C)``."""
    *lead, nh, L, hs = t.shape
    return t.transpose(-3, -2).reshape(*lead, L, nh * hs)


class SelfAttention(nn.Module):
    """Multi-head bidirectional self-attention with 2D rotary positions."""

    def __init__(self, config: MemoryConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        q, k, v = (
            _split_heads(t, self.n_head) for t in self.qkv(x).split(C, dim=2)
        )  # (B, nh, L, hs)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        dropout_p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, nh, L, hs)
        return self.resid_dropout(self.proj(_merge_heads(y)))  # (B, L, C)


class AxialAttention(SelfAttention):
    """Self-attention along the last-but-one axis of ``(B, A, L, C)``: each of the A lines alone.

    Same projections as ``SelfAttention``; the attention matrices are small
    (``L`` = 24 or 32), so they are computed explicitly: on a CPU that beats the
    fused kernel's per-sequence overhead.
    """

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        C = x.shape[-1]
        q, k, v = (
            _split_heads(t, self.n_head) for t in self.qkv(x).split(C, dim=-1)
        )  # (B, A, nh, L, hs)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (B, A, nh, L, L)
        weights = F.dropout(scores.softmax(dim=-1), self.dropout, self.training)
        y = weights @ v  # (B, A, nh, L, hs)
        return self.resid_dropout(self.proj(_merge_heads(y)))  # (B, A, L, C)


class MLP(nn.Module):
    """Position-wise feed-forward block (4x width, GELU)."""

    def __init__(self, config: MemoryConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: full attention, or row then column attention (axial).

    With ``adaln`` every LayerNorm output is scaled and shifted per sample by a
    projection of the conditioning vector ``cond`` ``(B, C)`` (zero at init).
    """

    def __init__(self, config: MemoryConfig) -> None:
        super().__init__()
        C = config.n_embd
        self.axial = config.attention == "axial"
        Attention = AxialAttention if self.axial else SelfAttention
        self.ln_1 = nn.LayerNorm(C)
        self.attn = Attention(config)  # full, or along rows when axial
        self.ln_col = nn.LayerNorm(C) if self.axial else None
        self.attn_col = Attention(config) if self.axial else None  # along columns
        self.ln_2 = nn.LayerNorm(C)
        self.mlp = MLP(config)
        norms = 3 if self.axial else 2
        self.ada = nn.Linear(C, 2 * C * norms) if config.adaln else None

    def _modulate(self, y: torch.Tensor, mods: tuple[torch.Tensor, ...], i: int) -> torch.Tensor:
        """``y * (1 + scale_i) + shift_i`` with ``mods`` from ``ada`` (identity without AdaLN)."""
        if not mods:
            return y
        return y * (1 + mods[2 * i]) + mods[2 * i + 1]

    def forward(
        self,
        x: torch.Tensor,
        rotary: list[tuple[torch.Tensor, torch.Tensor]],
        cond: torch.Tensor | None,
    ) -> torch.Tensor:
        """``x``: ``(B, 1 + T, C)`` (full) or ``(B, H, W, C)`` (axial); ``cond``: ``(B, C)``."""
        mods: tuple[torch.Tensor, ...] = ()
        if self.ada is not None and cond is not None:
            shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (-1,)  # broadcast over positions
            mods = tuple(
                m.reshape(shape)
                for m in self.ada(F.silu(cond)).chunk(self.ada.out_features // x.shape[-1], dim=-1)
            )
        x = x + self.attn(self._modulate(self.ln_1(x), mods, 0), *rotary[0])
        if self.attn_col is not None:  # columns: attend along H
            y = self._modulate(self.ln_col(x), mods, 1).transpose(1, 2)  # (B, W, H, C)
            x = x + self.attn_col(y, *rotary[1]).transpose(1, 2)  # (B, H, W, C)
        last = 2 if self.axial else 1
        return x + self.mlp(self._modulate(self.ln_2(x), mods, last))


@dataclass(frozen=True)
class _Distillation:
    """What ``MemoryModel.distill_guidance`` matches: a frozen teacher at a guidance scale."""

    teacher: MemoryModel
    guidance: float
    argmax_weight: float = 0.0
    full_mask: bool = False


class MemoryModel(nn.Module):
    """Bidirectional transformer predicting the next frame's tokens (see module docstring).

    ``mask_id`` (= ``vocab_size``) marks unknown cells in ``next_tokens``.
    """

    kind = "memory"
    config_class = MemoryConfig

    def __init__(self, config: MemoryConfig) -> None:
        super().__init__()
        self.config = config
        self.mask_id = config.vocab_size
        C, V = config.n_embd, config.vocab_size
        self.current_emb = nn.Embedding(V, C)
        # One block of V rows per previous frame (slot k uses rows k*V .. (k+1)*V-1).
        self.context_emb = (
            nn.Embedding((config.context_frames - 1) * V, C) if config.context_frames > 1 else None
        )
        self.next_emb = nn.Embedding(V + 1, C)  # last row = MASK
        self.row_emb = nn.Parameter(torch.zeros(config.grid_height, C))
        self.col_emb = nn.Parameter(torch.zeros(config.grid_width, C))
        self.action_emb = nn.Linear(config.action_dim, C)  # the conditioning vector c
        # The prefix action token (full attention only; axial blocks have no prefix).
        self.action_token_emb = (
            nn.Linear(config.action_dim, C) if config.attention == "full" else None
        )
        # "No action given" (classifier-free guidance), replacing c and the prefix token.
        self.null_action = nn.Parameter(torch.zeros(C)) if config.action_dropout > 0 else None
        self.noise_emb = nn.Linear(1, C) if config.context_noise > 0 else None  # noise rate -> c
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(C)
        self.head = nn.Linear(C, V)
        self.copy_head = nn.Linear(C, 1) if config.copy_gate else None
        self.reward_head = nn.Linear(C, 1) if config.reward_head else None
        self.end_head = nn.Linear(C, 1) if config.end_head else None
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):  # residual projections, scaled as in GPT-2
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        for param in (self.row_emb, self.col_emb):
            nn.init.normal_(param, mean=0.0, std=0.02)
        if self.copy_head is not None:
            nn.init.constant_(self.copy_head.bias, COPY_GATE_INIT)  # start out copying
        for block in self.blocks:  # AdaLN starts as the identity
            if block.ada is not None:
                nn.init.zeros_(block.ada.weight)
                nn.init.zeros_(block.ada.bias)
        if config.attention == "full":
            cos, sin = rotary_tables(config)
            self.register_buffer("rotary_cos", cos, persistent=False)  # (1 + T, R)
            self.register_buffer("rotary_sin", sin, persistent=False)  # (1 + T, R)
        else:
            head_size = C // config.n_head
            cos, sin = rotary_table_1d(config.grid_width, head_size)
            self.register_buffer("rotary_cos", cos, persistent=False)  # (W, hs): along a row
            self.register_buffer("rotary_sin", sin, persistent=False)
            cos, sin = rotary_table_1d(config.grid_height, head_size)
            self.register_buffer("rotary_cos_col", cos, persistent=False)  # (H, hs): a column
            self.register_buffer("rotary_sin_col", sin, persistent=False)
        if context_offsets := config.context_frames - 1:
            self.register_buffer(
                "context_offsets",
                (torch.arange(context_offsets) * V).view(1, -1, 1),  # (1, K-1, 1)
                persistent=False,
            )
        # Guidance distillation (``distill_guidance``): a frozen teacher and how to match it.
        # Kept out of the module tree so the teacher is neither a submodule nor in the state dict.
        self._distill: _Distillation | None = None

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> MemoryModel:
        """Load a saved memory model (``config.json`` + ``model.safetensors``) in eval mode."""
        from elworld.checkpoint import load_model

        return load_model(path, cls, device=device)

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype of the transformer's weights (float32 unless made by ``inference_copy``)."""
        return self.current_emb.weight.dtype

    def inference_copy(self, dtype: torch.dtype) -> MemoryModel:
        """A frozen eval-mode copy in ``dtype`` for sampling without autocast; the output head stays fp32.

        Under bf16 autocast every pass casts each weight and most activations
        again (a third of a CPU dream step); this copy is cast once. Everything
        but the output head computes in ``dtype`` (its residual stream
        included, where autocast keeps fp32); the head reads fp32 cells as
        ``forward`` always does in eval mode, since near-tied logits decide the
        argmax token. A distillation teacher is not copied.
        """
        device = self.current_emb.weight.device
        model = MemoryModel(self.config).to(device)
        model.load_state_dict(self.state_dict(), strict=True)
        model.to(dtype)
        model.head.float()
        return model.eval().requires_grad_(False)

    # ------------------------------------------------------------------ checks
    def _check_tokens(self, name: str, tokens: torch.Tensor, shape: tuple[int, ...], high: int):
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(tokens).__name__}")
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer token ids, got dtype {tokens.dtype}")
        if tuple(tokens.shape) != shape:
            raise ValueError(
                f"{name} must have shape {shape} for this memory model "
                f"(grid {self.config.grid_height}x{self.config.grid_width}, "
                f"context_frames={self.config.context_frames}), got {tuple(tokens.shape)}"
            )
        if tokens.numel() and bool(((tokens < 0) | (tokens >= high)).any()):
            raise ValueError(
                f"{name} values must be in [0, {high}) (vocab_size={self.config.vocab_size}), "
                f"got range [{int(tokens.min())}, {int(tokens.max())}]"
            )

    def _check_inputs(
        self,
        tokens: torch.Tensor,
        actions: torch.Tensor,
        context: torch.Tensor | None,
        next_tokens: torch.Tensor | None,
    ) -> None:
        T, V, K = self.config.tokens_per_frame, self.config.vocab_size, self.config.context_frames
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens)
            raise ValueError(f"tokens must have shape (B, {T}), got {shape}")
        B = tokens.shape[0]
        self._check_tokens("tokens", tokens, (B, T), V)
        if not isinstance(actions, torch.Tensor) or actions.dim() != 2:
            shape = tuple(actions.shape) if isinstance(actions, torch.Tensor) else type(actions)
            raise ValueError(f"actions must have shape (B, {self.config.action_dim}), got {shape}")
        if actions.shape[1] != self.config.action_dim:
            raise ValueError(
                f"actions has {actions.shape[1]} keys per row, but this memory model was built "
                f"for action_dim={self.config.action_dim}"
            )
        if actions.shape[0] != B:
            raise ValueError(f"actions has {actions.shape[0]} rows but tokens has {B}")
        if context is not None:
            self._check_tokens("context", context, (B, K - 1, T), V)
        if next_tokens is not None:
            self._check_tokens("next_tokens", next_tokens, (B, T), V + 1)

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        tokens: torch.Tensor,
        actions: torch.Tensor,
        context: torch.Tensor | None = None,
        next_tokens: torch.Tensor | None = None,
        *,
        drop_action: torch.Tensor | None = None,
        noise_rate: torch.Tensor | None = None,
    ) -> MemoryOutput:
        """Logits for the next frame's tokens.

        ``tokens``: int ``[B, T]`` current frame. ``actions``: ``[B, action_dim]``
        multi-hot. ``context``: int ``[B, context_frames - 1, T]`` previous frames,
        oldest first; ``None`` means a still scene (copies of ``tokens``).
        ``next_tokens``: int ``[B, T]`` known next tokens with ``mask_id`` where
        unknown; ``None`` means all unknown (one-shot). ``drop_action``: bool
        ``[B]``, rows that get the "no action given" embedding instead (needs
        ``action_dropout > 0``). ``noise_rate``: float ``[B]``, the share of
        context tokens known to be corrupted (needs ``context_noise > 0``;
        ``None`` = 0).
        """
        self._check_inputs(tokens, actions, context, next_tokens)
        B, T = tokens.shape
        cfg = self.config
        tokens = tokens.long()
        x = self.current_emb(tokens)  # (B, T, C)
        if self.context_emb is not None:
            if context is None:
                context = tokens.unsqueeze(1).expand(B, cfg.context_frames - 1, T)  # (B, K-1, T)
            slots = context.long() + self.context_offsets  # (B, K-1, T) rows of each slot's table
            x = x + self.context_emb(slots).sum(dim=1)  # (B, T, C)
        if next_tokens is None:
            next_tokens = torch.full_like(tokens, self.mask_id)
        x = x + self.next_emb(next_tokens.long())  # (B, T, C)
        pos = (self.row_emb[:, None, :] + self.col_emb[None, :, :]).view(T, -1)  # (T, C)
        actions = actions.to(x.dtype)
        cond = self.action_emb(actions)  # (B, C)
        prefix = self.action_token_emb(actions) if self.action_token_emb is not None else None
        if drop_action is not None:
            if self.null_action is None:
                raise ValueError("drop_action needs a model trained with action_dropout > 0")
            dropped = drop_action.to(device=x.device, dtype=torch.bool).view(B, 1)
            cond = torch.where(dropped, self.null_action.to(cond.dtype), cond)
            if prefix is not None:
                prefix = torch.where(dropped, self.null_action.to(prefix.dtype), prefix)
        if self.noise_emb is not None:
            rate = noise_rate if noise_rate is not None else x.new_zeros(B)
            cond = cond + self.noise_emb(rate.to(x.dtype).view(B, 1))  # (B, C)
        x = self.drop(x + pos + cond.unsqueeze(1))  # (B, T, C)
        adaln = cond if cfg.adaln else None
        if cfg.attention == "full":
            x = torch.cat([prefix.unsqueeze(1), x], dim=1)  # (B, 1 + T, C)
            rotary = [(self.rotary_cos, self.rotary_sin)]
            for block in self.blocks:
                x = block(x, rotary, adaln)
            x = self.ln_f(x)  # (B, 1 + T, C)
            cells, summary = x[:, 1:], x[:, 0]  # (B, T, C), (B, C) action-token output
        else:
            x = x.view(B, cfg.grid_height, cfg.grid_width, -1)  # (B, H, W, C)
            rotary = [
                (self.rotary_cos, self.rotary_sin),
                (self.rotary_cos_col, self.rotary_sin_col),
            ]
            for block in self.blocks:
                x = block(x, rotary, adaln)
            cells = self.ln_f(x.reshape(B, T, -1))  # (B, T, C)
            summary = cells.mean(dim=1) + cond  # (B, C)
        if self.training:
            logits = self.head(cells)  # (B, T, V)
        else:  # fp32 even under bf16 autocast: near-tied logits decide the argmax token
            with torch.autocast(device_type=cells.device.type, enabled=False):
                logits = self.head(cells.float())  # (B, T, V)
        if self.copy_head is not None:  # bonus on the current token's logit, decided per cell
            logits = logits.scatter_add(
                -1, tokens.unsqueeze(-1), self.copy_head(cells).to(logits.dtype)
            )
        reward = self.reward_head(summary).squeeze(-1) if self.reward_head is not None else None
        end_logit = self.end_head(summary).squeeze(-1) if self.end_head is not None else None
        return MemoryOutput(logits=logits, reward=reward, end_logit=end_logit)

    # ---------------------------------------------------------- distillation
    def distill_guidance(
        self,
        teacher: MemoryModel | None,
        guidance: float = 2.0,
        *,
        argmax_weight: float = 0.0,
        full_mask: bool = False,
    ) -> None:
        """Train this model so one conditional pass gives ``teacher``'s guided distribution.

        From then on ``compute_loss`` replaces the token cross-entropy by the KL
        divergence from the teacher's classifier-free guided distribution at
        ``guidance`` (``uncond + guidance * (cond - uncond)``) to this model's
        conditional one, on the same masked inputs; rows trained without their
        action (``action_dropout``) match the teacher's unconditional
        distribution, so the pair stays usable for guidance on top. The reward
        and end heads keep their losses. ``teacher=None`` turns it off. The
        teacher (usually the same checkpoint) is frozen and never saved.

        ``argmax_weight`` adds that weight times the cross-entropy to the
        teacher's most likely token per cell (mode-seeking: an argmax rollout
        then follows the teacher's). ``full_mask`` masks every target cell of
        every row, the only input a one-pass sampler (``steps=1``) ever gives.
        """
        if teacher is None:
            self._distill = None
            return
        if teacher.null_action is None:
            raise ValueError(
                "guidance distillation needs a teacher trained with action_dropout > 0"
            )
        if teacher.config != self.config:
            raise ValueError("the distillation teacher must have this model's config")
        if not math.isfinite(guidance) or guidance <= 1.0:
            raise ValueError(f"distillation guidance must be a finite number > 1, got {guidance}")
        if not math.isfinite(argmax_weight) or argmax_weight < 0:
            raise ValueError(
                f"distillation argmax_weight must be a finite number >= 0, got {argmax_weight}"
            )
        teacher.eval().requires_grad_(False)
        self._distill = _Distillation(teacher, float(guidance), float(argmax_weight), full_mask)

    @torch.no_grad()
    def _teacher_logits(
        self,
        tokens: torch.Tensor,
        actions: torch.Tensor,
        context: torch.Tensor | None,
        next_tokens: torch.Tensor,
        drop_action: torch.Tensor | None,
        noise_rate: torch.Tensor | None,
    ) -> torch.Tensor:
        """The teacher's float logits ``(B, T, V)``: guided, or unconditional on dropped rows."""
        assert self._distill is not None
        teacher, guidance = self._distill.teacher, self._distill.guidance
        B = tokens.shape[0]
        cond, uncond, _ = teacher._guided_pair(tokens, actions, context, next_tokens, noise_rate)
        guided = uncond + guidance * (cond - uncond)
        if drop_action is None:
            return guided
        return torch.where(drop_action.view(B, 1, 1), uncond, guided)

    # -------------------------------------------------------------------- loss
    def _mask_counts(self, rows: int, device: torch.device) -> torch.Tensor:
        """How many target cells to mask in each training row (``[rows]``, in [1, T])."""
        T = self.config.tokens_per_frame
        u = torch.rand(rows, device=device)
        if self.config.mask_schedule == "cosine":
            ratio = torch.cos(u * math.pi / 2)
        elif self.config.mask_schedule == "linear":
            ratio = 1.0 - u
        else:  # "full"
            ratio = torch.ones_like(u)
        full = torch.rand(rows, device=device) < FULL_MASK_FRACTION
        ratio = torch.where(full, torch.ones_like(ratio), ratio)
        return (ratio * T).ceil().long().clamp(1, T)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> LossOutput:
        """Masked next-frame token cross-entropy plus the weighted reward / episode-end losses.

        ``batch`` follows docs/ARCHITECTURE.md: ``context`` int64 ``[B, K, T]``
        (last = current frame), ``action`` ``[B, action_dim]``, ``target`` int64
        ``[B, T]``, ``has_target`` / ``has_reward`` / ``has_done`` bool ``[B]``,
        ``reward`` / ``done`` float ``[B]``.
        """
        required = ("context", "action", "target", "has_target")
        if missing := [key for key in required if key not in batch]:
            raise ValueError(f"memory batch is missing {missing}; it has {sorted(batch)}")
        cfg = self.config
        frames = batch["context"]
        if frames.dim() != 3 or frames.shape[1] != cfg.context_frames:
            raise ValueError(
                f"batch['context'] must have shape (B, context_frames={cfg.context_frames}, "
                f"{cfg.tokens_per_frame}), got {tuple(frames.shape)}"
            )
        B, T = frames.shape[0], frames.shape[2]
        drop_action = noise_rate = None
        if self.training and cfg.action_dropout > 0:  # rows trained without their action
            drop_action = torch.rand(B, device=frames.device) < cfg.action_dropout
        if self.training and cfg.context_noise > 0:  # corrupt the context, say how much
            noise_rate = torch.rand(B, device=frames.device) * cfg.context_noise  # (B,)
            corrupt = torch.rand(frames.shape, device=frames.device) < noise_rate.view(B, 1, 1)
            frames = torch.where(corrupt, torch.randint_like(frames, cfg.vocab_size), frames)
        tokens, context = frames[:, -1], frames[:, :-1]  # (B, T), (B, K-1, T)
        has_target = batch["has_target"].to(device=tokens.device, dtype=torch.bool)
        # Rows without a next frame may hold any filler: replace it before the range check.
        target = batch["target"]
        if isinstance(target, torch.Tensor) and tuple(target.shape) == (B, T):
            target = torch.where(has_target.unsqueeze(1), target, torch.zeros_like(target))
        self._check_tokens("batch['target']", target, (B, T), cfg.vocab_size)

        # Mask a random number of cells per row (all of them for rows without a target).
        counts = self._mask_counts(B, tokens.device)
        full = ~has_target
        if self._distill is not None and self._distill.full_mask:
            full = torch.ones_like(has_target)
        counts = torch.where(full, torch.full_like(counts, T), counts)
        rank = torch.rand(B, T, device=tokens.device).argsort(dim=1).argsort(dim=1)  # (B, T)
        masked = rank < counts.unsqueeze(1)  # (B, T)
        next_tokens = torch.where(masked, torch.full_like(target, self.mask_id), target)

        out = self(
            tokens,
            batch["action"],
            context if cfg.context_frames > 1 else None,
            next_tokens,
            drop_action=drop_action,
            noise_rate=noise_rate,
        )
        scored = masked & has_target.unsqueeze(1)  # (B, T)
        if self._distill is not None:  # match the guided teacher instead of the data
            teacher = self._teacher_logits(
                tokens, batch["action"], context if cfg.context_frames > 1 else None,
                next_tokens, drop_action, noise_rate,
            )  # fmt: skip
            loss, metrics = self._distill_loss(
                out.logits, teacher, scored, self._distill.argmax_weight
            )
        elif bool(scored.any()):
            logits = out.logits[scored]  # (N, V)
            token_ce = F.cross_entropy(logits, target[scored])
            token_acc = (logits.argmax(dim=-1) == target[scored]).float().mean().item()
            loss, metrics = token_ce, {"token_ce": token_ce.item(), "token_acc": token_acc}
        else:
            token_ce = out.logits.sum() * 0.0
            loss, metrics = token_ce, {"token_ce": 0.0, "token_acc": 0.0}

        if out.reward is not None and "has_reward" in batch:
            rows = batch["has_reward"].to(device=tokens.device, dtype=torch.bool)
            if bool(rows.any()):
                reward = batch["reward"].to(out.reward.dtype)
                reward_mse = F.mse_loss(out.reward[rows], reward[rows])
                loss = loss + cfg.head_loss_weight * reward_mse
                metrics["reward_mse"] = reward_mse.item()
        if out.end_logit is not None and "has_done" in batch:
            rows = batch["has_done"].to(device=tokens.device, dtype=torch.bool)
            if bool(rows.any()):
                done = batch["done"].to(out.end_logit.dtype)
                pos_weight = out.end_logit.new_tensor(cfg.end_pos_weight)
                end_bce = F.binary_cross_entropy_with_logits(
                    out.end_logit[rows], done[rows], pos_weight=pos_weight
                )
                loss = loss + cfg.head_loss_weight * end_bce
                metrics["end_bce"] = end_bce.item()
        metrics["loss"] = loss.item()
        return LossOutput(loss=loss, metrics=metrics)

    @staticmethod
    def _distill_loss(
        logits: torch.Tensor, teacher: torch.Tensor, scored: torch.Tensor, argmax_weight: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean KL(teacher || student) over the ``scored`` cells, plus ``argmax_weight`` times
        the cross-entropy to the teacher's argmax; metrics include the argmax agreement."""
        if not bool(scored.any()):
            return logits.sum() * 0.0, {"token_kl": 0.0, "teacher_agree": 0.0}
        student = F.log_softmax(logits[scored].float(), dim=-1)  # (N, V)
        target = F.log_softmax(teacher[scored], dim=-1)  # (N, V)
        kl = F.kl_div(student, target, log_target=True, reduction="batchmean")
        teacher_argmax = target.argmax(dim=-1)  # (N,)
        agree = (student.argmax(dim=-1) == teacher_argmax).float().mean().item()
        metrics = {"token_kl": kl.item(), "teacher_agree": agree}
        if argmax_weight == 0:
            return kl, metrics
        argmax_ce = F.nll_loss(student, teacher_argmax)
        metrics["argmax_ce"] = argmax_ce.item()
        return kl + argmax_weight * argmax_ce, metrics

    # ---------------------------------------------------------------- sampling
    def _guided_pair(
        self,
        tokens: torch.Tensor,
        actions: torch.Tensor,
        context: torch.Tensor | None,
        next_tokens: torch.Tensor,
        noise_rate: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, MemoryOutput]:
        """Float logits with and without the keys (2 x ``(B, T, V)``) in one batch, and the
        conditional rows' output (heads included)."""
        B = tokens.shape[0]
        both = self(  # one batch: B conditional rows, then the same B rows without the action
            tokens.repeat(2, 1),
            actions.repeat(2, 1),
            context.repeat(2, 1, 1) if context is not None else None,
            next_tokens.repeat(2, 1),
            drop_action=torch.arange(2 * B, device=tokens.device) >= B,
            noise_rate=noise_rate.repeat(2) if noise_rate is not None else None,
        )
        cond, uncond = both.logits.float().split(B)  # 2 x (B, T, V)
        out = MemoryOutput(
            logits=cond,
            reward=both.reward[:B] if both.reward is not None else None,
            end_logit=both.end_logit[:B] if both.end_logit is not None else None,
        )
        return cond, uncond, out

    def _logits(
        self,
        tokens: torch.Tensor,
        actions: torch.Tensor,
        context: torch.Tensor | None,
        next_tokens: torch.Tensor,
        guidance: float,
    ) -> tuple[torch.Tensor, MemoryOutput]:
        """Float logits ``(B, T, V)``, guided when ``guidance != 1``, and the conditional output."""
        if guidance == 1.0:
            out = self(tokens, actions, context, next_tokens)
            return out.logits.float(), out
        cond, uncond, out = self._guided_pair(tokens, actions, context, next_tokens)
        return uncond + guidance * (cond - uncond), out

    @staticmethod
    def _draw(
        logits: torch.Tensor, temperature: float, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per cell from float ``logits`` ``(B, T, V)`` and its probability ``(B, T)``.

        Inverse-CDF sampling: one exp and one cumulative sum per cell and a
        single uniform number per cell (Gumbel-max needs V uniforms and two
        logs per cell, ~3x the time on a CPU). ``temperature=0``: the argmax.
        """
        if temperature == 0:
            sampled = logits.argmax(dim=-1)  # (B, T)
            weights = (logits - logits.amax(dim=-1, keepdim=True)).exp()  # (B, T, V)
        else:
            scaled = logits / temperature
            weights = (scaled - scaled.amax(dim=-1, keepdim=True)).exp_()  # (B, T, V), max 1
            cdf = weights.cumsum(dim=-1)  # (B, T, V)
            device = generator.device if generator is not None else logits.device
            u = torch.rand((*logits.shape[:-1], 1), generator=generator, device=device)
            u = u.to(logits.device) * cdf[..., -1:]  # (B, T, 1) in [0, total)
            sampled = torch.searchsorted(cdf, u).clamp_(max=logits.shape[-1] - 1).squeeze(-1)
        total = weights.sum(dim=-1)  # (B, T)
        prob = weights.gather(-1, sampled.unsqueeze(-1)).squeeze(-1) / total  # (B, T)
        return sampled, prob

    @torch.no_grad()
    def sample(
        self,
        tokens: torch.Tensor,
        actions: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        steps: int = 1,
        guidance: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> MemorySample:
        """Sample the next frame in ``steps`` forward passes (MaskGIT-style refinement).

        ``temperature=0`` takes the argmax (deterministic); ``top_k`` keeps the k
        most likely tokens per cell; ``guidance`` is the classifier-free
        guidance scale (1 = off; needs a model trained with ``action_dropout``);
        all randomness comes from ``generator``. ``steps`` is capped at
        ``tokens_per_frame``. The reward and episode-end probability come from
        the last (conditional) pass.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be a positive integer or None, got {top_k}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if guidance != 1.0 and self.null_action is None:
            raise ValueError(
                f"guidance={guidance} needs a memory model trained with action_dropout > 0; "
                "this one was not (use guidance=1)"
            )
        self._check_inputs(tokens, actions, context, None)
        T, V = self.config.tokens_per_frame, self.config.vocab_size
        steps = min(steps, T)
        next_tokens = torch.full_like(tokens, self.mask_id, dtype=torch.long)  # (B, T) all MASK
        known_count = 0
        for step in range(1, steps + 1):
            # Cells known after this step: cosine schedule, at least one new per step.
            masked_after = math.floor(T * math.cos(math.pi / 2 * step / steps))
            target_known = min(max(T - masked_after, known_count + 1), T - (steps - step))
            logits, out = self._logits(tokens, actions, context, next_tokens, guidance)
            if top_k is not None and top_k < V:
                kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (B, T, 1)
                logits = logits.masked_fill(logits < kth, float("-inf"))
            sampled, confidence = self._draw(logits, temperature, generator)  # (B, T) each
            if target_known >= T:
                next_tokens = torch.where(next_tokens == self.mask_id, sampled, next_tokens)
                break
            known = next_tokens != self.mask_id  # (B, T)
            confidence = confidence.masked_fill(known, float("inf"))
            commit = confidence.topk(target_known, dim=1).indices  # (B, target_known)
            chosen = torch.zeros_like(known).scatter_(1, commit, True)
            next_tokens = torch.where(chosen & ~known, sampled, next_tokens)
            known_count = target_known
        B = next_tokens.shape[0]
        zeros = torch.zeros(B, device=next_tokens.device)
        reward = out.reward.float() if out.reward is not None else zeros
        end_prob = torch.sigmoid(out.end_logit.float()) if out.end_logit is not None else zeros
        return MemorySample(tokens=next_tokens, reward=reward, end_prob=end_prob)
