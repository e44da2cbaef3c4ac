"""Record a person playing ViZDoom with the 22-key layout, in a pygame window.

The game's 256x192 frame is shown scaled ``scale`` times; keys are those of
``elworld.keys`` (arrows move/turn, z fires, x uses, ... see
``elworld.record.doom`` for each scenario's table). Only the scenario's mapped
keys are recorded; the others are stored as 0.

Timing: one step per displayed frame at ``fps`` steps per second
(``pygame.time.Clock``), each step ``frame_skip`` game tics (ViZDoom runs at 35
tics/s). The defaults, 20 steps/s x 2 tics, match the original 20 fps
recordings and run the game ~14% faster than Doom's real time; ``fps=17.5``
plays at exactly real time.

Stopping: F10 or closing the window ends the session; the episode in flight is
saved as a cut-short episode (``done`` all 0, ``truncated[-1] = 1``,
``"ended": "stopped"`` in its sidecar) so no play is lost. Ctrl+C in the terminal drops it instead. Either
way only complete files are written. Memory: ~150 KB per step are held until
the episode ends (about 180 MB per minute at 20 steps/s).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from elworld.keys import NUM_KEYS, pygame_key_codes
from elworld.record.doom import DoomEnv, DoomKeyMapping
from elworld.record.recorder import StopRecording, record_env
from elworld.record.writer import prepare_output_dir

logger = logging.getLogger(__name__)


def _import_pygame() -> Any:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # no banner on stdout
    try:
        import pygame
    except ImportError as error:
        raise ImportError("recording human play needs pygame: pip install pygame-ce") from error
    return pygame


class KeyboardPolicy:
    """The person at the keyboard as a ``record_env`` policy.

    Each call shows the frame, waits for the step's time slot, reads the pygame
    events and returns the held keys (masked to the scenario's mapped keys).
    Held keys are tracked from KEYDOWN/KEYUP events, which also works for
    events posted with ``pygame.event.post`` (e.g. under ``SDL_VIDEODRIVER=dummy``).
    """

    name = "human"

    def __init__(
        self,
        pygame: Any,
        mapping: DoomKeyMapping,
        *,
        scale: int = 3,
        fps: float = 20.0,
        step_hook: Callable[[int], None] | None = None,
    ) -> None:
        self.pygame = pygame
        self.mapping = mapping
        self.fps = fps
        self.step_hook = step_hook
        self.step = 0
        self.episode = 0
        self._mask = mapping.key_mask
        self._code_to_key = {
            code: i for i, codes in enumerate(pygame_key_codes()) for code in codes
        }
        self._down: set[int] = set()  # pygame key codes held now
        height, width = 192, 256
        self.screen = pygame.display.set_mode((width * scale, height * scale))
        self._frame_surface = pygame.Surface((width, height)).convert()
        self._clock = pygame.time.Clock()

    def reset(self, seed: int | None = None) -> None:
        """Start of an episode: update the window title."""
        self.episode += 1
        self.pygame.display.set_caption(
            f"ElWorld recording {self.mapping.scenario}, episode {self.episode} (F10: stop)"
        )

    def _show(self, frame: np.ndarray) -> None:
        self.pygame.surfarray.blit_array(self._frame_surface, frame.swapaxes(0, 1))  # (W, H, 3)
        self.pygame.transform.scale(self._frame_surface, self.screen.get_size(), self.screen)
        self.pygame.display.flip()

    def _read_events(self) -> None:
        pg = self.pygame
        for event in pg.event.get():
            if event.type == pg.QUIT or (event.type == pg.KEYDOWN and event.key == pg.K_F10):
                raise StopRecording(save=True)
            if event.type == pg.KEYDOWN and event.key in self._code_to_key:
                self._down.add(event.key)
            elif event.type == pg.KEYUP:
                self._down.discard(event.key)
            elif event.type == pg.WINDOWFOCUSLOST:  # KEYUPs will not arrive: release all
                self._down.clear()

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Show ``frame``, wait for the step's slot, return the held (mapped) keys."""
        self._show(frame)
        self._clock.tick(self.fps)
        if self.step_hook is not None:
            self.step_hook(self.step)
        self._read_events()
        self.step += 1
        action = np.zeros(NUM_KEYS, dtype=np.uint8)
        for code in self._down:
            action[self._code_to_key[code]] = 1
        return action * self._mask


def record_human_doom(
    scenario: str,
    out_dir: str | os.PathLike[str],
    *,
    episodes: int = 1,
    fps: float = 20.0,
    scale: int = 3,
    frame_skip: int = 2,
    seed: int | None = None,
    max_steps: int | None = None,
    compress: bool = False,
    step_hook: Callable[[int], None] | None = None,
) -> list[Path]:
    """Let a person play ``episodes`` episodes of ``scenario`` and record them.

    Files are ``out_dir/{scenario}_NNNN.npz`` (+ ``.json`` with
    ``"policy": "human"``), numbered after existing files, in the same format
    as scripted collection. ``fps`` is steps per second (0: as fast as
    possible), ``scale`` the window's zoom, ``frame_skip`` game tics per step,
    ``seed`` the first episode's game seed (then ``seed + 1``, ...), and
    ``max_steps`` an optional cap per episode. ``step_hook(step)`` is called
    each step before the events are read (scripts and tests use it to post
    pygame events). Returns the files written; see the module docstring for
    how F10, closing the window and Ctrl+C end a session.
    """
    if fps < 0:
        raise ValueError(f"fps must be >= 0 (0: unlimited), got {fps}")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an int >= 1, got {scale!r}")
    mapping = DoomKeyMapping.for_scenario(scenario)
    out_dir = prepare_output_dir(out_dir)
    pygame = _import_pygame()
    env = DoomEnv(scenario, frame_skip=frame_skip)
    pygame.display.init()
    try:
        keyboard = KeyboardPolicy(pygame, mapping, scale=scale, fps=fps, step_hook=step_hook)
        logger.info(
            "recording %s: keys %s; F10 or closing the window stops", scenario,
            ", ".join(f"{k}={b}" for k, b in mapping.table().items()),
        )  # fmt: skip
        meta = {"scenario": scenario, "frame_skip": frame_skip, "keys": mapping.table(),
                "source": "vizdoom", "fps": fps}  # fmt: skip
        return record_env(
            env, keyboard, out_dir, episodes=episodes, prefix=scenario, seed=seed,
            max_steps=max_steps, meta=meta, compress=compress,
        )  # fmt: skip
    finally:
        pygame.display.quit()
        env.close()
