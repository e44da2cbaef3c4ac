"""The vision model: a VQ-VAE that turns frames into a grid of discrete tokens.

Design (RGB ``[B, 3, 192, 256]`` -> tokens ``[B, 24, 32]`` with the defaults):

- Encoder: ``downsamples`` stride-2 4x4 convolutions (each halves H and W) with
  ``width`` channels after the first one, doubling at every further one
  (16 -> 32 -> 64 by default), then ``res_blocks`` residual blocks (GroupNorm,
  SiLU, 3x3 conv) and a 1x1 conv to ``code_dim``. The high-resolution stages
  dominate the cost on a CPU, so they are thin and carry no norms or residual
  blocks; the depth sits at grid resolution. The defaults train at roughly
  30-70 frames/s (batch 16) on two CPU cores; on a GPU, ``width=32`` or more
  buys quality for about 4x the compute per doubling.
- Quantizer (``VectorQuantizer``): nearest codebook entry per grid cell,
  straight-through gradients and a commitment loss. The codebook is not trained
  by gradients but by an exponential moving average (EMA) of the encoder
  outputs assigned to each code. It is initialised from encoder outputs of the
  first training batch, and codes whose EMA usage falls below
  ``dead_code_threshold`` are restarted at random encoder outputs of the current
  batch. Under ``torch.distributed`` the EMA statistics are all-reduced and the
  initial/restart vectors broadcast from rank 0, so every rank keeps an
  identical codebook.
- Decoder: mirror of the encoder (3x3 conv, residual blocks, ``downsamples``
  stride-2 transposed convolutions) and a sigmoid, so images are in ``[0, 1]``.

All EMA state lives in buffers, so it is part of the ``state_dict``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from elworld.frames import frames_to_tensor
from elworld.model.common import LossOutput


@dataclass
class VisionConfig:
    """Hyperparameters of ``VisionModel`` (saved as ``config.json`` with checkpoints)."""

    image_height: int = 192
    image_width: int = 256
    channels: int = 3
    width: int = 16  # channels at 1/2 resolution; doubles at each further downsample
    downsamples: int = 3  # each halves H and W: grid = image / 2**downsamples
    res_blocks: int = 2  # residual blocks on each side (encoder, decoder), at grid resolution
    code_dim: int = 64
    codebook_size: int = 512
    commitment_weight: float = 0.25
    ema_decay: float = 0.99
    dead_code_threshold: float = 1.0  # EMA usage count below which a code is restarted

    def __post_init__(self) -> None:
        positive = ("image_height", "image_width", "channels", "width", "code_dim")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"VisionConfig.{name} must be a positive int, got {value!r}")
        for name, low in (("downsamples", 1), ("res_blocks", 0), ("codebook_size", 2)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"VisionConfig.{name} must be an int >= {low}, got {value!r}")
        factor = 2**self.downsamples
        for name in ("image_height", "image_width"):
            if getattr(self, name) % factor:
                raise ValueError(
                    f"VisionConfig.{name}={getattr(self, name)} must be divisible by "
                    f"2**downsamples={factor}"
                )
        if not self.commitment_weight >= 0.0:
            raise ValueError(
                f"VisionConfig.commitment_weight must be >= 0, got {self.commitment_weight!r}"
            )
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"VisionConfig.ema_decay must be in (0, 1), got {self.ema_decay!r}")
        if not self.dead_code_threshold >= 0.0:
            raise ValueError(
                f"VisionConfig.dead_code_threshold must be >= 0, got {self.dead_code_threshold!r}"
            )

    @property
    def grid_height(self) -> int:
        """Token grid height (``image_height / 2**downsamples``)."""
        return self.image_height // 2**self.downsamples

    @property
    def grid_width(self) -> int:
        """Token grid width (``image_width / 2**downsamples``)."""
        return self.image_width // 2**self.downsamples

    @property
    def tokens_per_frame(self) -> int:
        """Tokens per frame (``grid_height * grid_width``)."""
        return self.grid_height * self.grid_width


@dataclass
class VisionOutput:
    """What ``VisionModel.forward`` returns."""

    reconstruction: torch.Tensor  # (B, C, H, W) in [0, 1]
    tokens: torch.Tensor  # (B, gh, gw) int64
    loss: torch.Tensor  # recon_loss + commitment_weight * commit_loss
    recon_loss: torch.Tensor  # MSE between reconstruction and input
    commit_loss: torch.Tensor  # MSE between encoder output and its (detached) code
    perplexity: torch.Tensor  # exp(entropy) of the code distribution in this batch
    usage: torch.Tensor  # share of the codebook used in this batch


def _groups(channels: int) -> int:
    """GroupNorm groups: 32 when possible, else the largest divisor of ``channels`` <= 32."""
    return max(g for g in range(1, min(32, channels) + 1) if channels % g == 0)


class ResBlock(nn.Module):
    """Pre-activation residual block: (GroupNorm, SiLU, 3x3 conv) x 2 plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(_groups(channels), channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(_groups(channels), channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def stage_channels(config: VisionConfig) -> list[int]:
    """Channels after each downsample: ``width`` at 1/2 resolution, doubling per stage."""
    return [config.width * 2**i for i in range(config.downsamples)]


class Encoder(nn.Module):
    """Images ``(B, C, H, W)`` -> continuous latents ``(B, code_dim, gh, gw)``."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        chans = stage_channels(config)
        layers: list[nn.Module] = [nn.Conv2d(config.channels, chans[0], 4, stride=2, padding=1)]
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.SiLU(), nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)]
        w = chans[-1]
        layers += [ResBlock(w) for _ in range(config.res_blocks)]
        layers += [nn.GroupNorm(_groups(w), w), nn.SiLU(), nn.Conv2d(w, config.code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class Decoder(nn.Module):
    """Quantized latents ``(B, code_dim, gh, gw)`` -> images ``(B, C, H, W)`` in ``[0, 1]``."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        chans = stage_channels(config)[::-1]  # grid resolution first
        w = chans[0]
        layers: list[nn.Module] = [nn.Conv2d(config.code_dim, w, 3, padding=1)]
        layers += [ResBlock(w) for _ in range(config.res_blocks)]
        layers += [nn.GroupNorm(_groups(w), w), nn.SiLU()]
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.SiLU()]
        layers += [nn.ConvTranspose2d(chans[-1], config.channels, 4, stride=2, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z))


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantizer with an EMA-updated codebook and dead-code restarts.

    In training mode, ``forward`` also updates the codebook (EMA of assigned
    encoder outputs), initialises it from the first batch and restarts dead
    codes. In eval mode it only looks codes up.
    """

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        k, d = config.codebook_size, config.code_dim
        self.codebook_size = k
        self.code_dim = d
        self.decay = config.ema_decay
        self.threshold = config.dead_code_threshold
        self.eps = 1e-5
        # Separate allocations: safetensors refuses tensors that share storage.
        self.register_buffer("embedding", torch.empty(k, d).uniform_(-1.0 / k, 1.0 / k))
        self.register_buffer("ema_cluster_size", torch.zeros(k))
        self.register_buffer("ema_embed_sum", torch.zeros(k, d))
        self.register_buffer("initialized", torch.zeros(1, dtype=torch.uint8))

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for ``indices`` of any shape -> ``(*indices.shape, code_dim)``."""
        return F.embedding(indices, self.embedding)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of ``flat`` ``(N, code_dim)`` -> ``(N,)``."""
        emb = self.embedding
        # ||x - e||^2 = ||x||^2 - 2 x.e + ||e||^2; ||x||^2 does not change the argmin.
        dist_sq = emb.pow(2).sum(1)[None, :] - 2.0 * flat @ emb.t()  # (N, K)
        return dist_sq.argmin(dim=1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize ``z`` ``(B, D, gh, gw)``.

        Returns ``(z_q, indices, counts)``: straight-through quantized latents
        ``(B, D, gh, gw)``, token indices ``(B, gh, gw)`` and per-code counts
        ``(K,)`` of this (local) batch.
        """
        b, d, gh, gw = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = z.float().permute(0, 2, 3, 1).reshape(-1, d)  # (B*gh*gw, D)
            if self.training and not bool(self.initialized.item()):
                self._init_codebook(flat.detach())
            indices = self.nearest(flat.detach())  # (B*gh*gw,)
            counts = torch.bincount(indices, minlength=self.codebook_size).float()  # (K,)
            z_q = self.lookup(indices).view(b, gh, gw, d).permute(0, 3, 1, 2)  # (B, D, gh, gw)
            if self.training:
                self._ema_update(flat.detach(), indices, counts)
                self._restart_dead_codes(flat.detach())
        z_q = z + (z_q.to(z.dtype) - z).detach()  # straight-through estimator
        return z_q, indices.view(b, gh, gw), counts

    def _sample_rows(self, flat: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` random rows of ``flat`` (rank 0's choice under torch.distributed)."""
        if flat.shape[0] >= n:
            rows = flat[torch.randperm(flat.shape[0], device=flat.device)[:n]]
        else:
            rows = flat[torch.randint(flat.shape[0], (n,), device=flat.device)]
        rows = rows.contiguous()  # (n, D)
        if _distributed():
            dist.broadcast(rows, src=0)
        return rows

    @torch.no_grad()
    def _init_codebook(self, flat: torch.Tensor) -> None:
        """Set every code to a random encoder output of this batch."""
        self.embedding.copy_(self._sample_rows(flat, self.codebook_size))
        self.ema_embed_sum.copy_(self.embedding)
        self.ema_cluster_size.fill_(1.0)
        self.initialized.fill_(1)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> None:
        """Move each used code towards the mean of the encoder outputs assigned to it."""
        embed_sum = torch.zeros_like(self.ema_embed_sum)  # (K, D)
        embed_sum.index_add_(0, indices, flat)
        counts = counts.clone()
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(embed_sum)
        self.ema_cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_embed_sum.mul_(self.decay).add_(embed_sum, alpha=1 - self.decay)
        # Laplace smoothing keeps rarely used codes from dividing by ~0.
        total = self.ema_cluster_size.sum()
        size = (self.ema_cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.embedding.copy_(self.ema_embed_sum / size.unsqueeze(1))

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> None:
        """Reset codes whose EMA usage fell below the threshold to random batch vectors."""
        dead = self.ema_cluster_size < self.threshold  # (K,), identical on every rank
        n_dead = int(dead.sum().item())
        if n_dead == 0:
            return
        fresh = self._sample_rows(flat, n_dead)  # (n_dead, D)
        self.embedding[dead] = fresh
        self.ema_embed_sum[dead] = fresh * self.threshold
        self.ema_cluster_size[dead] = self.threshold

    def usage_stats(self) -> dict[str, float]:
        """``perplexity`` and ``active_share`` of the codebook from the EMA cluster sizes."""
        sizes = self.ema_cluster_size.detach().float()
        total = float(sizes.sum())
        if total <= 0:
            return {"perplexity": 0.0, "active_share": 0.0}
        probs = sizes / total
        entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
        active = (sizes > self.threshold).float().mean()
        return {"perplexity": float(entropy.exp()), "active_share": float(active)}


class VisionModel(nn.Module):
    """VQ-VAE: frames ``(B, 3, H, W)`` in ``[0, 1]`` <-> tokens ``(B, gh, gw)``.

    ``encode`` and ``decode`` are the tokenizer API used by the memory model and
    the dream env; ``forward`` / ``compute_loss`` train it. Calling it in
    training mode also updates the EMA codebook (see ``VectorQuantizer``).
    """

    kind = "vision"
    config_class = VisionConfig

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = VectorQuantizer(config)
        self.decoder = Decoder(config)

    def _check_images(self, images: torch.Tensor) -> None:
        c = self.config
        expected = (c.channels, c.image_height, c.image_width)
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            kind = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a float tensor with values in [0, 1], got {kind}")
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape (B, {', '.join(map(str, expected))}), "
                f"got {tuple(images.shape)}"
            )

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Tokenize images ``(B, 3, H, W)`` float in ``[0, 1]`` -> int64 ``(B, gh, gw)``.

        Never updates the codebook, whatever the module's mode.
        """
        self._check_images(images)
        z = self.encoder(images)  # (B, D, gh, gw)
        b, d, gh, gw = z.shape
        flat = z.float().permute(0, 2, 3, 1).reshape(-1, d)  # (B*gh*gw, D)
        return self.quantizer.nearest(flat).view(b, gh, gw)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Render tokens int ``(B, gh, gw)`` -> images ``(B, 3, H, W)`` in ``[0, 1]``.

        Raises:
            ValueError: wrong grid shape, non-integer dtype, or a token outside
                ``[0, codebook_size)``.
        """
        c = self.config
        grid = (c.grid_height, c.grid_width)
        if (
            not isinstance(tokens, torch.Tensor)
            or tokens.ndim != 3
            or tuple(tokens.shape[1:]) != grid
        ):
            shape = (
                tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            )
            raise ValueError(f"tokens must have shape (B, {grid[0]}, {grid[1]}), got {shape}")
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise ValueError(f"tokens must be an integer tensor, got {tokens.dtype}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= c.codebook_size):
            raise ValueError(
                f"tokens must be in [0, {c.codebook_size}), got values in "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )
        z_q = self.quantizer.lookup(tokens.long()).permute(0, 3, 1, 2)  # (B, D, gh, gw)
        return self.decoder(z_q.contiguous())

    def forward(self, images: torch.Tensor) -> VisionOutput:
        """Encode, quantize and reconstruct ``images`` ``(B, 3, H, W)`` in ``[0, 1]``."""
        self._check_images(images)
        z = self.encoder(images)  # (B, D, gh, gw)
        z_q, tokens, counts = self.quantizer(z)
        reconstruction = self.decoder(z_q)  # (B, 3, H, W)
        recon_loss = F.mse_loss(reconstruction.float(), images.float())
        commit_loss = F.mse_loss(z.float(), z_q.detach().float())
        loss = recon_loss + self.config.commitment_weight * commit_loss
        probs = counts / counts.sum().clamp_min(1.0)
        perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-12))).sum())
        usage = (counts > 0).float().mean()
        return VisionOutput(
            reconstruction=reconstruction,
            tokens=tokens,
            loss=loss,
            recon_loss=recon_loss,
            commit_loss=commit_loss,
            perplexity=perplexity,
            usage=usage,
        )

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> LossOutput:
        """Training loss for ``batch["frames"]`` uint8 ``(B, H, W, 3)``.

        Metrics: ``loss``, ``recon_mse``, ``psnr`` (dB), ``commit``,
        ``perplexity`` and ``usage`` (share of codes used in the batch).
        """
        if "frames" not in batch:
            raise KeyError(f"vision batch needs a 'frames' entry, got keys {sorted(batch)}")
        device = next(self.parameters()).device
        out = self(frames_to_tensor(batch["frames"], device=device))
        mse = float(out.recon_loss.detach())
        metrics = {
            "loss": float(out.loss.detach()),
            "recon_mse": mse,
            "psnr": 10.0 * math.log10(1.0 / max(mse, 1e-10)),
            "commit": float(out.commit_loss.detach()),
            "perplexity": float(out.perplexity),
            "usage": float(out.usage),
        }
        return LossOutput(loss=out.loss, metrics=metrics)

    def codebook_usage(self) -> dict[str, float]:
        """``perplexity`` and ``active_share`` (codes with EMA usage > threshold) of the codebook."""
        return self.quantizer.usage_stats()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> VisionModel:
        """Load a saved vision model (eval mode) from a checkpoint folder."""
        from elworld.checkpoint import load_model

        return load_model(path, cls, device=device)
