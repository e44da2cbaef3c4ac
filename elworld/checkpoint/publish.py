"""Atomic publishing of checkpoint folders, and recovery after a crash.

A folder is built as a hidden ``.tmp-`` sibling, fsynced, the previous folder is
moved aside to ``.old-``, the new one renamed into place and only then the old
one deleted. :func:`recover_interrupted` finishes or undoes a save that crashed.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from elworld.atomic import atomic_write, fsync_dir
from elworld.checkpoint.layout import CheckpointError

logger = logging.getLogger(__name__)

# Hidden siblings: ".tmp-<name>-<pid>-<hex>" (being written), ".old-..." (moved
# aside during a swap), ".del-..." (being deleted by prune).
_HIDDEN_RE = re.compile(r"^\.(tmp|old|del)-(.+)-(\d+)-([0-9a-f]{8})$")

# Hidden folders this process is working on right now (absolute paths).
_ACTIVE: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


def _hidden_name(tag: str, name: str) -> str:
    return f".{tag}-{name}-{os.getpid()}-{secrets.token_hex(4)}"


@contextmanager
def _claim(*paths: Path) -> Iterator[None]:
    """Mark hidden folders as in use so this process's own recovery leaves them alone."""
    keys = [str(path.absolute()) for path in paths]
    with _ACTIVE_LOCK:
        _ACTIVE.update(keys)
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.difference_update(keys)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid() or pid <= 0:
        return False  # this process's folders count as live only while claimed
    if os.name == "nt":
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: exists, not ours
        try:
            code = ctypes.c_ulong()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def recover_interrupted(parent: str | os.PathLike) -> list[Path]:
    """Finish or undo saves that crashed in ``parent``; return the folders restored.

    A ``.old-NAME`` folder is renamed back to ``NAME`` when ``NAME`` is missing (the
    crash hit between the two renames) and deleted otherwise; stale ``.tmp-`` and
    ``.del-`` folders are deleted. Folders of a save still running in another
    process (or claimed in this one) are left alone.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return []
    restored: list[Path] = []
    with _ACTIVE_LOCK:
        active = set(_ACTIVE)
    olds: dict[str, list[Path]] = {}
    for entry in parent.iterdir():
        match = _HIDDEN_RE.match(entry.name)
        if not match or not entry.is_dir() or str(entry.absolute()) in active:
            continue
        tag, name, pid = match.group(1), match.group(2), int(match.group(3))
        if _process_alive(pid):
            continue
        if tag == "old":
            olds.setdefault(name, []).append(entry)
        else:
            logger.debug("deleting leftover folder %s", entry)
            shutil.rmtree(entry, ignore_errors=True)
    for name, entries in olds.items():
        target = parent / name
        entries.sort(key=lambda p: p.stat().st_mtime)
        if not target.exists():
            newest = entries.pop()
            os.rename(newest, target)
            fsync_dir(parent)
            logger.warning("restored %s from an interrupted save (%s)", target, newest.name)
            restored.append(target)
        for entry in entries:
            shutil.rmtree(entry, ignore_errors=True)
    return restored


def _write_bytes(path: Path, data: bytes) -> None:  # one seam for the tests to fail writes
    atomic_write(path, lambda handle: handle.write(data))


def _publish(path: Path, fill: Callable[[Path], None]) -> Path:
    """Build a folder with ``fill(tmp)`` and swap it in at ``path`` atomically."""
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted(parent)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"cannot save a checkpoint at {path}: it exists and is not a folder")
    tmp = parent / _hidden_name("tmp", path.name)
    old = parent / _hidden_name("old", path.name)
    with _claim(tmp, old):
        tmp.mkdir()
        try:
            fill(tmp)
            fsync_dir(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        had_old = path.exists()
        if had_old:
            os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            if had_old and not path.exists():
                os.rename(old, path)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(parent)
        if had_old:
            shutil.rmtree(old, ignore_errors=True)
    return path
