"""A pygame window that shows dream frames, scaled up (pygame is imported lazily)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def import_pygame() -> Any:
    """Import pygame, or raise ``ImportError`` saying how to install it."""
    try:
        import pygame
    except ImportError as error:
        raise ImportError(
            "render_mode='human' needs pygame: pip install pygame-ce "
            "(it comes with `pip install elworld`)"
        ) from error
    return pygame


class FrameWindow:
    """Shows uint8 frames ``(n, H, W, 3)`` tiled in a grid, ``scale`` times their size.

    The window, its surfaces and the tiling buffer are created on the first
    ``show`` and reused for every later frame; ``show`` paces itself to ``fps``.
    Closing the window by hand closes it; the next ``show`` reopens it.
    """

    def __init__(self, title: str = "ElWorld dream", scale: int = 3, fps: int = 20) -> None:
        self.title = title
        self.scale = scale
        self.fps = fps
        self._pygame: Any = None
        self._screen: Any = None
        self._surface: Any = None
        self._clock: Any = None
        self._mosaic: np.ndarray | None = None
        self._shape: tuple[int, int, int] | None = None  # (n, H, W) the window was made for
        self._cols = 1

    def _open(self, n: int, height: int, width: int) -> None:
        pygame = self._pygame = import_pygame()
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        pygame.display.init()
        size = (cols * width * self.scale, rows * height * self.scale)
        self._screen = pygame.display.set_mode(size)
        pygame.display.set_caption(self.title)
        self._surface = pygame.Surface((cols * width, rows * height))
        self._mosaic = np.zeros((rows * height, cols * width, 3), dtype=np.uint8)
        self._clock = pygame.time.Clock()
        self._shape, self._cols = (n, height, width), cols

    def show(self, frames: np.ndarray) -> None:
        """Draw ``frames`` ``(n, H, W, 3)`` uint8 and handle window events."""
        n, height, width, _ = frames.shape
        if self._screen is None or self._shape != (n, height, width):
            self.close()
            self._open(n, height, width)
        assert self._mosaic is not None
        pygame, cols = self._pygame, self._cols
        for i, frame in enumerate(frames):
            row, col = divmod(i, cols)
            self._mosaic[row * height : (row + 1) * height, col * width : (col + 1) * width] = frame
        pygame.surfarray.blit_array(self._surface, self._mosaic.transpose(1, 0, 2))  # (W, H, 3)
        pygame.transform.scale(self._surface, self._screen.get_size(), self._screen)
        pygame.display.flip()
        if any(event.type == pygame.QUIT for event in pygame.event.get()):
            self.close()
            return
        self._clock.tick(self.fps)

    def close(self) -> None:
        """Close the window; safe to call more than once."""
        if self._screen is not None:
            self._pygame.display.quit()
        self._screen = self._surface = self._clock = self._mosaic = self._shape = None
