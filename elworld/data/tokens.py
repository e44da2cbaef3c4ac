"""Token cache: every episode's frames encoded once by the vision model.

``build_token_cache`` writes ``cache_dir/<stem>-<hash>.tokens.npy``, uint16
``(N, grid_height, grid_width)`` per episode (frames resized to the model's
``config.image_height/image_width``), and a ``manifest.json`` naming the vision
model (its checkpoint fingerprint), its input size and grid. A cache built by a
different vision model is removed and rebuilt, so memory training never mixes
tokens from two codebooks.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from elworld.atomic import atomic_path
from elworld.data.datasets import cache_file, cached_array_ok, write_array_atomic
from elworld.data.episodes import DataError, inspect_episode, iter_frames
from elworld.frames import FRAME_HEIGHT, FRAME_WIDTH, frames_to_tensor

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
MAX_CODEBOOK_SIZE = 65536  # token ids are stored as uint16


def read_manifest(cache_dir: str | Path) -> dict[str, Any] | None:
    """The token cache's manifest, or ``None`` when there is none (or it is unreadable)."""
    path = Path(cache_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.warning("ignoring unreadable token cache manifest %s: %s", path, error)
        return None
    return manifest if isinstance(manifest, dict) else None


def _write_manifest(cache_dir: Path, manifest: dict[str, Any]) -> None:
    path = cache_dir / MANIFEST_NAME
    with atomic_path(path, prefix=".", suffix=f".{os.getpid()}.tmp") as tmp, open(tmp, "w") as fp:
        json.dump(manifest, fp, indent=2)


@dataclass
class _ModelSpec:
    image_height: int
    image_width: int
    grid_height: int
    grid_width: int
    codebook_size: int | None


def _model_spec(vision_model: torch.nn.Module) -> _ModelSpec:
    """Input size, token grid and codebook size from ``vision_model.config``."""
    config = getattr(vision_model, "config", None)
    try:
        grid_height, grid_width = int(config.grid_height), int(config.grid_width)
    except AttributeError as error:
        raise TypeError(
            "vision_model must have .config.grid_height and .config.grid_width "
            f"(an elworld VisionModel), got {type(vision_model).__name__}"
        ) from error
    codebook_size = getattr(config, "codebook_size", None)
    return _ModelSpec(
        image_height=int(getattr(config, "image_height", FRAME_HEIGHT)),
        image_width=int(getattr(config, "image_width", FRAME_WIDTH)),
        grid_height=grid_height,
        grid_width=grid_width,
        codebook_size=None if codebook_size is None else int(codebook_size),
    )


def build_token_cache(
    paths: Sequence[str | Path],
    vision_model: torch.nn.Module,
    fingerprint: str,
    cache_dir: str | Path,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> list[Path]:
    """Encode every episode's frames to tokens once; return the token files in ``paths`` order.

    ``fingerprint`` identifies the vision model (``checkpoint_fingerprint`` of
    its checkpoint). When it differs from the one in ``cache_dir``'s manifest,
    the old token files are removed and every episode is re-encoded; otherwise
    existing valid files are reused.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    spec = _model_spec(vision_model)
    if spec.codebook_size is not None and spec.codebook_size > MAX_CODEBOOK_SIZE:
        raise ValueError(
            f"vision model codebook has {spec.codebook_size} entries; the token cache stores uint16 ids "
            f"and holds at most {MAX_CODEBOOK_SIZE}"
        )
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "version": MANIFEST_VERSION,
        "fingerprint": fingerprint,
        "image_height": spec.image_height,
        "image_width": spec.image_width,
        "grid_height": spec.grid_height,
        "grid_width": spec.grid_width,
        "codebook_size": spec.codebook_size,
        "dtype": "uint16",
    }
    old = read_manifest(cache_dir)
    if old != manifest:
        stale = sorted(cache_dir.glob("*.tokens.npy"))
        if old is not None or stale:
            logger.info(
                "token cache %s was built by another vision model (fingerprint %s, now %s); "
                "removing %d token files and re-encoding",
                cache_dir,
                None if old is None else old.get("fingerprint"),
                fingerprint,
                len(stale),
            )
        for file in stale:
            file.unlink()
        _write_manifest(cache_dir, manifest)

    was_training = vision_model.training
    vision_model.eval()
    outputs = []
    try:
        for path in tqdm([Path(p) for p in paths], desc="encoding tokens", unit="episode"):
            info = inspect_episode(path)
            target = cache_file(path, cache_dir, "tokens.npy")
            shape = (info.num_frames, spec.grid_height, spec.grid_width)
            if cached_array_ok(target, shape, np.uint16):
                logger.debug("reusing token cache %s", target)
            else:
                write_array_atomic(
                    target,
                    shape,
                    np.uint16,
                    lambda array, path=path: _encode_episode(
                        path, vision_model, spec, array, batch_size, device
                    ),
                )
                logger.debug("wrote token cache %s", target)
            outputs.append(target)
    finally:
        vision_model.train(was_training)
    return outputs


@torch.no_grad()
def _encode_episode(
    path: Path,
    vision_model: torch.nn.Module,
    spec: _ModelSpec,
    out: np.ndarray,
    batch_size: int,
    device: str | torch.device,
) -> None:
    """Encode ``path``'s frames into ``out`` (``(N, gh, gw)`` uint16), a batch at a time."""
    start = 0
    frame_batches = iter_frames(
        path, chunk=batch_size, height=spec.image_height, width=spec.image_width
    )
    for frames in frame_batches:  # (B, H, W, 3) uint8
        images = frames_to_tensor(frames, device=device)  # (B, 3, H, W) in [0, 1]
        tokens = vision_model.encode(images).cpu()  # (B, gh, gw)
        if tuple(tokens.shape) != (len(frames), *out.shape[1:]):
            raise ValueError(
                f"vision_model.encode returned shape {tuple(tokens.shape)}, expected "
                f"{(len(frames), *out.shape[1:])} (batch, grid_height, grid_width)"
            )
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= MAX_CODEBOOK_SIZE):
            raise ValueError(
                f"vision_model.encode returned token ids outside [0, {MAX_CODEBOOK_SIZE}) for {path}"
            )
        out[start : start + len(frames)] = tokens.numpy().astype(np.uint16)
        start += len(frames)


def load_tokens(path: str | Path) -> np.memmap:
    """Memory-map a token file: uint16 ``(N, grid_height, grid_width)``."""
    path = Path(path)
    try:
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError as error:
        raise DataError(
            f"token file {path} does not exist (run build_token_cache first)"
        ) from error
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"token file {path} is not a readable .npy: {error}") from error
    if tokens.dtype != np.uint16 or tokens.ndim != 3:
        raise DataError(
            f"token file {path} must hold uint16 (N, grid_height, grid_width) tokens, "
            f"got {tokens.shape} {tokens.dtype}"
        )
    return tokens
