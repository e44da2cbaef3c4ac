"""The play window's overlays: the HUD (step, FPS, temperature, held keys, warnings) and help.

``Hud`` keeps the dream's step timings and the last message, and draws onto a
pygame screen; fonts, the translucent background and the help surface are
made once in ``open`` and each HUD line is re-rendered only when its text
changes (no per-frame font or surface creation).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np

MESSAGE_SECONDS = 3.0
HUD_REFRESH_SECONDS = 0.5  # how often the HUD's FPS and step-time numbers change
WHITE, RED, AMBER = (255, 255, 255), (255, 90, 90), (255, 200, 60)

Line = tuple[str, tuple[int, int, int]]


class Hud:
    """Step timings, messages and the drawing of the HUD and help overlays.

    Args:
        fps: the loop's target rate; a step slower than ``1 / fps`` is flagged.
    """

    def __init__(self, fps: float) -> None:
        self.budget_ms = 1000 / fps
        self.step_seconds: deque[float] = deque(maxlen=1000)  # dream step latencies
        self._step_stamps: deque[float] = deque(maxlen=int(fps * 2) + 2)
        self._message, self._message_until = "", 0.0
        self._numbers = (0.0, 0.0)  # (FPS, step ms) as shown
        self._numbers_at = 0.0
        self._text_cache: dict[int, tuple[str, tuple[int, int, int], Any]] = {}

    def open(self, pygame: Any, size: tuple[int, int], help_lines: list[str]) -> None:
        """Make the font, the HUD background (``size``: the screen's) and the help surface."""
        self._font = pygame.font.Font(None, 20)
        self._line_height = self._font.get_linesize()
        self._background = pygame.Surface(size, pygame.SRCALPHA)
        self._background.fill((0, 0, 0, 150))
        rendered = [self._font.render(line, True, WHITE) for line in help_lines]
        pad = 10
        width = max(s.get_width() for s in rendered) + 2 * pad
        height = len(rendered) * self._line_height + 2 * pad
        self._help = pygame.Surface((width, height), pygame.SRCALPHA)
        self._help.fill((0, 0, 40, 210))
        for i, line in enumerate(rendered):
            self._help.blit(line, (pad, pad + i * self._line_height))

    def timed_step(self, seconds: float, now: float) -> None:
        """Record one dream step that took ``seconds`` and ended at ``now``."""
        self.step_seconds.append(seconds)
        self._step_stamps.append(now)

    def say(self, message: str) -> None:
        """Show ``message`` for ``MESSAGE_SECONDS``."""
        self._message, self._message_until = message, time.perf_counter() + MESSAGE_SECONDS

    def step_ms(self) -> np.ndarray:
        """Every recorded step's latency in ms (one zero before the first step)."""
        return np.array(self.step_seconds) * 1000 if self.step_seconds else np.zeros(1)

    def measured(self) -> tuple[float, float]:
        """(dream FPS, mean step ms), refreshed every ``HUD_REFRESH_SECONDS``."""
        now = time.perf_counter()
        if now - self._numbers_at >= HUD_REFRESH_SECONDS:
            stamps = [t for t in self._step_stamps if now - t <= 1.0]
            fps = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
            recent = list(self.step_seconds)[-10:]
            step_ms = 1000 * sum(recent) / len(recent) if recent else 0.0
            self._numbers, self._numbers_at = (fps, step_ms), now
        return self._numbers

    def lines(self, status: str, keys: str, recording: str | None) -> list[Line]:
        """The HUD's lines: ``status``, the held ``keys``, the step budget, a recording, a message."""
        _, step_ms = self.measured()
        lines: list[Line] = [(status, WHITE), ("keys: " + (keys or "-"), WHITE)]
        if step_ms > self.budget_ms:
            warning = f"model can't keep up: {step_ms:.0f} ms/step > {self.budget_ms:.0f} ms budget"
            lines.append((warning, RED))
        else:
            lines.append((f"model {step_ms:.0f} ms/step (budget {self.budget_ms:.0f} ms)", WHITE))
        if recording is not None:
            lines.append((recording, RED))
        if self._message and time.perf_counter() < self._message_until:
            lines.append((self._message, AMBER))
        lines.append(("F1 help", WHITE))
        return lines

    def draw(self, screen: Any, lines: list[Line]) -> None:
        """Blit ``lines`` at the top left of ``screen`` on the translucent background."""
        surfaces = [self._text(i, text, color) for i, (text, color) in enumerate(lines)]
        pad = 6
        width = max(s.get_width() for s in surfaces) + 2 * pad
        height = len(surfaces) * self._line_height + 2 * pad
        screen.blit(self._background, (0, 0), area=(0, 0, width, height))
        for i, surface in enumerate(surfaces):
            screen.blit(surface, (pad, pad + i * self._line_height))

    def draw_help(self, screen: Any) -> None:
        """Blit the help overlay at the centre of ``screen``."""
        screen.blit(self._help, self._help.get_rect(center=screen.get_rect().center))

    def _text(self, slot: int, text: str, color: tuple[int, int, int]) -> Any:
        """The rendered ``text`` for HUD line ``slot``; re-rendered only when it changes."""
        cached = self._text_cache.get(slot)
        if cached is None or cached[0] != text or cached[1] != color:
            cached = (text, color, self._font.render(text, True, color))
            self._text_cache[slot] = cached
        return cached[2]
