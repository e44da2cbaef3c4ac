"""Video files of dreams: MP4 through imageio's ffmpeg plugin, GIF through Pillow.

- ``write_video(path, frames, fps)`` writes an iterable of uint8 ``(H, W, 3)``
  frames and returns how many it wrote.
- ``VideoRecorder(path, fps)`` takes frames one at a time (``add``) and
  finishes the file on ``close`` (what ``elworld play``'s F11 uses).

The format follows the suffix: ``.mp4`` (H.264 via the ffmpeg binary bundled
with ``imageio-ffmpeg``; frames are streamed to ffmpeg, never held; an odd
width or height is padded by one black row/column because H.264's yuv420p needs
even sizes) or ``.gif`` (Pillow; each frame is kept as a 1-byte-per-pixel
palette image until the file is written, so keep GIFs short; consecutive
identical frames are merged into one longer frame, as GIF encoders do).
Files appear atomically: frames go to a hidden temporary file beside the
target, which is renamed into place only when complete.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import numpy as np
from PIL import Image

from elworld.atomic import atomic_replace

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".gif")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_video_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a ``Path``; ``ValueError`` unless its suffix is a known video format."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(
            f"cannot write video {path}: unknown suffix {path.suffix!r}; "
            f"expected one of {', '.join(VIDEO_SUFFIXES)}"
        )
    return path


def _check_frame(frame: object, shape: tuple[int, ...] | None) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        kind = frame.dtype if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"video frames must be uint8 numpy arrays (H, W, 3), got {kind}")
    if frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
        raise ValueError(f"video frames must have shape (H, W, 3), got {frame.shape}")
    if shape is not None and frame.shape != shape:
        raise ValueError(
            f"all video frames must have the same shape: first {shape}, then {frame.shape}"
        )
    return frame


class _Mp4Sink:
    """Streams frames to ffmpeg (libx264, yuv420p) through imageio."""

    def __init__(self, path: Path, fps: float) -> None:
        import imageio.v2 as imageio

        self._writer = imageio.get_writer(
            path,
            format="FFMPEG",
            mode="I",
            fps=fps,
            codec="libx264",
            macro_block_size=1,  # we pad to even sizes ourselves: no silent resize
            quality=8,  # 0-10; dream frames are small, keep their detail
            ffmpeg_log_level="error",
        )

    def add(self, frame: np.ndarray) -> None:
        pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
        if pad_h or pad_w:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)))  # (H', W', 3), even
        self._writer.append_data(frame)

    def finish(self) -> None:
        self._writer.close()

    def abort(self) -> None:
        self._writer.close()


class _GifSink:
    """Collects palette images and lets Pillow write the animated GIF at the end."""

    def __init__(self, path: Path, fps: float) -> None:
        self._path = path
        self._duration_ms = max(10, round(1000 / fps))  # GIF counts in 10 ms units
        self._images: list[Image.Image] = []

    def add(self, frame: np.ndarray) -> None:
        image = Image.fromarray(frame)  # RGB
        self._images.append(image.convert("P", palette=Image.Palette.ADAPTIVE))

    def finish(self) -> None:
        if not self._images:
            raise ValueError(f"cannot write {self._path}: no frames")
        first, *rest = self._images
        first.save(
            self._path,
            format="GIF",
            save_all=True,
            append_images=rest,
            duration=self._duration_ms,
            loop=0,
        )
        self._images = []

    def abort(self) -> None:
        self._images = []


class VideoRecorder:
    """Write frames to a video file one at a time; the file appears on ``close()``.

    ``path``'s suffix picks the format (``.mp4`` or ``.gif``, see the module
    docstring). All frames must be uint8 ``(H, W, 3)`` of one shape. Use as a
    context manager: on an exception the partial file is deleted and the target
    is left untouched.

    Raises:
        ValueError: an unknown suffix, a non-positive ``fps``, a frame of the
            wrong dtype/shape, or ``close()`` with no frame added.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float = 20.0) -> None:
        self.path = check_video_path(path)
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        self.fps = float(fps)
        self.num_frames = 0
        self._shape: tuple[int, ...] | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(
            prefix=f".{self.path.stem}.", suffix=f".partial{self.path.suffix}", dir=self.path.parent
        )
        os.close(handle)
        self._tmp = Path(name)
        try:
            sink_class = _GifSink if self.path.suffix.lower() == ".gif" else _Mp4Sink
            self._sink: _Mp4Sink | _GifSink | None = sink_class(self._tmp, self.fps)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    @property
    def closed(self) -> bool:
        """Whether the file was finished (or abandoned)."""
        return self._sink is None

    def add(self, frame: np.ndarray) -> None:
        """Append one uint8 ``(H, W, 3)`` frame."""
        if self._sink is None:
            raise ValueError(f"video {self.path} is already closed")
        self._shape = _check_frame(frame, self._shape).shape
        self._sink.add(frame)
        self.num_frames += 1

    def close(self) -> Path:
        """Finish the file, move it into place and return its path."""
        if self._sink is None:
            return self.path
        sink, self._sink = self._sink, None
        try:
            if self.num_frames == 0:
                raise ValueError(f"cannot write video {self.path}: no frames were added")
            sink.finish()
            os.chmod(self._tmp, 0o666 & ~_umask())  # mkstemp made it private
            atomic_replace(self._tmp, self.path)
        except BaseException:
            sink.abort()
            self._tmp.unlink(missing_ok=True)
            raise
        logger.debug("wrote %d frames to %s", self.num_frames, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file; the target path is left as it was."""
        if self._sink is None:
            return
        sink, self._sink = self._sink, None
        try:
            sink.abort()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(
    path: str | os.PathLike[str], frames: Iterable[np.ndarray], fps: float = 20.0
) -> int:
    """Write uint8 ``(H, W, 3)`` ``frames`` to ``path`` (``.mp4`` or ``.gif``); return the count.

    ``frames`` is consumed lazily (a generator works: an MP4 never holds more
    than one frame). The file appears atomically, only once complete.

    Raises:
        ValueError: an unknown suffix, bad frames, or no frames at all.
    """
    with VideoRecorder(path, fps) as recorder:
        for frame in frames:
            recorder.add(frame)
    return recorder.num_frames
