"""Record any PC game: a window or screen region at a steady frame rate, plus the 22 keys held.

``record_screen(target, out_dir, ...)`` grabs ``target`` (see
``elworld.record.screen_capture``) ``fps`` times a second and reads the
keyboard with a global listener (``elworld.record.screen_keys``), writing one
``PREFIX_NNNN.npz`` + ``.json`` per episode in the original format:
``obs (N, H, W, 3)`` uint8 RGB at the window's size (or ``size``), ``act (N, 22)``
uint8, ``rew (N,)`` zeros and ``done (N,)`` zeros.

Alignment: ``act[t]`` is every key held at any moment while ``obs[t]`` was the
latest frame, from its grab to the grab of ``obs[t+1]`` (for the last frame:
to the end of the episode). That is the memory model's contract: the keys
pressed after seeing ``obs[t]`` lead to ``obs[t+1]``. A key tapped between
two grabs still shows in the frame it was tapped on.

Timing: frame ``t`` is due at ``start + t / fps``. A grab that comes later
than half a period is counted *late*; a tick missed entirely (the machine was
busy for more than a period) is counted *dropped* and skipped: no frame is
ever repeated to keep the rate, so ``act`` of the frame before a drop covers
the longer interval. Achieved fps, dropped and late frames and the lag of
each grab (jitter) are shown live and stored in the sidecar.

Episodes end by the split key or ``episode_seconds`` (``"ended": "split"``),
the pause key (``"paused"``; the next one starts when it is pressed again,
so no episode jumps across a pause), the stop key (``"stopped"``), Ctrl+C or
SIGTERM (``"interrupted"``), ``duration`` (``"duration"``), the window closing
(``"window_closed"``) or changing size (``"window_resized"``). None is a game
over, so ``done`` stays 0; the end is in the sidecar's ``ended``.

Memory stays flat: frames stream to ``.tmp-PREFIX_NNNN.frames.raw`` beside the
episode and the ``.npz`` is built from it when the episode ends (atomically,
``write_streamed_episode``); capture pauses while it is built (a few seconds per
GB on a local disk), between two episodes. A crash or ``kill -9`` loses only
the episode in flight; its temporary file is removed by the next session.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from elworld.record.screen_capture import CaptureTarget, Grabber, ScreenError, window_rect
from elworld.record.screen_keys import Keyboard, KeyMap
from elworld.record.writer import (
    RecordError,
    episode_path,
    next_episode_index,
    prepare_output_dir,
    write_streamed_episode,
)

logger = logging.getLogger(__name__)

ACT_CONVENTION = (
    "act[t] = keys held at any moment from the grab of obs[t] to the grab of obs[t+1] "
    "(the last frame: to the end of the episode)"
)
# How often (in seconds) a window's position and size are read again.
_WINDOW_POLL_SECONDS = 1.0


class FrameSource(Protocol):
    """What ``record_screen`` grabs frames with (``Grabber`` in real use)."""

    def grab(self, target: CaptureTarget) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass
class _Episode:
    """One episode being recorded: frames on disk, actions and timings in memory."""

    index: int
    path: Path
    raw_path: Path
    raw: BinaryIO
    shape: tuple[int, int]
    started: float
    actions: list[np.ndarray] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)  # seconds each grab came after its tick
    grabbed: list[float] = field(default_factory=list)  # perf_counter of each grab
    capture: dict[str, Any] = field(default_factory=dict)  # the target when it started
    dropped: int = 0
    late: int = 0
    ticks: int = 0

    @property
    def frames(self) -> int:
        return len(self.lags)


def _raw_path(out: Path, prefix: str, index: int) -> Path:
    return out / f".tmp-{prefix}_{index:04d}.frames.raw"


def _remove_stale(out: Path, prefix: str) -> None:
    """Delete the temporary files a killed session left (its episode in flight is lost)."""
    for stale in [*out.glob(f".tmp-{prefix}_*.frames.raw"), *out.glob(f".tmp-{prefix}_*.npz")]:
        logger.warning("removing %s, left by a session that did not finish (kill -9 or crash)",
                       stale.name)  # fmt: skip
        with suppress(OSError):
            stale.unlink()


def resize_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 at ``size = (h, w)`` (Pillow bilinear; ``None``: as is)."""
    if size is None or frame.shape[:2] == size:
        return frame
    from PIL import Image  # antialiased when downscaling, and much cheaper per frame than torch

    image = Image.fromarray(frame).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image)


def _timing(episode: _Episode, fps: float, ended_at: float) -> dict[str, Any]:
    lags_ms = np.asarray(episode.lags) * 1000.0
    intervals_ms = np.diff(episode.grabbed) * 1000.0
    seconds = max(ended_at - episode.started, 1e-9)
    return {
        "achieved_fps": round(episode.frames / seconds, 3),
        "duration_s": round(seconds, 3),
        "dropped_frames": episode.dropped,
        "late_frames": episode.late,
        "jitter_ms": {
            "lag_mean": round(float(lags_ms.mean()), 3),
            "lag_p95": round(float(np.percentile(lags_ms, 95)), 3),
            "lag_max": round(float(lags_ms.max()), 3),
            "interval_std": round(float(intervals_ms.std()), 3) if intervals_ms.size else 0.0,
            "interval_max": round(float(intervals_ms.max()), 3) if intervals_ms.size else 0.0,
        },
    }


@contextmanager
def _stop_on_signals(stop: dict[str, str | None]) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set ``stop["reason"]`` (a second SIGINT raises)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop["reason"] == "interrupted" and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop["reason"] = "interrupted"

    names = ["SIGINT", "SIGTERM"] + (["SIGHUP"] if hasattr(signal, "SIGHUP") else [])
    previous = {name: signal.signal(getattr(signal, name), handler) for name in names}
    try:
        yield
    finally:
        for name, old in previous.items():
            signal.signal(getattr(signal, name), old)


def record_screen(
    target: CaptureTarget,
    out_dir: str | os.PathLike[str],
    *,
    fps: float = 20.0,
    size: tuple[int, int] | None = None,
    episode_seconds: float | None = None,
    duration: float | None = None,
    prefix: str = "screen",
    keymap: KeyMap | None = None,
    stop_key: str = "f10",
    pause_key: str = "f6",
    split_key: str = "f11",
    progress: bool = True,
    keyboard: Keyboard | None = None,
    grabber: FrameSource | None = None,
) -> list[Path]:
    """Record ``target`` with the keyboard until stopped; return the episode files written.

    ``size`` is ``(H, W)`` to store frames at (default: the target's size),
    ``episode_seconds`` splits episodes every so many seconds, ``duration``
    stops after so many seconds. ``stop_key``/``pause_key``/``split_key`` are
    physical key names (``screen_keys``). ``keyboard`` and ``grabber`` default
    to a started ``Keyboard`` and a ``Grabber`` (tests and scripts may pass
    their own; a passed keyboard is used as it is, not started). See the
    module docstring for the alignment, timing and episode-end rules.
    """
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    for name, value in (("episode_seconds", episode_seconds), ("duration", duration)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0 seconds, got {value}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be (H, W) with H, W >= 1, got {size}")
    keymap = keymap or KeyMap()
    own_keyboard = keyboard is None
    if keyboard is None:  # checks the control keys before anything is created
        keyboard = Keyboard(keymap, {"stop": stop_key, "pause": pause_key, "split": split_key})
    out = prepare_output_dir(out_dir)
    _remove_stale(out, prefix)
    grabber = grabber or Grabber()
    meta = {
        "source": "screen", "policy": "human", "capture": target.describe(), "fps": fps,
        "capture_size": [target.height, target.width], "keys": keymap.table(),
        "controls": dict(keyboard.controls), "act_convention": ACT_CONVENTION,
        "platform": sys.platform,
    }  # fmt: skip
    recorder = _Recorder(target, out, prefix, fps, size, episode_seconds, duration, keyboard,
                         grabber, meta, progress)  # fmt: skip
    try:
        if own_keyboard:
            keyboard.start()
        logger.info(
            "recording %s at %g fps into %s: %s stops, %s pauses/resumes, %s starts a new episode",
            target.title or f"region {target.monitor}", fps, out, keyboard.controls.get("stop"),
            keyboard.controls.get("pause"), keyboard.controls.get("split"),
        )  # fmt: skip
        return recorder.run()
    finally:
        if own_keyboard:
            keyboard.stop()
        grabber.close()


class _Recorder:
    """The capture loop of ``record_screen`` (one per call)."""

    def __init__(self, target: CaptureTarget, out: Path, prefix: str, fps: float,
                 size: tuple[int, int] | None, episode_seconds: float | None,
                 duration: float | None, keyboard: Keyboard, grabber: FrameSource,
                 meta: dict[str, Any], progress: bool) -> None:  # fmt: skip
        self.target, self.out, self.prefix, self.fps = target, out, prefix, fps
        self.size, self.keyboard, self.grabber, self.meta = size, keyboard, grabber, meta
        self.period = 1.0 / fps
        self.split_ticks = None if episode_seconds is None else max(1, round(episode_seconds * fps))
        self.duration = duration
        self.next_index = next_episode_index(out, prefix)
        self.paths: list[Path] = []
        self.episode: _Episode | None = None
        self.progress = progress
        self.bar: Any = None

    def _start_episode(self, now: float, shape: tuple[int, int]) -> _Episode:
        index = self.next_index
        path = episode_path(self.out, self.prefix, index)
        if path.exists():
            raise RecordError(f"episode file {path} already exists (refusing to overwrite it)")
        raw_path = _raw_path(self.out, self.prefix, index)
        try:
            raw = open(raw_path, "wb")  # noqa: SIM115 (closed by _finish)
        except OSError as error:
            raise RecordError(f"cannot write {raw_path}: {error.strerror}") from error
        self.next_index += 1
        capture = {"capture": self.target.describe(),
                   "capture_size": [self.target.height, self.target.width]}  # fmt: skip
        return _Episode(index, path, raw_path, raw, shape, now, capture=capture)

    def _finish(self, last_action: np.ndarray, ended: str, now: float) -> None:
        """Close the episode in flight (its last frame's keys: ``last_action``) and save it."""
        episode, self.episode = self.episode, None
        if episode is None:
            return
        episode.raw.close()
        if episode.frames == 0:
            episode.raw_path.unlink(missing_ok=True)
            return
        episode.actions.append(last_action)
        n = episode.frames
        meta = {**self.meta, **episode.capture, "size": list(episode.shape), "ended": ended,
                **_timing(episode, self.fps, now)}  # fmt: skip
        zeros = np.zeros(n, dtype=np.uint8)
        try:
            write_streamed_episode(
                episode.path, episode.raw_path, episode.shape, np.stack(episode.actions),
                zeros.astype(np.float32), zeros, meta,
            )  # fmt: skip
        finally:
            episode.raw_path.unlink(missing_ok=True)
        self.paths.append(episode.path)
        logger.info("saved %s: %d frames, %.1f fps, %d dropped, %d late, ended: %s",
                    episode.path.name, n, meta["achieved_fps"], episode.dropped, episode.late,
                    ended)  # fmt: skip

    def _poll_window(self) -> str | None:
        """Follow the window; the reason to end the episode if it closed or changed size."""
        if self.target.window_id is None:
            return None
        rect = window_rect(self.target.window_id)
        if rect is None:
            return "window_closed"
        if rect[2:] != (self.target.width, self.target.height):
            self.target = CaptureTarget(*rect, kind="window", title=self.target.title,
                                        window_id=self.target.window_id)  # fmt: skip
            return None if self.size is not None else "window_resized"
        if rect[:2] != (self.target.left, self.target.top):
            self.target = CaptureTarget(*rect, kind="window", title=self.target.title,
                                        window_id=self.target.window_id)  # fmt: skip
        return None

    def _status(self, paused: bool) -> None:
        episode = self.episode
        if paused:
            self.bar.set_postfix_str("paused", refresh=True)
        elif episode is not None and episode.frames > 1:
            fps = (episode.frames - 1) / max(episode.grabbed[-1] - episode.grabbed[0], 1e-9)
            self.bar.set_postfix_str(
                f"episode {episode.index}: {fps:.1f} fps, {episode.dropped} dropped, "
                f"{episode.late} late", refresh=False,
            )  # fmt: skip

    def run(self) -> list[Path]:
        stop: dict[str, str | None] = {"reason": None}
        poll_ticks = max(1, round(_WINDOW_POLL_SECONDS * self.fps))
        paused = False
        start = session_start = time.perf_counter()
        tick = 0
        with _stop_on_signals(stop), logging_redirect_tqdm():
            self.bar = tqdm(unit="frame", disable=not self.progress, dynamic_ncols=True)
            try:
                while True:
                    due = start + tick * self.period
                    delay = due - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    now = time.perf_counter()
                    missed = int((now - due) // self.period)
                    if missed > 0:  # whole ticks went by: skip them, never fill them
                        tick += missed
                        due += missed * self.period
                        if self.episode is not None:
                            self.episode.dropped += missed
                            self.episode.ticks += missed
                    held = self.keyboard.sample()  # the keys of the interval that ends now
                    saved = len(self.paths)
                    ended = stop["reason"]
                    commands = self.keyboard.take_commands()
                    if ended is None and "stop" in commands:
                        ended = "stopped"
                    if (
                        ended is None
                        and self.duration is not None
                        and now - session_start >= self.duration
                    ):
                        ended = "duration"
                    if ended is None and tick % poll_ticks == 0:
                        ended = self._poll_window()
                    if ended is not None:
                        self._finish(held, ended, now)
                        if ended != "window_resized":
                            break
                    if commands.count("pause") % 2:
                        paused = not paused
                        if paused:
                            self._finish(held, "paused", now)
                        logger.info("paused" if paused else "resumed")
                    episode = self.episode
                    if episode is not None and (
                        "split" in commands
                        or (self.split_ticks is not None and episode.ticks >= self.split_ticks)
                    ):
                        self._finish(held, "split", now)
                    elif episode is not None:
                        episode.actions.append(held)
                    if len(self.paths) != saved and not paused:
                        # Building the .npz took a while: the next episode starts now, on a
                        # fresh schedule, and keys tapped meanwhile belong to no frame.
                        now = due = time.perf_counter()
                        start = now - tick * self.period
                        self.keyboard.forget_taps()
                    tick += 1
                    if paused:
                        self._status(paused)
                        continue
                    self._grab(now, due)
                    self._status(paused)
            except BaseException:
                if self.episode is not None:  # an error: keep what was recorded, then raise
                    with suppress(Exception):
                        if len(self.episode.actions) == self.episode.frames:
                            self.episode.actions.pop()
                        self._finish(self.keyboard.sample(), "error", time.perf_counter())
                raise
            finally:
                self.bar.close()
        return self.paths

    def _grab(self, now: float, due: float) -> None:
        """Grab one frame into the episode in flight (starting one if needed)."""
        frame = resize_frame(self.grabber.grab(self.target), self.size)  # (H, W, 3)
        shape = (int(frame.shape[0]), int(frame.shape[1]))
        if self.episode is None:
            self.episode = self._start_episode(now, shape)
        episode = self.episode
        if shape != episode.shape:
            raise ScreenError(f"grabbed a {shape} frame into an episode of {episode.shape} frames")
        try:
            episode.raw.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
        except OSError as error:
            raise RecordError(f"cannot write {episode.raw_path}: {error.strerror}") from error
        lag = now - due
        episode.lags.append(lag)
        episode.grabbed.append(time.perf_counter())
        episode.late += lag > self.period / 2
        episode.ticks += 1  # ticks since the episode started (dropped ones added in run)
        self.bar.update()
