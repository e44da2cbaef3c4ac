"""What to capture: a window (by title or id) or a screen region, grabbed with ``mss``.

- ``CaptureTarget``: where the pixels are (``left, top, width, height`` in
  screen coordinates), plus how it was chosen, for the sidecar.
- ``find_target(window=..., window_id=..., region=...)``: resolve the user's
  choice, with a clear error for an unknown title, a region outside the
  screen, no display or a missing library (naming the ``screen`` extra).
- ``list_windows()``: the visible windows with a title (X11 and Windows).
- ``Grabber``: one ``mss`` instance; ``grab(target) -> (H, W, 3)`` uint8 RGB.

Windows are found with python-xlib on X11 and with ``user32`` (ctypes) on
Windows; on macOS (and for any game whose window cannot be found) use a
region. Wayland has no API for a program to read other windows or the global
keyboard: run the game and the recorder in an X11 (XWayland) session.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from elworld.record.writer import RecordError

logger = logging.getLogger(__name__)

EXTRA_HINT = "install the screen extra: pip install 'elworld[screen]'"


class ScreenError(RecordError):
    """The screen or keyboard cannot be read here: no display, no permission, no library."""


@dataclass(frozen=True)
class CaptureTarget:
    """A rectangle of the screen to grab, and what it is (for logs and the sidecar)."""

    left: int
    top: int
    width: int
    height: int
    kind: str  # "window" | "region"
    title: str | None = None
    window_id: int | None = None

    @property
    def monitor(self) -> dict[str, int]:
        """The rectangle in ``mss``'s form."""
        return {"left": self.left, "top": self.top, "width": self.width, "height": self.height}

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description for the sidecar."""
        info: dict[str, Any] = {"kind": self.kind, "region": [self.left, self.top, self.width,
                                                            self.height]}  # fmt: skip
        if self.kind == "window":
            info.update(title=self.title, id=self.window_id)
        return info


def check_display() -> None:
    """Raise ``ScreenError`` when there is no screen to read (Linux/BSD without an X display)."""
    if sys.platform.startswith(("win", "darwin")):
        return
    if not os.environ.get("DISPLAY"):
        wayland = (
            os.environ.get("WAYLAND_DISPLAY") or os.environ.get("XDG_SESSION_TYPE") == "wayland"
        )
        hint = (
            " This is a Wayland session without XWayland: Wayland lets no program read other "
            "windows or the global keyboard; log in to an X11 session (or run the game under "
            "XWayland with DISPLAY set)."
            if wayland
            else " Run it in a desktop session, or under a virtual display (Xvfb :99 & DISPLAY=:99)."
        )
        raise ScreenError("no X display: the DISPLAY environment variable is not set." + hint)


def import_mss() -> Any:
    """The ``mss`` module, or an ``ImportError`` naming the extra."""
    try:
        import mss
    except ImportError as error:
        raise ImportError(f"recording the screen needs mss: {EXTRA_HINT}") from error
    return mss


def _xlib_display() -> Any:
    try:
        from Xlib import X, display, error
    except ImportError as exc:
        raise ImportError(f"finding a window on X11 needs python-xlib: {EXTRA_HINT}") from exc
    try:
        return display.Display(), X, error
    except (error.DisplayError, error.ConnectionClosedError, OSError) as exc:
        raise ScreenError(
            f"cannot open X display {os.environ.get('DISPLAY')!r}: {exc} "
            "(is the display running, and may this user connect to it? see xhost)"
        ) from exc


def _x11_windows() -> list[tuple[int, str, tuple[int, int, int, int]]]:
    """``(id, title, (left, top, width, height))`` of every viewable, titled X11 window."""
    disp, X, xerror = _xlib_display()
    try:
        root = disp.screen().root
        net_name = disp.intern_atom("_NET_WM_NAME")
        utf8 = disp.intern_atom("UTF8_STRING")
        found = []
        stack = [root]
        while stack:
            window = stack.pop()
            try:
                children = window.query_tree().children
            except xerror.XError:
                continue
            stack.extend(children)
            if window == root:
                continue
            try:
                if window.get_attributes().map_state != X.IsViewable:
                    continue
                prop = window.get_full_property(net_name, utf8)
                title = prop.value.decode("utf-8", "replace") if prop else window.get_wm_name()
                if isinstance(title, bytes):
                    title = title.decode("latin-1")
                if not title:
                    continue
                geometry = window.get_geometry()
                origin = root.translate_coords(window, 0, 0)
            except xerror.XError:  # the window went away meanwhile
                continue
            found.append((window.id, str(title), (origin.x, origin.y, geometry.width,
                                                  geometry.height)))  # fmt: skip
        return found
    finally:
        disp.close()


def _win32_windows() -> list[tuple[int, str, tuple[int, int, int, int]]]:
    """``(hwnd, title, client rectangle)`` of the visible, titled top-level windows (Windows)."""
    import ctypes
    from ctypes import wintypes

    user32 = ctypes.windll.user32  # type: ignore[attr-defined]
    user32.SetProcessDPIAware()  # coordinates in real pixels, as mss grabs them
    found = []

    @ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.HWND, wintypes.LPARAM)
    def visit(hwnd: int, _: int) -> bool:
        length = user32.GetWindowTextLengthW(hwnd)
        if length and user32.IsWindowVisible(hwnd):
            buffer = ctypes.create_unicode_buffer(length + 1)
            user32.GetWindowTextW(hwnd, buffer, length + 1)
            rect, origin = wintypes.RECT(), wintypes.POINT(0, 0)
            user32.GetClientRect(hwnd, ctypes.byref(rect))
            user32.ClientToScreen(hwnd, ctypes.byref(origin))
            found.append((int(hwnd), buffer.value, (origin.x, origin.y, rect.right, rect.bottom)))
        return True

    user32.EnumWindows(visit, 0)
    return found


def list_windows() -> list[tuple[int, str, tuple[int, int, int, int]]]:
    """``(id, title, (left, top, width, height))`` of the visible windows that have a title.

    Raises ``ScreenError`` on macOS (no window lookup: use a region) and where
    there is no display.
    """
    if sys.platform == "win32":
        return _win32_windows()
    if sys.platform == "darwin":
        raise ScreenError(
            "finding a window by title is not supported on macOS; pass --region X,Y,W,H "
            "(the window's rectangle in screen pixels) instead"
        )
    check_display()
    return _x11_windows()


def window_rect(window_id: int) -> tuple[int, int, int, int] | None:
    """The window's current ``(left, top, width, height)``, or ``None`` once it is gone."""
    entries = _win32_windows() if sys.platform == "win32" else _x11_window(window_id)
    return next((rect for wid, _, rect in entries if wid == window_id), None)


def _x11_window(window_id: int) -> list[tuple[int, str, tuple[int, int, int, int]]]:
    """One X11 window's entry (empty when it is gone or not viewable)."""
    disp, X, xerror = _xlib_display()
    try:
        window = disp.create_resource_object("window", window_id)
        try:
            if window.get_attributes().map_state != X.IsViewable:
                return []
            geometry = window.get_geometry()
            origin = disp.screen().root.translate_coords(window, 0, 0)
        except xerror.XError:
            return []
        return [(window_id, "", (origin.x, origin.y, geometry.width, geometry.height))]
    finally:
        disp.close()


def parse_region(text: str) -> tuple[int, int, int, int]:
    """``"X,Y,W,H"`` -> ``(x, y, w, h)``; ``ValueError`` unless four integers with W, H > 0."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or values[2] <= 0 or values[3] <= 0:
        raise ValueError(f"region must be X,Y,W,H (four integers, W and H > 0), got {text!r}")
    return values  # type: ignore[return-value]


def screen_bounds() -> dict[str, int]:
    """The rectangle covering all monitors (``mss``'s monitor 0)."""
    mss = import_mss()
    try:
        with _open_mss(mss) as grabber:
            return dict(grabber.monitors[0])
    except mss.exception.ScreenShotError as error:
        raise ScreenError(f"cannot read the screen: {error}") from error


def _open_mss(mss: Any) -> Any:
    return (mss.MSS if hasattr(mss, "MSS") else mss.mss)()


def _check_inside(rect: Sequence[int], bounds: dict[str, int], what: str) -> None:
    left, top, width, height = rect
    right, bottom = bounds["left"] + bounds["width"], bounds["top"] + bounds["height"]
    if (
        left < bounds["left"]
        or top < bounds["top"]
        or left + width > right
        or top + height > bottom
    ):
        raise ValueError(
            f"{what} {left},{top},{width},{height} (X,Y,W,H) is not inside the screen "
            f"{bounds['left']},{bounds['top']},{bounds['width']},{bounds['height']}: "
            "move the window fully onto the screen or pick a region inside it"
        )


def find_target(
    *,
    window: str | None = None,
    window_id: int | None = None,
    region: tuple[int, int, int, int] | None = None,
) -> CaptureTarget:
    """Resolve exactly one of a window title, a window id or a region to a ``CaptureTarget``.

    A title matches a window whose title is equal to it, else the only window
    whose title contains it (ignoring case). Raises ``ValueError`` for an
    unknown or ambiguous title, an unknown id or a rectangle outside the
    screen, ``ScreenError`` without a display, ``ImportError`` (naming the
    ``screen`` extra) without mss or python-xlib.
    """
    if sum(x is not None for x in (window, window_id, region)) != 1:
        raise ValueError(
            "choose what to record: exactly one of a window title, a window id or a region"
        )
    check_display()
    bounds = screen_bounds()
    if region is not None:
        _check_inside(region, bounds, "region")
        return CaptureTarget(*region, kind="region")
    windows = list_windows()
    if window_id is not None:
        matches = [w for w in windows if w[0] == window_id]
        if not matches:
            raise ValueError(f"no visible window has id {window_id} (0x{window_id:x}); "
                             "list them with: elworld record screen --list-windows")  # fmt: skip
    else:
        assert window is not None
        matches = [w for w in windows if w[1] == window]
        if not matches:
            matches = [w for w in windows if window.lower() in w[1].lower()]
        if not matches:
            titles = sorted({w[1] for w in windows})
            shown = ", ".join(repr(t) for t in titles[:10]) + (" ..." if len(titles) > 10 else "")
            raise ValueError(
                f"no visible window's title contains {window!r}; open windows: {shown or 'none'} "
                "(is the game running and not minimised? all: elworld record screen --list-windows)"
            )
        if len({w[0] for w in matches}) > 1:
            listed = ", ".join(f"{w[1]!r} (id {w[0]})" for w in matches[:10])
            raise ValueError(f"{len(matches)} windows match {window!r}: {listed}; "
                             "pass a longer title or --window-id")  # fmt: skip
    wid, title, rect = matches[0]
    _check_inside(rect, bounds, f"window {title!r}")
    return CaptureTarget(*rect, kind="window", title=title, window_id=wid)


class Grabber:
    """Grabs a rectangle of the screen as RGB uint8 frames (one ``mss`` instance, reused)."""

    def __init__(self) -> None:
        self._mss = import_mss()
        try:
            self._grabber = _open_mss(self._mss)
        except self._mss.exception.ScreenShotError as error:
            raise ScreenError(f"cannot read the screen: {error}") from error

    def grab(self, target: CaptureTarget) -> np.ndarray:
        """A fresh ``(height, width, 3)`` uint8 RGB copy of ``target``'s pixels.

        Raises ``ScreenError`` when the screen cannot be read (e.g. macOS
        without the Screen Recording permission gives an error or black frames).
        """
        try:
            shot = self._grabber.grab(target.monitor)
        except self._mss.exception.ScreenShotError as error:
            raise ScreenError(f"cannot grab {target.monitor} from the screen: {error}") from error
        bgra = np.frombuffer(shot.bgra, dtype=np.uint8).reshape(shot.height, shot.width, 4)
        return bgra[:, :, 2::-1].copy()  # (H, W, 3) RGB

    def close(self) -> None:
        """Release the display connection."""
        self._grabber.close()
