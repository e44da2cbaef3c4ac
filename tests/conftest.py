"""Shared fixtures: tiny vision + memory checkpoints that tests build themselves.

``tiny_checkpoints`` (session scope) returns a checkpoints root in the standard
layout, built in about a second with fixed seeds:

- ``root/vision/best_model``: a VQ-VAE on 32x32 frames, 2 downsamples (an 8x8
  token grid), codebook of 16;
- ``root/memory/best_model``: a 2-layer memory model (grid 8x8, vocab 16,
  ``context_frames=2``, ``n_embd=32``) with reward and end heads;
- ``root/start_frames.npz``: ``obs`` (8, 32, 32, 3) uint8 real frames.

Both models train for a few steps on a clip of a square sliding right while
the ``right`` key is held (reward 1 per moving step), so dreams are not pure
noise. Other test files (play, rollout) use this fixture: keep its name and
return value stable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from elworld.checkpoint import best_model_dir, save_checkpoint
from elworld.keys import KEY_INDEX, NUM_KEYS
from elworld.model.memory import MemoryConfig, MemoryModel
from elworld.model.vision import VisionConfig, VisionModel

TINY_IMAGE = 32
TINY_VISION = VisionConfig(
    image_height=TINY_IMAGE,
    image_width=TINY_IMAGE,
    width=16,
    downsamples=2,
    res_blocks=1,
    code_dim=8,
    codebook_size=16,
)
TINY_MEMORY = MemoryConfig(
    vocab_size=16,
    grid_height=8,
    grid_width=8,
    context_frames=2,
    n_layer=2,
    n_head=2,
    n_embd=32,
)
CLIP_FRAMES = 24
TRAIN_STEPS = 20


def sliding_square_clip(num_frames: int = CLIP_FRAMES, size: int = TINY_IMAGE) -> np.ndarray:
    """Frames ``(num_frames, size, size, 3)`` uint8: a square sliding right over a gradient."""
    ramp = np.linspace(0, 120, size, dtype=np.float32)
    background = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 60.0), axis=-1)
    frames = np.repeat(background[None], num_frames, axis=0).astype(np.uint8)  # (N, H, W, 3)
    for t in range(num_frames):
        left = t % (size - 8)
        frames[t, 12:20, left : left + 8] = (250, 200, 40)
    return frames


def _train(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], steps: int) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        loss = model.compute_loss(batches[step % len(batches)]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def build_tiny_models(frames: np.ndarray) -> tuple[VisionModel, MemoryModel]:
    """Train the tiny vision and memory models for a few steps on ``frames``."""
    vision = VisionModel(TINY_VISION)
    _train(vision, [{"frames": torch.from_numpy(frames)}], TRAIN_STEPS)
    with torch.no_grad():
        tokens = vision.encode(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)
    tokens = tokens.reshape(len(frames), -1)  # (N, T)
    n, K = len(frames), TINY_MEMORY.context_frames
    rows = torch.arange(n).view(-1, 1) + torch.arange(-K + 1, 1).view(1, -1)  # (N, K)
    action = torch.zeros(n, NUM_KEYS)
    action[:, KEY_INDEX["right"]] = 1.0
    batch = {
        "context": tokens[rows.clamp(min=0)],  # (N, K, T)
        "action": action,
        "target": torch.cat([tokens[1:], tokens[-1:]]),  # (N, T)
        "has_target": torch.arange(n) < n - 1,
        "reward": torch.ones(n),
        "done": (torch.arange(n) == n - 1).float(),
        "has_reward": torch.ones(n, dtype=torch.bool),
        "has_done": torch.ones(n, dtype=torch.bool),
    }
    memory = MemoryModel(TINY_MEMORY)
    _train(memory, [batch], TRAIN_STEPS)
    return vision, memory


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` torch threads (tiny models on a busy CPU: 1 is far faster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Use one torch thread during a test (opt in with ``pytest.mark.usefixtures``)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoints root with tiny trained vision/memory models and ``start_frames.npz``."""
    root = tmp_path_factory.mktemp("tiny_checkpoints")
    frames = sliding_square_clip()
    with torch.random.fork_rng(), torch_threads(1):
        torch.manual_seed(0)
        vision, memory = build_tiny_models(frames)
    info = {"epoch": 0, "step": TRAIN_STEPS, "note": "tiny test checkpoint"}
    save_checkpoint(
        best_model_dir(root, "vision"), model=vision, config=vision.config, training_info=info
    )
    save_checkpoint(
        best_model_dir(root, "memory"), model=memory, config=memory.config, training_info=info
    )
    np.savez(root / "start_frames.npz", obs=frames[:8])
    return root
