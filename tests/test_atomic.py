"""Tests for elworld.atomic: temp file beside the target, replaced only when complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from elworld.atomic import atomic_path, atomic_write, fsync_dir


def test_successful_write_lands_complete(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    payload = bytes(range(256)) * 64
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name == ".tmp-out.bin"
        tmp.write_bytes(payload)
        assert target.read_bytes() == b"old"  # not replaced before the block ends
    assert target.read_bytes() == payload
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_exception_keeps_previous_file_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("previous")
    with (
        pytest.raises(RuntimeError, match="boom"),
        atomic_path(target, prefix=".", suffix=".tmp") as tmp,
    ):
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_interrupt_in_atomic_write_leaves_nothing(tmp_path: Path) -> None:
    def interrupted(handle) -> None:
        handle.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "new.bin", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_round_trips_bytes(tmp_path: Path) -> None:
    data = b"\x00\x01elworld\xff" * 100
    target = str(tmp_path / "data.bin")  # str paths are accepted too
    atomic_write(target, lambda handle: handle.write(data))
    assert Path(target).read_bytes() == data
    atomic_write(target, lambda handle: handle.write(data[:5]))  # replaces, not appends
    assert Path(target).read_bytes() == data[:5]


def test_fsync_dir_skips_what_it_cannot_open(tmp_path: Path) -> None:
    fsync_dir(tmp_path)  # an ordinary folder syncs without error
    fsync_dir(tmp_path / "missing")  # cannot be opened: a no-op, not an error
    assert list(tmp_path.iterdir()) == []
