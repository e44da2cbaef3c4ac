"""The keyboard side of screen recording: which physical keys are the 22 ElWorld keys.

- ``KeyMap``: ElWorld key name -> physical key names. The default is the
  original layout (``elworld.keys``: arrows, z, x, 1, 3, q ... f, enter, ctrl,
  esc, f8). ``KeyMap.from_json(path)`` remaps some of them: a JSON object
  ``{"z": "j", "up": ["w", "up"], "esc": []}`` (each value one key or a list;
  ``[]`` never records that key; keys not named keep their default, unless
  the file gives that physical key to another one: ``{"up": "w"}`` leaves
  the ``w`` skill key without a key, with a warning).
- ``Keyboard``: a global ``pynput`` listener that tracks the mapped keys and
  the control keys (stop, pause, split). ``sample()`` returns the keys held
  at any moment since the previous sample, so a tap shorter than a frame is
  not lost.

Physical key names are a single character (``"z"``, ``"1"``) or a pynput
``Key`` name: ``up``, ``down``, ``left``, ``right``, ``enter``, ``esc``,
``space``, ``tab``, ``shift``, ``shift_r``, ``ctrl``, ``ctrl_l``, ``ctrl_r``,
``alt``, ``alt_l``, ``alt_r``, ``f1`` .. ``f20``, ``backspace``, ``home`` ...
Letters match whatever modifiers are held (``Z`` is ``z``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from elworld.keys import KEY_NAMES, NUM_KEYS
from elworld.record.screen_capture import EXTRA_HINT, ScreenError, check_display

logger = logging.getLogger(__name__)

DEFAULT_PHYSICAL: dict[str, tuple[str, ...]] = {
    **{name: (name,) for name in KEY_NAMES},
    "ctrl": ("ctrl", "ctrl_l", "ctrl_r"),
}
CONTROLS = ("stop", "pause", "split")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _check_physical(name: object, where: str) -> str:
    if not isinstance(name, str) or not (len(name) == 1 or _NAME.fullmatch(name)):
        raise ValueError(
            f"{where}: {name!r} is not a key name (one character such as 'z', or a name "
            "such as 'up', 'enter', 'ctrl_l', 'f10')"
        )
    return name.lower() if len(name) == 1 else name


class KeyMap:
    """Which physical keys stand for each of the 22 ElWorld keys (see the module docstring)."""

    def __init__(self, physical: Mapping[str, Sequence[str]] | None = None) -> None:
        explicit: dict[str, tuple[str, ...]] = {}
        for name, keys in (physical or {}).items():
            if name not in KEY_NAMES:
                raise ValueError(
                    f"key map: {name!r} is not an ElWorld key; expected one of {', '.join(KEY_NAMES)}"
                )
            keys = [keys] if isinstance(keys, str) else list(keys)
            explicit[name] = tuple(_check_physical(k, f"key map entry {name!r}") for k in keys)
        taken = {key for keys in explicit.values() for key in keys}
        table = {}
        for name in KEY_NAMES:  # a physical key named in the file leaves its default owner
            if name in explicit:
                table[name] = explicit[name]
                continue
            table[name] = tuple(key for key in DEFAULT_PHYSICAL[name] if key not in taken)
            if DEFAULT_PHYSICAL[name] and not table[name]:
                logger.warning(
                    "key map: %r now has no physical key (%s went to another key); "
                    "map it too if the game uses it", name, "/".join(DEFAULT_PHYSICAL[name]),
                )  # fmt: skip
        self.physical: dict[str, tuple[str, ...]] = {name: table[name] for name in KEY_NAMES}
        self.index: dict[str, int] = {}
        for i, name in enumerate(KEY_NAMES):
            for key in self.physical[name]:
                if key in self.index:
                    raise ValueError(
                        f"key map: physical key {key!r} is mapped to both "
                        f"{KEY_NAMES[self.index[key]]!r} and {name!r}"
                    )
                self.index[key] = i

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> KeyMap:
        """Read a remap file: ``{"elworld key": "physical key" or [keys...]}``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as error:
            raise ValueError(f"cannot read key map {path}: {error.strerror}") from error
        except json.JSONDecodeError as error:
            raise ValueError(f"key map {path} is not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise ValueError(f'key map {path} must be a JSON object, e.g. {{"z": "j"}}')
        return cls(data)

    def table(self) -> dict[str, list[str]]:
        """ElWorld key -> physical keys, JSON-ready (stored in each sidecar as ``keys``)."""
        return {name: list(keys) for name, keys in self.physical.items()}


def event_key_name(key: Any) -> str | None:
    """A pynput key event's name in the ``KeyMap`` vocabulary (``None``: unnamed key).

    Letters and digits are named from the virtual key code where the platform
    gives one (Shift does not turn ``z`` into ``Z``; Ctrl does not turn it into
    a control character), else from the typed character.
    """
    name = getattr(key, "name", None)
    if name:
        return str(name)
    vk = getattr(key, "vk", None)
    if isinstance(vk, int) and (0x30 <= vk <= 0x39 or 0x41 <= vk <= 0x5A):
        return chr(vk).lower()  # Windows virtual keys and X11 keysyms agree here
    if isinstance(vk, int) and 0x61 <= vk <= 0x7A and sys.platform != "win32":
        return chr(vk)  # X11 keysyms of lower-case letters (Windows: the numeric keypad)
    char = getattr(key, "char", None)
    return char.lower() if char else None


class Keyboard:
    """The held ElWorld keys and the control keys, from a global keyboard listener.

    ``press(name)`` / ``release(name)`` take ``KeyMap`` names; ``start()``
    feeds them from ``pynput``. Thread-safe: the listener runs in its own thread.
    """

    def __init__(self, keymap: KeyMap, controls: Mapping[str, str]) -> None:
        self.keymap = keymap
        self.controls: dict[str, str] = {}
        for command, key in controls.items():
            if command not in CONTROLS:
                raise ValueError(f"unknown control {command!r}; expected one of {CONTROLS}")
            key = _check_physical(key, f"--{command}-key")
            if key in keymap.index:
                raise ValueError(
                    f"--{command}-key {key!r} is also the game key "
                    f"{KEY_NAMES[keymap.index[key]]!r}; choose another key or remap that one"
                )
            if key in self.controls.values():
                raise ValueError(f"--{command}-key {key!r} is already another control key")
            self.controls[command] = key
        self._command_of = {key: command for command, key in self.controls.items()}
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}  # physical name -> index, held now
        self._pressed = np.zeros(NUM_KEYS, dtype=np.uint8)  # pressed since the last sample
        self._commands: list[str] = []
        self._listener: Any = None

    def press(self, name: str | None) -> None:
        """A key went down (``name`` in ``KeyMap`` terms; ``None`` is ignored)."""
        if name is None:
            return
        with self._lock:
            if name in self._command_of:
                if name not in self._held:  # auto-repeat sends more presses: one command
                    self._commands.append(self._command_of[name])
                self._held[name] = -1
            elif name in self.keymap.index:
                self._held[name] = self.keymap.index[name]
                self._pressed[self.keymap.index[name]] = 1

    def release(self, name: str | None) -> None:
        """A key went up."""
        with self._lock:
            self._held.pop(name, None)  # type: ignore[arg-type]

    def sample(self) -> np.ndarray:
        """``(22,)`` uint8: keys held now or pressed at any moment since the last sample."""
        with self._lock:
            action = self._pressed.copy()
            self._pressed[:] = 0
            for index in self._held.values():
                if index >= 0:
                    action[index] = 1
        return action

    def forget_taps(self) -> None:
        """Drop the presses since the last sample (the keys held now still count)."""
        with self._lock:
            self._pressed[:] = 0

    def take_commands(self) -> list[str]:
        """The control commands (``stop``/``pause``/``split``) pressed since the last call."""
        with self._lock:
            commands, self._commands = self._commands, []
        return commands

    def start(self) -> Keyboard:
        """Listen to the whole keyboard (any window focused) with pynput.

        Raises ``ImportError`` naming the extra without pynput, ``ScreenError``
        when the keyboard cannot be read (no display; macOS without the Input
        Monitoring permission; an X server without the RECORD extension).
        """
        check_display()
        try:
            from pynput import keyboard
        except ImportError as error:
            if "platform is not supported" in str(error) or "display" in str(error).lower():
                raise ScreenError(f"pynput cannot read the keyboard here: {error}") from error
            raise ImportError(f"reading the keyboard needs pynput: {EXTRA_HINT}") from error
        known = set(keyboard.Key.__members__)
        for key in [*self.keymap.index, *self.controls.values()]:
            if len(key) > 1 and key not in known:
                raise ValueError(f"{key!r} is not a key name pynput knows; known names: "
                                 f"{', '.join(sorted(known))}")  # fmt: skip
        self._listener = keyboard.Listener(
            on_press=lambda key: self.press(event_key_name(key)),
            on_release=lambda key: self.release(event_key_name(key)),
        )
        self._listener.start()
        self._listener.wait()
        if getattr(self._listener, "IS_TRUSTED", True) is False:  # macOS
            self.stop()
            raise ScreenError(
                "macOS does not let this program read the keyboard: grant Input Monitoring "
                "(and Accessibility) to your terminal in System Settings > Privacy & Security, "
                "then restart it"
            )
        if not self._listener.is_alive():
            raise ScreenError(
                "the keyboard listener stopped at once (on X11 the server needs the RECORD "
                "extension; on Wayland global keys cannot be read: use an X11 session)"
            )
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._listener is not None:
            self._listener.stop()
            _end_x11_record(self._listener)
            self._listener.join(timeout=2)
            self._listener = None


def _end_x11_record(listener: Any) -> None:
    """Make pynput's X11 listener thread return now, not at the next key event.

    pynput 1.8 disables its RECORD context on the connection its own thread is
    blocked reading, so the thread lingers (and prints errors when the X
    server goes away); disabling it from a fresh connection ends it at once.
    """
    context = getattr(listener, "_context", None)
    if context is None or sys.platform in ("win32", "darwin"):
        return
    try:
        from Xlib import display

        connection = display.Display()
        try:
            connection.record_disable_context(context)
            connection.flush()
        finally:
            connection.close()
    except Exception as error:  # the thread then ends at the next event; nothing lost
        logger.debug("could not end the X11 key listener early: %s", error)
