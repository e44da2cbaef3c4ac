"""``elworld play``: the pygame loop driven headless by scripted key events.

The window runs under ``SDL_VIDEODRIVER=dummy``; events are posted with
``pygame.event.post`` (or handed to ``handle_event``) like a keyboard would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from elworld.keys import KEY_INDEX, NUM_KEYS
from elworld.play.dream import get_temperature, make_dream_env
from elworld.play.window import PlayConfig, PlaySession

FAST = 1000.0  # fps for tests: the clock never waits long


class StepLog(gym.Wrapper):
    """Records every action stepped and every reset's options."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.actions: list[np.ndarray] = []
        self.resets: list[dict[str, Any] | None] = []

    def step(self, action: np.ndarray) -> Any:
        self.actions.append(np.array(action, copy=True))
        return self.env.step(action)

    def reset(self, **kwargs: Any) -> Any:
        self.resets.append(kwargs.get("options"))
        return self.env.reset(**kwargs)


class FakeRealGame(gym.Env):
    """A 'real game' whose frame is a flat colour that brightens each step."""

    def __init__(self, size: int) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.MultiBinary(NUM_KEYS)
        self.t = 0
        self.actions: list[np.ndarray] = []

    def _frame(self) -> np.ndarray:
        return np.full(self.observation_space.shape, (10 * self.t) % 256, dtype=np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        super().reset(seed=seed)
        self.t = 0
        return self._frame(), {}

    def step(self, action: np.ndarray) -> Any:
        self.actions.append(np.array(action, copy=True))
        self.t += 1
        return self._frame(), 0.0, False, False, {}


@pytest.fixture
def pygame(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    yield pygame
    pygame.display.quit()


@pytest.fixture(scope="module")
def dream(tiny_checkpoints: Path) -> gym.Env:
    env = make_dream_env(tiny_checkpoints, temperature=1.0)
    yield env
    env.close()


@pytest.fixture
def session(pygame: Any, dream: gym.Env, tmp_path: Path) -> PlaySession:
    log = StepLog(dream)
    play = PlaySession(log, PlayConfig(scale=2, fps=FAST, seed=0, record_dir=tmp_path))
    play.open()
    yield play
    play.close()


def key(pygame: Any, kind: int, code: int) -> Any:
    return pygame.event.Event(kind, key=code, mod=0)


def test_held_keys_reach_the_env_as_action_bits(session: PlaySession, pygame: Any) -> None:
    for code in (pygame.K_RIGHT, pygame.K_z, pygame.K_KP_ENTER):
        pygame.event.post(key(pygame, pygame.KEYDOWN, code))
    assert session.run(max_frames=3) == 3
    held = session.env.actions[-1]
    expected = np.zeros(NUM_KEYS, dtype=np.uint8)
    expected[[KEY_INDEX["right"], KEY_INDEX["z"], KEY_INDEX["enter"]]] = 1
    np.testing.assert_array_equal(held, expected)
    assert all((a == expected).all() for a in session.env.actions)

    pygame.event.post(key(pygame, pygame.KEYUP, pygame.K_z))
    pygame.event.post(key(pygame, pygame.KEYDOWN, pygame.K_F8))  # f8 is game key 0
    session.run(max_frames=2)
    expected[KEY_INDEX["z"]], expected[KEY_INDEX["f8"]] = 0, 1
    np.testing.assert_array_equal(session.env.actions[-1], expected)
    assert len(session.env.actions) == 5


def test_f5_restarts_from_a_new_start_frame(session: PlaySession, pygame: Any) -> None:
    session.run(max_frames=4)
    assert session.step_count == 4
    resets = len(session.env.resets)
    session.handle_event(key(pygame, pygame.KEYDOWN, pygame.K_F5))
    assert session.step_count == 0
    assert len(session.env.resets) == resets + 1
    session.run(max_frames=1)
    assert session.step_count == 1


def test_f6_pauses_the_dream(session: PlaySession, pygame: Any) -> None:
    pygame.event.post(key(pygame, pygame.KEYDOWN, pygame.K_F6))
    assert session.run(max_frames=5) == 5  # frames are still drawn...
    assert session.paused and session.env.actions == []  # ...but the dream does not step
    pygame.event.post(key(pygame, pygame.KEYDOWN, pygame.K_F6))
    session.run(max_frames=2)
    assert not session.paused and len(session.env.actions) == 2


def test_f7_f9_change_the_temperature_and_f8_does_not(session: PlaySession, pygame: Any) -> None:
    start = get_temperature(session.env)
    session.handle_event(key(pygame, pygame.KEYDOWN, pygame.K_F9))
    assert get_temperature(session.env) == pytest.approx(start + 0.1)
    session.handle_event(key(pygame, pygame.KEYDOWN, pygame.K_F8))
    assert get_temperature(session.env) == pytest.approx(start + 0.1)
    assert session.action[KEY_INDEX["f8"]] == 1
    for _ in range(int(start * 10) + 5):
        session.handle_event(key(pygame, pygame.KEYDOWN, pygame.K_F7))
    assert get_temperature(session.env) == 0.0  # clamped, never negative
    session.handle_event(key(pygame, pygame.KEYDOWN, pygame.K_F9))
    session.handle_event(key(pygame, pygame.KEYDOWN, pygame.K_F9))
    assert get_temperature(session.env) == pytest.approx(0.2)
    session.env.unwrapped.world.temperature = start


@pytest.mark.parametrize("event", ["f10", "close"])
def test_f10_or_closing_the_window_quits(session: PlaySession, pygame: Any, event: str) -> None:
    session.run(max_frames=2)
    if event == "f10":
        pygame.event.post(key(pygame, pygame.KEYDOWN, pygame.K_F10))
    else:
        pygame.event.post(pygame.event.Event(pygame.QUIT))
    assert session.run(max_frames=50) == 0
    assert not session.running and len(session.env.actions) == 2


def test_hud_and_help_draw_over_the_frame(session: PlaySession, pygame: Any) -> None:
    screen = pygame.display.get_surface()
    session.show_hud = False
    session.draw()
    plain = pygame.surfarray.array3d(screen)
    session.handle_event(key(pygame, pygame.KEYDOWN, pygame.K_h))
    assert session.show_hud
    session.draw()
    with_hud = pygame.surfarray.array3d(screen)
    assert (with_hud != plain).any()
    session.handle_event(key(pygame, pygame.KEYDOWN, pygame.K_F2))
    session.handle_event(key(pygame, pygame.KEYDOWN, pygame.K_F1))
    assert not session.show_hud and session.show_help
    session.draw()
    assert (pygame.surfarray.array3d(screen) != plain).any()


def test_f11_records_the_session(session: PlaySession, pygame: Any, tmp_path: Path) -> None:
    import imageio.v2 as imageio

    pygame.event.post(key(pygame, pygame.KEYDOWN, pygame.K_F11))
    session.run(max_frames=4)
    assert session.recorder is not None
    session.handle_event(key(pygame, pygame.KEYDOWN, pygame.K_F11))
    assert session.recorder is None
    (video,) = tmp_path.glob("play-*.mp4")
    with imageio.get_reader(video, format="FFMPEG") as reader:
        frames = list(reader.iter_data())
    assert len(frames) == 1 + 4  # the frame shown when recording started, then one per step
    assert frames[0].shape == (session.height, session.width, 3)


def test_compare_runs_real_and_dream_in_lockstep(
    pygame: Any, dream: gym.Env, tmp_path: Path
) -> None:
    height, width = dream.observation_space.shape[:2]
    real = FakeRealGame(height)
    log = StepLog(dream)
    config = PlayConfig(scale=1, fps=FAST, seed=0, show_hud=False)
    play = PlaySession(log, config, real_env=real)
    try:
        play.open()
        pygame.event.post(key(pygame, pygame.KEYDOWN, pygame.K_LEFT))
        play.run(max_frames=3)
        assert pygame.display.get_surface().get_size() == (2 * width, height)
        assert len(real.actions) == len(log.actions) == 3
        np.testing.assert_array_equal(real.actions[-1], log.actions[-1])
        assert real.actions[-1][KEY_INDEX["left"]] == 1
        screen = pygame.surfarray.array3d(pygame.display.get_surface())  # (W, H, 3)
        assert (screen[width // 2, -1] == 30).all()  # the real pane shows the real frame
        play.handle_event(key(pygame, pygame.KEYDOWN, pygame.K_F4))  # re-sync
        synced = log.resets[-1]["observation"]
        np.testing.assert_array_equal(synced, np.full((height, width, 3), 30, np.uint8))
    finally:
        play.close()


def test_play_command_runs_and_saves_a_screenshot(
    pygame: Any, tiny_checkpoints: Path, tmp_path: Path
) -> None:
    from elworld.cli import main

    shot = tmp_path / "play.png"
    argv = ["play", "--checkpoints", str(tiny_checkpoints), "--scale", "4", "--fps", "1000"]
    assert main([*argv, "--max-frames", "3", "--screenshot", str(shot)]) == 0
    image = pygame.image.load(str(shot))
    assert image.get_size() == (4 * 32, 4 * 32)


def test_play_command_without_a_display_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from elworld.cli import main

    for name in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert main(["play", "--checkpoints", "does-not-matter"]) == 1
    assert "elworld rollout" in capsys.readouterr().err
