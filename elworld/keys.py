"""The 22-key action layout shared by recorders, the dream env and play.

An action is a multi-hot ``uint8`` vector of length 22: entry ``i`` is 1 while
key ``KEY_NAMES[i]`` is held. The order is the original recordings' contract
and must never change::

    f8, up, down, left, right, z, x, 1, 3, q, w, e, r, t, a, s, d, c, f,
    enter, ctrl, esc

``PYGAME_KEYS`` names the physical keyboard key(s) of each entry as pygame
constants, so playing a dream uses the same keys the recordings were made with.
pygame is imported lazily: this module is cheap to import.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KEY_NAMES: tuple[str, ...] = (
    "f8", "up", "down", "left", "right", "z", "x", "1", "3", "q", "w",
    "e", "r", "t", "a", "s", "d", "c", "f", "enter", "ctrl", "esc",
)  # fmt: skip
NUM_KEYS = len(KEY_NAMES)
KEY_INDEX: dict[str, int] = {name: i for i, name in enumerate(KEY_NAMES)}

# pygame constant names of the physical key(s) behind each entry, in KEY_NAMES order.
PYGAME_KEYS: tuple[tuple[str, ...], ...] = (
    ("K_F8",), ("K_UP",), ("K_DOWN",), ("K_LEFT",), ("K_RIGHT",), ("K_z",), ("K_x",),
    ("K_1",), ("K_3",), ("K_q",), ("K_w",), ("K_e",), ("K_r",), ("K_t",), ("K_a",),
    ("K_s",), ("K_d",), ("K_c",), ("K_f",), ("K_RETURN", "K_KP_ENTER"),
    ("K_LCTRL", "K_RCTRL"), ("K_ESCAPE",),
)  # fmt: skip


def pygame_key_codes() -> tuple[tuple[int, ...], ...]:
    """pygame key codes for each of the 22 entries (imports pygame)."""
    import pygame

    return tuple(tuple(getattr(pygame, name) for name in names) for names in PYGAME_KEYS)


def action_from_pressed(pressed: Sequence[bool] | object) -> np.ndarray:
    """Turn ``pygame.key.get_pressed()`` into a ``(22,)`` uint8 action."""
    action = np.zeros(NUM_KEYS, dtype=np.uint8)
    for i, codes in enumerate(pygame_key_codes()):
        action[i] = any(pressed[code] for code in codes)
    return action


def action_from_names(names: Sequence[str]) -> np.ndarray:
    """Build a ``(22,)`` uint8 action from key names, e.g. ``["left", "z"]``."""
    action = np.zeros(NUM_KEYS, dtype=np.uint8)
    for name in names:
        if name not in KEY_INDEX:
            raise ValueError(f"unknown key {name!r}; expected one of {', '.join(KEY_NAMES)}")
        action[KEY_INDEX[name]] = 1
    return action


def action_names(action: Sequence[int] | np.ndarray) -> list[str]:
    """Names of the keys held in ``action``."""
    return [KEY_NAMES[i] for i, held in enumerate(np.asarray(action).reshape(-1)) if held]


def check_action(action: object, num_keys: int = NUM_KEYS, name: str = "action") -> np.ndarray:
    """Validate a multi-hot action and return it as ``(num_keys,)`` uint8.

    Raises ``ValueError`` naming ``name`` when the shape is not ``(num_keys,)`` or
    a value is not 0/1.
    """
    array = np.asarray(action)
    if array.shape != (num_keys,):
        raise ValueError(
            f"{name} must have shape ({num_keys},) (one 0/1 entry per key), got shape {array.shape}"
        )
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.number) or not np.all((array == 0) | (array == 1)):
        raise ValueError(f"{name} must contain only 0 and 1 (multi-hot keys), got {array.tolist()}")
    return array.astype(np.uint8)
