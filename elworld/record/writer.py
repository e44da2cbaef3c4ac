"""Atomic episode files: ``NAME.npz`` (the arrays) plus ``NAME.json`` (a sidecar).

The format (the one place it is described; ``elworld collect --help`` repeats it):

- ``obs (N, H, W, 3) uint8``: RGB frames; step ``t``'s policy saw ``obs[t]``;
- ``act (N, 22) uint8``: 1 where a key (``elworld.keys``) was held at step ``t``;
- ``rew (N,) float32``: the reward step ``t`` returned (optional);
- ``done (N,) uint8``: 1 only on the last step of an episode that ended *by
  itself* (death, goal: Gymnasium's ``terminated``) (optional);
- ``truncated (N,) uint8``: 1 only on the last step of an episode that was
  *cut*: a time limit (Gymnasium's ``truncated``, a ViZDoom timeout), a step
  cap or a stop (optional; never 1 on the same step as ``done``). A time limit
  is not a game over: world models learn episode ends from ``done`` alone.
  Files from before ``truncated`` existed are read through their sidecar's
  ``"ended"`` (``elworld.data.episodes.read_labels``).

The sidecar ``NAME.json`` holds what the recorder knew (``ended``: one of
``terminated``/``truncated``/``max_steps``/``stopped``; ``source``,
``scenario``, ``frame_skip``, ``steps_per_second``, ``keys``, ``policy``,
``seed``...) plus what ``write_episode`` adds (see there).

An episode is written to ``.tmp-NAME.npz`` in the target folder, flushed and
fsynced, then renamed into place (and the folder fsynced), so a crash, a full
disk or Ctrl+C never leaves a half-written ``.npz``: either the whole file is
there or none. The JSON sidecar is written the same way, after the ``.npz``.

``write_streamed_episode`` builds the same ``.npz`` from frames already
streamed to a raw file (the screen recorder's way to keep RAM flat).

Files are uncompressed ``np.savez`` by default: capture is CPU-bound
(``savez_compressed`` deflates ~30 MB/s, i.e. ~200 frames/s on one core,
while ViZDoom renders thousands), and uncompressed members can be read
lazily by the data loader. Pass ``compress=True`` to archive: take_cover
episodes then shrink about 9x.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

import elworld
from elworld.atomic import atomic_write
from elworld.keys import NUM_KEYS

# Bytes copied at a time from a raw frames file into an .npz.
_COPY_BYTES = 1 << 22


class RecordError(OSError):
    """An episode could not be written: bad output path, full disk, existing file..."""


def prepare_output_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Create ``out_dir`` if needed and check it is a writable folder.

    Raises ``RecordError`` naming the path otherwise.
    """
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise RecordError(
            f"output path {path} is not a folder (a file is in the way: {error.filename})"
        ) from error
    except OSError as error:
        raise RecordError(f"cannot create output folder {path}: {error.strerror}") from error
    if not os.access(path, os.W_OK | os.X_OK):
        raise RecordError(f"output folder {path} is not writable")
    return path


def next_episode_index(out_dir: str | os.PathLike[str], prefix: str) -> int:
    """The number after the highest ``{prefix}_NNNN.npz`` in ``out_dir`` (1 if none)."""
    pattern = re.compile(rf"{re.escape(prefix)}_(\d+)\.npz")
    path = Path(out_dir)
    if not path.is_dir():
        return 1
    indices = [int(m.group(1)) for p in path.iterdir() if (m := pattern.fullmatch(p.name))]
    return max(indices, default=0) + 1


def episode_path(out_dir: str | os.PathLike[str], prefix: str, index: int) -> Path:
    """``out_dir/{prefix}_{index:04d}.npz``, e.g. ``take_cover_0001.npz``."""
    return Path(out_dir) / f"{prefix}_{index:04d}.npz"


def _check_arrays(
    obs: np.ndarray,
    act: np.ndarray,
    rew: np.ndarray | None,
    done: np.ndarray | None,
    truncated: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Validate and convert the episode arrays; ``ValueError`` names the bad one."""
    obs = np.asarray(obs)
    if obs.ndim != 4 or obs.shape[3] != 3 or obs.dtype != np.uint8:
        raise ValueError(f"obs must be (N, H, W, 3) uint8 RGB frames, got {obs.shape} {obs.dtype}")
    n = obs.shape[0]
    if n == 0:
        raise ValueError("obs holds no frames; an episode needs at least one step")
    act = np.asarray(act)
    if act.shape != (n, NUM_KEYS):
        raise ValueError(
            f"act must have shape ({n}, {NUM_KEYS}) (one row per frame), got {act.shape}"
        )
    if act.dtype != np.bool_ and not np.all((act == 0) | (act == 1)):
        raise ValueError("act must contain only 0 and 1 (multi-hot keys)")
    arrays = {"obs": obs, "act": act.astype(np.uint8)}
    if rew is not None:
        rew = np.asarray(rew)
        if rew.shape != (n,) or not np.issubdtype(rew.dtype, np.number):
            raise ValueError(
                f"rew must be ({n},) numbers (one per frame), got {rew.shape} {rew.dtype}"
            )
        arrays["rew"] = rew.astype(np.float32)
    if done is not None:
        done = np.asarray(done)
        if done.shape != (n,) or not np.all((done == 0) | (done == 1)):
            raise ValueError(f"done must be ({n},) of 0/1 (one per frame), got {done.shape}")
        arrays["done"] = done.astype(np.uint8)
    if truncated is not None:
        truncated = np.asarray(truncated)
        if truncated.shape != (n,) or not np.all((truncated == 0) | (truncated == 1)):
            raise ValueError(
                f"truncated must be ({n},) of 0/1 (one per frame), got {truncated.shape}"
            )
        arrays["truncated"] = truncated.astype(np.uint8)
        if "done" in arrays and np.any(arrays["done"] & arrays["truncated"]):
            raise ValueError("a step cannot be both done (ended by itself) and truncated (cut)")
    return arrays


def _save_arrays(fp: IO[bytes], arrays: dict[str, np.ndarray], compress: bool) -> None:
    (np.savez_compressed if compress else np.savez)(fp, **arrays)


def _write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """``atomic_write`` with ``OSError``s (a full disk...) turned into ``RecordError``."""
    try:
        atomic_write(path, write)
    except RecordError:
        raise
    except OSError as error:
        reason = "the disk is full" if error.errno == errno.ENOSPC else error.strerror or error
        raise RecordError(f"could not write {path}: {reason}") from error


def write_episode(
    path: str | os.PathLike[str],
    obs: np.ndarray,
    act: np.ndarray,
    rew: np.ndarray | None = None,
    done: np.ndarray | None = None,
    meta: Mapping[str, Any] | None = None,
    *,
    truncated: np.ndarray | None = None,
    compress: bool = False,
    overwrite: bool = False,
) -> Path:
    """Atomically write one episode to ``path`` (``.npz``) and its ``.json`` sidecar.

    Arrays: ``obs (N, H, W, 3)`` uint8, ``act (N, 22)`` 0/1 (stored uint8),
    optional ``rew (N,)`` (stored float32), ``done (N,)`` and ``truncated (N,)``
    0/1 (stored uint8; see the module docstring for what they mean).
    The sidecar holds ``meta`` plus ``frames``, ``height``, ``width``,
    ``total_reward``, ``ended_by_itself`` (``done[-1]``), ``date`` (UTC) and
    ``elworld_version``. Returns ``path``.

    Raises ``ValueError`` for malformed arrays, ``RecordError`` when ``path``
    exists (unless ``overwrite``), its folder is missing or not writable, or
    the disk is full; no temporary file is left behind.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"episode path must end in .npz, got {path}")
    arrays = _check_arrays(obs, act, rew, done, truncated)
    if not path.parent.is_dir():
        raise RecordError(f"cannot write {path}: folder {path.parent} does not exist")
    if not overwrite and path.exists():
        raise RecordError(f"episode file {path} already exists (refusing to overwrite it)")
    n, height, width = arrays["obs"].shape[:3]
    text = _sidecar_text(meta, n, height, width, arrays)
    _write_atomic(path, lambda fp: _save_arrays(fp, arrays, compress))
    _write_atomic(path.with_suffix(".json"), lambda fp: fp.write(text.encode()))
    return path


def _sidecar_text(
    meta: Mapping[str, Any] | None, n: int, height: int, width: int, arrays: dict[str, np.ndarray]
) -> str:
    """The JSON sidecar of an episode: ``meta`` plus the facts every episode records."""
    info: dict[str, Any] = dict(meta or {})
    info.update(
        frames=int(n),
        height=int(height),
        width=int(width),
        total_reward=float(arrays["rew"].sum(dtype=np.float64)) if "rew" in arrays else None,
        ended_by_itself=bool(arrays["done"][-1]) if "done" in arrays else None,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        elworld_version=elworld.__version__,
    )
    return json.dumps(info, indent=2, sort_keys=True, default=str) + "\n"


def _save_streamed(
    fp: IO[bytes], frames: IO[bytes], shape: tuple[int, ...], labels: dict[str, np.ndarray]
) -> None:
    """Write an uncompressed ``.npz`` whose ``obs`` is the raw uint8 bytes read from ``frames``."""
    with zipfile.ZipFile(fp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("obs.npy", "w", force_zip64=True) as member:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                      "fortran_order": False, "shape": shape}  # fmt: skip
            np.lib.format.write_array_header_2_0(member, header)
            shutil.copyfileobj(frames, member, _COPY_BYTES)
        for name, array in labels.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def write_streamed_episode(
    path: str | os.PathLike[str],
    frames_file: str | os.PathLike[str],
    frame_shape: tuple[int, int],
    act: np.ndarray,
    rew: np.ndarray | None = None,
    done: np.ndarray | None = None,
    meta: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """``write_episode`` for frames already on disk: ``frames_file`` holds raw RGB uint8 frames.

    ``frames_file`` is the concatenation of ``N = len(act)`` frames of
    ``frame_shape = (H, W)`` x 3 bytes (any extra bytes, e.g. a frame cut short
    by a crash, are an error). The ``.npz`` (uncompressed, ``obs`` copied in
    chunks so memory stays bounded) and the sidecar are written atomically like
    ``write_episode``'s; ``frames_file`` is left in place for the caller to remove.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"episode path must end in .npz, got {path}")
    height, width = (int(v) for v in frame_shape)
    n = len(act)
    frames_file = Path(frames_file)
    expected = n * height * width * 3
    if n == 0 or frames_file.stat().st_size != expected:
        raise ValueError(
            f"{frames_file} holds {frames_file.stat().st_size} bytes; "
            f"{n} frames of {height}x{width}x3 need {expected} (and at least one frame)"
        )
    # obs is checked through a zero-copy view of one frame: only its shape and dtype matter.
    probe = np.broadcast_to(np.zeros((1, 1, 1, 3), np.uint8), (n, height, width, 3))
    arrays = _check_arrays(probe, act, rew, done)
    del arrays["obs"]
    if not path.parent.is_dir():
        raise RecordError(f"cannot write {path}: folder {path.parent} does not exist")
    if not overwrite and path.exists():
        raise RecordError(f"episode file {path} already exists (refusing to overwrite it)")
    text = _sidecar_text(meta, n, height, width, arrays)
    with open(frames_file, "rb") as frames:
        _write_atomic(path, lambda fp: _save_streamed(fp, frames, (n, height, width, 3), arrays))
    _write_atomic(path.with_suffix(".json"), lambda fp: fp.write(text.encode()))
    return path
