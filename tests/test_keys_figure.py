"""Tests for ``elworld keys-figure``: real and dream rows per key combination from one start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from elworld.keys import KEY_INDEX
from elworld.play.keys_figure import keys_figure, parse_combo, render_figure
from elworld_gym.dream_env import DreamEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class SlidingGame:
    """A stand-in for the real game: a bright column that moves one pixel per step with left/right."""

    def __init__(self, size: int = 32) -> None:
        self.size, self.x = size, size // 2

    def _frame(self) -> np.ndarray:
        frame = np.zeros((self.size, self.size, 3), np.uint8)
        frame[:, self.x] = 255
        return frame

    def reset(self, *, seed: int | None = None):
        self.x = self.size // 2
        return self._frame(), {}

    def step(self, action: np.ndarray):
        self.x += int(action[KEY_INDEX["right"]]) - int(action[KEY_INDEX["left"]])
        return self._frame(), 0.0, False, False, {}


def test_parse_combo() -> None:
    assert parse_combo("left+z") == ("left", "z")
    assert parse_combo("-") == ()
    with pytest.raises(ValueError, match="unknown key"):
        parse_combo("jump")


def test_rows_start_from_one_frame_and_differ_by_keys(
    tiny_checkpoints: Path, tmp_path: Path
) -> None:
    env = DreamEnv(tiny_checkpoints, temperature=0.0)
    combos = [("left",), ("right",), ()]
    figure = keys_figure(env, SlidingGame(), combos, steps=6, seed=0)
    assert [len(rows) for rows in figure.real] == [7, 7, 7]
    assert all(d.shape == (7, *env.observation_space.shape) for d in figure.dream)
    starts = [real[0] for real in figure.real]
    assert all(np.array_equal(s, starts[0]) for s in starts)
    change = figure.change_from_start()
    assert change["none"]["real"] == 0.0 and change["left"]["real"] > 0
    assert figure.last_frame_gap()["real"] > 0  # left and right ended apart in the game
    # Same seed, same start, same keys: the dream row is reproducible.
    again = keys_figure(env, SlidingGame(), combos[:1], steps=6, seed=0)
    assert np.array_equal(again.dream[0], figure.dream[0])
    path = render_figure(figure, every=3, path=tmp_path / "keys.png")
    height, width = Image.open(path).size[::-1]
    frame_h = env.observation_space.shape[0]
    assert height == 6 * (frame_h + 14) and width == 3 * env.observation_space.shape[1]


class SlidingDream(SlidingGame):
    """A dream that follows its keys exactly (the column moves), started from the given frame."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        start = (options or {}).get("observation")
        self.x = int(np.argmax(start[0, :, 0])) if start is not None else self.size // 2
        return self._frame(), {}


def test_dream_rows_differ_by_keys_when_the_dream_follows_them() -> None:
    """The dream rows get each combination's keys: a dream that ignored them would not move."""
    combos = [("left",), ("right",), ()]
    figure = keys_figure(SlidingDream(), SlidingGame(), combos, steps=5, seed=0)
    change = figure.change_from_start()
    assert change["none"]["dream"] == 0.0
    assert change["left"]["dream"] > 0 and change["right"]["dream"] > 0
    assert figure.last_frame_gap()["dream"] > 0  # left and right ended apart in the dream
    for real, dream in zip(figure.real, figure.dream):
        assert np.array_equal(real, dream)  # it follows the keys as the game does
