"""The interactive dream: a pygame window driven live by the 22-key layout (``elworld play``).

``PlaySession`` owns the window and the loop, in three testable pieces:
``handle_event(event)`` (keys held, controls), ``update()`` (one dream step
with the held keys, unless paused) and ``draw()`` (frame, HUD, help);
``run(max_frames)`` loops them at a steady ``fps`` with ``pygame.time.Clock``.
Held keys are tracked from KEYDOWN/KEYUP events, so events posted with
``pygame.event.post`` (tests, ``SDL_VIDEODRIVER=dummy``) drive it like a
keyboard. With ``real_env`` (e.g. ViZDoom, see ``compare_doom``) the real game
and the dream run in lockstep from the same keys, shown as real | dream.
The overlays are ``hud.Hud``, the real game beside the dream ``lockstep.Lockstep``.

Controls are the keys outside the 22-key layout (see ``CONTROLS``). F8 is a
game key (index 0 of the layout), so the temperature is on F7 / F9.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from elworld.keys import NUM_KEYS, action_names, pygame_key_codes
from elworld.play.dream import check_scale, get_temperature, set_temperature
from elworld.play.hud import Hud
from elworld.play.lockstep import Lockstep
from elworld.play.video import VideoRecorder

logger = logging.getLogger(__name__)

# (keys, what they do), shown by F1 and by `elworld play --help`.
CONTROLS: tuple[tuple[str, str], ...] = (
    ("F1", "show / hide this help"),
    ("h, F2", "show / hide the HUD"),
    ("F4", "re-sync the dream to the real frame (--compare)"),
    ("F5", "restart from a new real start frame"),
    ("F6", "pause / resume"),
    ("F7, F9", "temperature down / up (F8 is a game key)"),
    ("F10", "quit (or close the window)"),
    ("F11", "start / stop recording a video"),
    ("F12", "save a screenshot"),
)
GAME_KEYS_HELP = "game keys: arrows z x 1 3 q w e r t a s d c f enter ctrl esc f8"


def controls_text() -> str:
    """The controls as lines of text (for ``--help``)."""
    width = max(len(keys) for keys, _ in CONTROLS)
    lines = [f"  {keys:<{width}}  {what}" for keys, what in CONTROLS]
    return "\n".join(lines + [f"  {GAME_KEYS_HELP}"])


def import_pygame() -> Any:
    """Import pygame (quietly), or raise ``ImportError`` saying how to install it."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError as error:
        raise ImportError("elworld play needs pygame: pip install pygame-ce") from error
    return pygame


@dataclass
class PlayConfig:
    """How a play session looks and runs."""

    scale: int = 3  # window pixels per frame pixel
    fps: float = 20.0  # target frame (and dream step) rate, the recordings' rate
    seed: int | None = None  # seed of the first start frame and of sampling
    temperature_step: float = 0.1  # change per F7 / F9 press
    show_hud: bool = True
    record_dir: Path = field(default_factory=lambda: Path("outputs"))  # F11 videos, F12 shots
    title: str = "ElWorld dream"


class PlaySession:
    """A dream (and optionally the real game beside it) played live in a pygame window.

    Args:
        env: an ``ElWorldDream-v0`` env with rgb observations.
        config: window and loop settings.
        real_env: a real game with the same 22-key ``MultiBinary`` actions and
            rgb frames; when given, both run from the same keys (real | dream).

    ``open()`` creates the window and starts the first episode (``run`` calls
    it when needed); ``close()`` finishes a recording and closes the window.
    The envs are not closed: they belong to the caller.
    """

    def __init__(
        self, env: gym.Env, config: PlayConfig | None = None, real_env: gym.Env | None = None
    ) -> None:
        self.env = env
        self.real_env = real_env
        self.config = config or PlayConfig()
        check_scale(self.config.scale, "scale")
        if not self.config.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.config.fps!r}")
        self.height, self.width = env.observation_space.shape[:2]
        self.num_panes = 2 if real_env is not None else 1
        self.step_count = 0
        self.paused = False
        self.running = True
        self.show_hud = self.config.show_hud
        self.show_help = False
        self.recorder: VideoRecorder | None = None
        self.frames_shown = 0
        self.pygame: Any = None
        self._pressed: set[int] = set()  # pygame key codes of game keys held now
        self._code_to_index: dict[int, int] = {}
        self._controls: dict[int, Callable[[], object]] = {}
        self._canvas = np.zeros((self.height, self.num_panes * self.width, 3), dtype=np.uint8)
        self.lockstep = None if real_env is None else Lockstep(real_env, self.height, self.width)
        self.hud = Hud(self.config.fps)
        self._started_at = 0.0
        self._screen: Any = None

    # ----------------------------------------------------------------- setup
    @property
    def is_open(self) -> bool:
        """Whether the window exists."""
        return self._screen is not None

    def open(self) -> None:
        """Create the window, fonts and surfaces (once) and start the first episode."""
        if self.is_open:
            return
        pygame = self.pygame = import_pygame()
        scale, panes = self.config.scale, self.num_panes
        size = (panes * self.width * scale, self.height * scale)
        try:
            pygame.display.init()
            self._screen = pygame.display.set_mode(size)
        except pygame.error as error:
            raise RuntimeError(
                f"cannot open a window ({error}); without a display use `elworld rollout` "
                "or `elworld demo`, which write a video instead"
            ) from error
        pygame.font.init()
        pygame.display.set_caption(self.config.title)
        self._surface = pygame.Surface((panes * self.width, self.height))
        help_lines = ["Controls"] + [f"{keys:<8} {what}" for keys, what in CONTROLS]
        self.hud.open(pygame, size, [*help_lines, GAME_KEYS_HELP])
        self._clock = pygame.time.Clock()
        self._code_to_index = {
            code: i for i, codes in enumerate(pygame_key_codes()) for code in codes
        }
        self._controls = {
            pygame.K_F1: self.toggle_help,
            pygame.K_h: self.toggle_hud,
            pygame.K_F2: self.toggle_hud,
            pygame.K_F4: self.resync,
            pygame.K_F5: self.restart,
            pygame.K_F6: self.toggle_pause,
            pygame.K_F7: self.temperature_down,
            pygame.K_F9: self.temperature_up,
            pygame.K_F10: self.quit,
            pygame.K_F11: self.toggle_recording,
            pygame.K_F12: self.screenshot,
        }
        assert not set(self._controls) & set(self._code_to_index), "a control is a game key"
        self.restart(seed=self.config.seed)
        self._started_at = time.perf_counter()

    def close(self) -> None:
        """Finish a recording in progress and close the window; safe to call twice."""
        if self.recorder is not None:
            self.toggle_recording()
        if self._screen is not None:
            self.pygame.display.quit()
            self._screen = None

    # -------------------------------------------------------------- controls
    @property
    def action(self) -> np.ndarray:
        """The ``(22,)`` uint8 action of the game keys held now."""
        action = np.zeros(NUM_KEYS, dtype=np.uint8)
        for code in self._pressed:
            action[self._code_to_index[code]] = 1
        return action

    @property
    def temperature(self) -> float:
        """The dream's sampling temperature."""
        return get_temperature(self.env)

    def handle_event(self, event: Any) -> None:
        """React to one pygame event (after ``open()``): game keys, controls, closing."""
        pygame = self.pygame
        if event.type == pygame.QUIT:
            self.quit()
        elif event.type == pygame.KEYDOWN:
            if event.key in self._controls:
                self._controls[event.key]()
            elif event.key in self._code_to_index:
                self._pressed.add(event.key)
        elif event.type == pygame.KEYUP:
            self._pressed.discard(event.key)
        elif event.type == getattr(pygame, "WINDOWFOCUSLOST", None):
            self._pressed.clear()  # the KEYUPs go to another window: release everything

    def toggle_help(self) -> None:
        """Show or hide the help overlay."""
        self.show_help = not self.show_help

    def toggle_hud(self) -> None:
        """Show or hide the HUD."""
        self.show_hud = not self.show_hud

    def toggle_pause(self) -> None:
        """Pause or resume the dream (and the real game)."""
        self.paused = not self.paused

    def quit(self) -> None:
        """End the loop after this frame."""
        self.running = False

    def temperature_down(self) -> None:
        """Lower the sampling temperature by ``config.temperature_step`` (not below 0)."""
        self._set_temperature(self.temperature - self.config.temperature_step)

    def temperature_up(self) -> None:
        """Raise the sampling temperature by ``config.temperature_step``."""
        self._set_temperature(self.temperature + self.config.temperature_step)

    def _set_temperature(self, value: float) -> None:
        self._say(f"temperature {set_temperature(self.env, value):.2f}")

    def restart(self, seed: int | None = None) -> None:
        """Start over: a new real start frame (with ``real_env``: a new real episode)."""
        if self.lockstep is not None:
            real = self.lockstep.reset(seed=seed)
            dream, _ = self.env.reset(seed=seed, options={"observation": real})
        else:
            dream, _ = self.env.reset(seed=seed)
        self.step_count = 0
        self._compose(dream)
        self._say("restarted from a new real frame")

    def resync(self) -> None:
        """Restart the dream from the current real frame (``real_env`` only)."""
        if self.lockstep is None or self.lockstep.frame is None:
            self._say("F4 re-syncs to the real game: start with --compare")
            return
        dream, _ = self.env.reset(options={"observation": self.lockstep.frame})
        self._compose(dream)
        self._say("dream re-synced to the real frame")

    def toggle_recording(self) -> None:
        """Start recording the shown frames (unscaled) to a video, or finish it."""
        if self.recorder is None:
            path = self.config.record_dir / f"play-{time.strftime('%Y%m%d-%H%M%S')}.mp4"
            self.recorder = VideoRecorder(path, fps=self.config.fps)
            self.recorder.add(self._canvas)
            self._say(f"recording to {path}")
            logger.info("recording to %s", path)
        else:
            recorder, self.recorder = self.recorder, None
            path = recorder.close()
            self._say(f"saved {path}")
            logger.info("saved %d frames to %s", recorder.num_frames, path)

    def screenshot(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Save the window as it is now (default: ``record_dir/play-TIME.png``); return the path."""
        if path is None:
            path = self.config.record_dir / f"play-{time.strftime('%Y%m%d-%H%M%S')}.png"
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.pygame.image.save(self._screen, str(path))
        self._say(f"saved {path}")
        logger.info("saved a screenshot to %s", path)
        return path

    # ------------------------------------------------------------------ loop
    def update(self) -> None:
        """One step of the dream (and the real game) with the held keys, unless paused."""
        if self.paused:
            return
        action = self.action
        real_over = self.lockstep.step(action) if self.lockstep is not None else False
        start = time.perf_counter()
        dream, _, terminated, truncated, _ = self.env.step(action)
        now = time.perf_counter()
        self.hud.timed_step(now - start, now)
        self.step_count += 1
        self._compose(dream)
        if real_over:
            self.restart()
            self._say("the real episode ended: restarted")
        elif terminated or truncated:
            if self.lockstep is not None:
                self.resync()
            else:
                self.restart()
            self._say("the dream ended its episode: restarted")
        if self.recorder is not None:
            self.recorder.add(self._canvas)

    def draw(self) -> None:
        """Draw the frame(s), the HUD and the help overlay, then flip the display."""
        pygame = self.pygame
        pygame.surfarray.blit_array(self._surface, self._canvas.transpose(1, 0, 2))  # (W, H, 3)
        pygame.transform.scale(self._surface, self._screen.get_size(), self._screen)
        if self.show_hud:
            self._draw_hud()
        if self.show_help:
            self.hud.draw_help(self._screen)
        pygame.display.flip()

    def run(self, max_frames: int | None = None) -> int:
        """Loop events, ``update`` and ``draw`` at ``config.fps`` until quit; return frames shown.

        ``max_frames`` stops after that many frames (for tests and benchmarks).
        """
        self.open()
        shown = 0
        while self.running and (max_frames is None or shown < max_frames):
            for event in self.pygame.event.get():
                self.handle_event(event)
            if not self.running:
                break
            self.update()
            self.draw()
            self._clock.tick(self.config.fps)
            shown += 1
        self.frames_shown += shown
        return shown

    def stats(self) -> dict[str, float]:
        """Frames shown, seconds since ``open``, the achieved FPS, dream step p50/p95 (ms)."""
        seconds = time.perf_counter() - self._started_at if self._started_at else 0.0
        steps = self.hud.step_ms()
        return {
            "frames": float(self.frames_shown),
            "seconds": seconds,
            "fps": self.frames_shown / seconds if seconds > 0 else 0.0,
            "step_ms_p50": float(np.percentile(steps, 50)),
            "step_ms_p95": float(np.percentile(steps, 95)),
        }

    # --------------------------------------------------------------- helpers
    def _compose(self, dream: np.ndarray) -> None:
        if self.lockstep is not None and self.lockstep.frame is not None:
            self._canvas[:, : self.width] = self.lockstep.frame
        self._canvas[:, -self.width :] = dream

    def _say(self, message: str) -> None:
        self.hud.say(message)

    def _draw_hud(self) -> None:
        fps, _ = self.hud.measured()
        state = "  PAUSED" if self.paused else ""
        status = f"step {self.step_count}  dream {fps:.1f} FPS  T={self.temperature:.2f}{state}"
        recording = None
        if self.recorder is not None:
            recording = f"REC {self.recorder.path.name}  ({self.recorder.num_frames})"
        keys = " ".join(action_names(self.action))
        self.hud.draw(self._screen, self.hud.lines(status, keys, recording))
