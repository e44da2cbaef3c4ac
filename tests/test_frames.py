"""Tests for elworld.frames: resizing and uint8 <-> float tensor conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elworld import frames as frames_module
from elworld.frames import (
    FRAME_HEIGHT,
    FRAME_WIDTH,
    frames_to_tensor,
    resize_frames,
    tensor_to_frames,
)


def _random_frames(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_frame_size_constants() -> None:
    assert (FRAME_HEIGHT, FRAME_WIDTH) == (192, 256)


@pytest.mark.parametrize(
    ("in_shape", "out_shape"),
    [
        ((2, 600, 800, 3), (2, FRAME_HEIGHT, FRAME_WIDTH, 3)),  # the original game window
        ((600, 800, 3), (FRAME_HEIGHT, FRAME_WIDTH, 3)),  # a single frame keeps its axes
        ((3, 100, 130, 3), (3, FRAME_HEIGHT, FRAME_WIDTH, 3)),  # upscaling
        ((1, 240, 320, 3), (1, FRAME_HEIGHT, FRAME_WIDTH, 3)),
        ((0, 600, 800, 3), (0, FRAME_HEIGHT, FRAME_WIDTH, 3)),  # empty batch
    ],
)
def test_resize_shapes_and_dtype(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
    out = resize_frames(_random_frames(*in_shape))
    assert out.shape == out_shape
    assert out.dtype == np.uint8


def test_resize_custom_size() -> None:
    out = resize_frames(_random_frames(2, 64, 64, 3), height=32, width=48)
    assert out.shape == (2, 32, 48, 3)


@pytest.mark.parametrize("size", [(600, 800), (96, 128), (191, 257)])
def test_constant_color_stays_that_color(size: tuple[int, int]) -> None:
    color = np.array([200, 17, 93], dtype=np.uint8)
    frames = np.broadcast_to(color, (2, *size, 3)).copy()
    out = resize_frames(frames)
    assert np.array_equal(out, np.broadcast_to(color, out.shape))


def test_downscale_is_antialiased() -> None:
    # A one-pixel checkerboard has no structure at the target scale: it must turn grey,
    # not into a moire pattern of full-contrast samples.
    ys, xs = np.mgrid[0:600, 0:800]
    board = (((ys + xs) % 2) * 255).astype(np.uint8)
    frames = np.repeat(board[None, :, :, None], 3, axis=3)  # (1, 600, 800, 3)
    out = resize_frames(frames).astype(np.float64)
    assert abs(out.mean() - 127.5) < 3
    assert out.std() < 10


def test_same_size_returns_unchanged_copy() -> None:
    frames = _random_frames(2, FRAME_HEIGHT, FRAME_WIDTH, 3)
    out = resize_frames(frames)
    assert np.array_equal(out, frames)
    assert not np.shares_memory(out, frames)


def test_chunked_resize_matches_single_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = _random_frames(5, 60, 80, 3)
    whole = resize_frames(frames, height=24, width=32)
    # Room for ~one frame per chunk: the batch is processed in five pieces.
    monkeypatch.setattr(frames_module, "_CHUNK_VALUES", 60 * 80 * 3)
    chunked = resize_frames(frames, height=24, width=32)
    assert np.array_equal(whole, chunked)


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (np.zeros((600, 800), dtype=np.uint8), "shape"),  # grey, no channel axis
        (np.zeros((1, 2, 600, 800, 3), dtype=np.uint8), "shape"),
        (np.zeros((600, 800, 4), dtype=np.uint8), "shape"),  # RGBA
        (np.zeros((600, 800, 3), dtype=np.float32), "uint8"),
        ([[[0, 0, 0]]], "numpy array"),
    ],
)
def test_resize_rejects_bad_frames(frames: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resize_frames(frames)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"height": 0}, {"width": -3}, {"height": 2.5}])
def test_resize_rejects_bad_target_size(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="positive int"):
        resize_frames(_random_frames(1, 8, 8, 3), **kwargs)  # type: ignore[arg-type]


def test_frames_to_tensor_layout_and_range() -> None:
    frames = _random_frames(2, 5, 7, 3)
    frames[0, 0, 0] = (0, 128, 255)
    x = frames_to_tensor(frames)
    assert x.shape == (2, 3, 5, 7)
    assert x.dtype == torch.float32
    assert x.is_contiguous()
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([0.0, 128 / 255, 1.0]))
    assert x[1, 2, 4, 6].item() == pytest.approx(frames[1, 4, 6, 2] / 255.0)


def test_frames_to_tensor_accepts_torch_and_device() -> None:
    frames = _random_frames(1, 4, 4, 3)
    from_numpy = frames_to_tensor(frames)
    from_torch = frames_to_tensor(torch.from_numpy(frames), device="cpu")
    assert from_torch.device.type == "cpu"
    assert torch.equal(from_numpy, from_torch)


def test_uint8_round_trip_is_exact() -> None:
    frames = _random_frames(3, 6, 9, 3)
    back = tensor_to_frames(frames_to_tensor(frames))
    assert back.dtype == np.uint8
    assert back.flags["C_CONTIGUOUS"]
    assert np.array_equal(back, frames)


def test_tensor_to_frames_clamps_and_rounds() -> None:
    x = torch.zeros(1, 3, 1, 4)
    x[0, 0, 0] = torch.tensor([-0.5, 1.5, 0.5, 100.4 / 255])
    out = tensor_to_frames(x)
    assert out.shape == (1, 1, 4, 3)
    assert out[0, 0, :, 0].tolist() == [0, 255, 128, 100]


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((4, 4, 3), dtype=np.uint8),  # missing batch axis
        np.zeros((1, 4, 4, 1), dtype=np.uint8),
        np.zeros((1, 4, 4, 3), dtype=np.float32),
        torch.zeros(1, 4, 4, 3),  # float tensor
        "frames",
    ],
)
def test_frames_to_tensor_rejects_bad_input(frames: object) -> None:
    with pytest.raises(ValueError, match="frames"):
        frames_to_tensor(frames)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "x",
    [
        torch.zeros(3, 4, 4),  # missing batch axis
        torch.zeros(1, 4, 4, 3),  # channels last
        torch.zeros(1, 3, 4, 4, dtype=torch.uint8),
        np.zeros((1, 3, 4, 4), dtype=np.float32),
    ],
)
def test_tensor_to_frames_rejects_bad_input(x: object) -> None:
    with pytest.raises(ValueError, match="x must"):
        tensor_to_frames(x)  # type: ignore[arg-type]
