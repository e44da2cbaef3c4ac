"""Atomic file writes: a temporary file beside the target, fsynced, then renamed into place.

- ``atomic_path(path)``: a context manager yielding a temporary path beside
  ``path``; write it, and on a normal exit it is fsynced, ``os.replace``d onto
  ``path`` and the folder fsynced. On any exception it is removed instead, so
  readers see either the previous file or the complete new one, never a part.
- ``atomic_write(path, write)``: the same around ``write(binary_file)``.
- ``atomic_replace(tmp, path)``: the final step alone, for temporary files
  that live longer than one block (e.g. a video being recorded).
- ``fsync_dir(path)``: make a rename inside ``path`` durable.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Fsync folder ``path``; a no-op where folders cannot be opened or synced (e.g. Windows)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP):  # the file system can't sync folders
            raise
    finally:
        os.close(fd)


def atomic_replace(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Fsync the finished file ``tmp``, ``os.replace`` it onto ``path`` and fsync the folder."""
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, prefix: str = ".tmp-", suffix: str = ""
) -> Iterator[Path]:
    """Yield ``prefix + path.name + suffix`` beside ``path``; publish it at ``path`` on exit.

    On any exception (in the block or while publishing) the temporary file is
    removed and the exception propagates; one raised in the block leaves
    ``path`` as it was.
    """
    path = Path(path)
    tmp = path.with_name(f"{prefix}{path.name}{suffix}")
    try:
        yield tmp
        atomic_replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Atomically create or replace ``path`` with what ``write(file)`` writes to a binary file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
