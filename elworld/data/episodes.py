"""Episode recordings: find, validate, stream and split ``.npz`` files.

One ``.npz`` per episode holds ``obs (N, H, W, 3) uint8``, ``act (N, 22) uint8``
and optionally ``rew (N,)`` float, ``done (N,)`` and ``truncated (N,)`` bool/uint8
(the format is described once, in ``elworld.record.writer``). ``done`` means the
episode ended by itself (death, goal); a time limit, a step cap or a stop is
``truncated``, never ``done``. Files written before ``truncated`` existed are
read through their sidecar's ``"ended"`` (see ``read_labels``). Validation reads only the ``.npy`` headers inside the
zip, and ``iter_frames`` streams ``obs`` a chunk at a time, so neither ever
holds a whole episode in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from elworld.frames import FRAME_HEIGHT, FRAME_WIDTH, resize_frames
from elworld.keys import NUM_KEYS

logger = logging.getLogger(__name__)

# Bytes read from a zip member at a time while streaming frames.
_READ_BYTES = 1 << 18

# Exceptions that mean "this file is not a readable .npz".
_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)


class DataError(ValueError):
    """An episode file (or data directory) is missing, unreadable or malformed."""


@dataclass
class EpisodeInfo:
    """What ``inspect_episode`` learns from an episode's array headers."""

    path: Path
    num_frames: int
    height: int
    width: int
    num_keys: int
    has_reward: bool
    has_done: bool
    has_truncated: bool = False


@dataclass
class _Header:
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype


def find_episodes(directory: str | Path) -> list[Path]:
    """All ``*.npz`` files under ``directory`` (recursively), sorted.

    Raises ``DataError`` if the directory is missing or holds no ``.npz`` file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(
            f"episode directory {directory} does not exist (expected a folder of .npz files)"
        )
    paths = sorted(p for p in directory.rglob("*.npz") if p.is_file())
    if not paths:
        raise DataError(f"episode directory {directory} holds no .npz episode files")
    return paths


def _read_header(fp: IO[bytes]) -> _Header:
    """Read an ``.npy`` header from ``fp``, leaving it at the start of the data."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fp)
    else:  # 2.0 and 3.0 share the layout (3.0 only allows utf-8 field names)
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(fp)
    return _Header(tuple(shape), bool(fortran_order), np.dtype(dtype))


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise DataError(f"episode file {path} does not exist")
    try:
        return zipfile.ZipFile(path)
    except _CORRUPT as error:
        raise DataError(
            f"{path} is not a readable .npz (truncated or corrupt?): {error}"
        ) from error


def _member_headers(path: Path) -> dict[str, _Header]:
    """Headers of every ``.npy`` member of the ``.npz`` at ``path``, by array name."""
    with _open_zip(path) as archive:
        headers = {}
        for name in archive.namelist():
            if not name.endswith(".npy"):
                continue
            try:
                with archive.open(name) as fp:
                    headers[name[: -len(".npy")]] = _read_header(fp)
            except _CORRUPT as error:
                raise DataError(
                    f"{path} is not a readable .npz (truncated or corrupt?): member {name}: {error}"
                ) from error
    return headers


def inspect_episode(path: str | Path, num_keys: int = NUM_KEYS) -> EpisodeInfo:
    """Validate an episode from its array headers alone and describe it.

    Raises ``DataError`` naming the file when it is not a readable ``.npz``,
    lacks ``obs``/``act``, or an array has the wrong dtype or shape.
    """
    path = Path(path)
    headers = _member_headers(path)
    for key in ("obs", "act"):
        if key not in headers:
            raise DataError(
                f"{path} has no {key!r} array (expected obs (N,H,W,3) uint8 and act (N,{num_keys}) uint8; "
                f"found {sorted(headers) or 'none'})"
            )
    obs, act = headers["obs"], headers["act"]
    if obs.dtype != np.uint8 or len(obs.shape) != 4 or obs.shape[3] != 3:
        raise DataError(
            f"{path}: obs must be (N, H, W, 3) uint8 RGB frames, got {obs.shape} {obs.dtype}"
        )
    n, height, width = obs.shape[:3]
    if n == 0 or height == 0 or width == 0:
        raise DataError(f"{path}: obs holds no frames (shape {obs.shape})")
    if len(act.shape) != 2:
        raise DataError(f"{path}: act must be (N, {num_keys}) uint8, got shape {act.shape}")
    if act.shape[1] != num_keys:
        raise DataError(
            f"{path}: act has {act.shape[1]} keys per frame, expected {num_keys} "
            f"(act must be (N, {num_keys}) uint8)"
        )
    if act.dtype != np.uint8:
        raise DataError(f"{path}: act must be uint8 (0/1 per key), got {act.dtype}")
    if act.shape[0] != n:
        raise DataError(
            f"{path}: obs has {n} frames but act has {act.shape[0]} rows (expected the same N)"
        )
    for key, kinds, expected in (
        ("rew", "fiub", "float"),
        ("done", "biu", "bool/uint8"),
        ("truncated", "biu", "bool/uint8"),
    ):
        header = headers.get(key)
        if header is None:
            continue
        if header.shape != (n,):
            raise DataError(
                f"{path}: {key} must have shape ({n},) (one per frame), got {header.shape}"
            )
        if header.dtype.kind not in kinds:
            raise DataError(f"{path}: {key} must be {expected}, got {header.dtype}")
    return EpisodeInfo(
        path=path,
        num_frames=n,
        height=height,
        width=width,
        num_keys=num_keys,
        has_reward="rew" in headers,
        has_done="done" in headers,
        has_truncated="truncated" in headers,
    )


def _resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    if frames.shape[1:3] == (height, width):
        return frames
    return resize_frames(frames, height=height, width=width)


def iter_frames(
    path: str | Path, chunk: int = 64, height: int = FRAME_HEIGHT, width: int = FRAME_WIDTH
) -> Iterator[np.ndarray]:
    """Stream an episode's frames as ``(<=chunk, height, width, 3)`` uint8 arrays.

    The ``obs`` member is decompressed ``chunk`` frames at a time (stored and
    deflated ``.npz`` alike) and each chunk is resized, so memory use does not
    grow with the episode's length.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    path = Path(path)
    info = inspect_episode(path)
    frame_bytes = info.height * info.width * 3
    try:
        with _open_zip(path) as archive, archive.open("obs.npy") as fp:
            header = _read_header(fp)
            if header.fortran_order:
                logger.warning("%s: obs is stored in Fortran order; loading it whole", path)
                frames = np.lib.format.read_array(fp, allow_pickle=False)
                for start in range(0, info.num_frames, chunk):
                    yield _resize(
                        np.ascontiguousarray(frames[start : start + chunk]), height, width
                    )
                return
            for start in range(0, info.num_frames, chunk):
                count = min(chunk, info.num_frames - start)
                buffer = bytearray(count * frame_bytes)
                filled = 0
                while filled < len(buffer):
                    # Small reads: zipfile joins pieces into a new bytes object per read.
                    piece = fp.read(min(len(buffer) - filled, _READ_BYTES))
                    if not piece:
                        raise DataError(
                            f"{path} is not a readable .npz (truncated or corrupt?): obs ends after "
                            f"{(start * frame_bytes + filled) // frame_bytes} of {info.num_frames} frames"
                        )
                    buffer[filled : filled + len(piece)] = piece
                    filled += len(piece)
                frames = np.frombuffer(buffer, dtype=np.uint8).reshape(
                    count, info.height, info.width, 3
                )  # (count, H, W, 3)
                yield _resize(frames, height, width)
    except DataError:
        raise
    except _CORRUPT as error:
        raise DataError(
            f"{path} is not a readable .npz (truncated or corrupt?): {error}"
        ) from error


def read_labels(path: str | Path) -> dict[str, np.ndarray]:
    """The small per-step arrays of an episode, loaded fully.

    Returns ``{"act": uint8 (N, 22)}`` plus ``"rew": float32 (N,)``,
    ``"done": bool (N,)`` (ended by itself) and ``"truncated": bool (N,)`` (cut
    by a time limit, cap or stop) when the file has them. A file without
    ``truncated`` (written before it existed) gets it from its sidecar's
    ``"ended"``, and ``done`` is corrected there: old recorders set ``done`` on
    a time limit too (``"ended": "truncated"``), which would teach a world to
    die at the cap (see ``legacy_ends``).
    """
    path = Path(path)
    info = inspect_episode(path)
    labels: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            labels["act"] = np.ascontiguousarray(archive["act"], dtype=np.uint8)
            if info.has_reward:
                labels["rew"] = np.asarray(archive["rew"], dtype=np.float32)
            if info.has_done:
                labels["done"] = np.asarray(archive["done"]).astype(bool)
            if info.has_truncated:
                labels["truncated"] = np.asarray(archive["truncated"]).astype(bool)
    except _CORRUPT as error:
        raise DataError(
            f"{path} is not a readable .npz (truncated or corrupt?): {error}"
        ) from error
    if labels["act"].size and labels["act"].max() > 1:
        raise DataError(
            f"{path}: act must hold only 0 and 1 (multi-hot keys), found {labels['act'].max()}"
        )
    if not info.has_truncated:
        legacy_ends(path, labels)
    return labels


# Files whose done flag was corrected from the sidecar (logged once per process).
_corrected: set[Path] = set()


def legacy_ends(path: str | Path, labels: dict[str, np.ndarray]) -> None:
    """Fill in ``labels["truncated"]`` for a file written before it existed, in place.

    The sidecar's ``"ended"`` says how the episode ended: ``"terminated"``
    leaves ``truncated`` all 0; ``"truncated"`` (a time limit), ``"max_steps"``
    or ``"stopped"`` set its last step, and a ``done[-1] = 1`` that old
    recorders wrote for a time limit is cleared (a warning, once per process,
    names the first such file). Without a sidecar or ``"ended"`` nothing is
    known and ``labels`` is left as it is.
    """
    ended = read_sidecar(path).get("ended")
    if ended not in ("terminated", "truncated", "max_steps", "stopped"):
        return
    n = len(labels["act"])
    truncated = np.zeros(n, dtype=bool)
    if n and ended != "terminated":
        truncated[-1] = True
        done = labels.get("done")
        if done is not None and done[-1]:
            done[-1] = False
            path = Path(path)
            if not _corrected:
                logger.warning(
                    "%s was recorded before time limits were kept apart from game over: its "
                    "sidecar says \"ended\": %r but done[-1] is 1; reading it as truncated, not "
                    "an end (other such files are corrected silently)",
                    path, ended,
                )  # fmt: skip
            else:
                logger.debug("%s: done[-1] read as truncated (sidecar ended=%r)", path, ended)
            _corrected.add(path)
    labels["truncated"] = truncated


def read_actions(path: str | Path) -> np.ndarray:
    """An episode's actions, ``(N, 22)`` uint8."""
    return read_labels(path)["act"]


def read_rewards(path: str | Path) -> np.ndarray | None:
    """An episode's rewards, ``(N,)`` float32, or ``None`` when not recorded."""
    return read_labels(path).get("rew")


def read_dones(path: str | Path) -> np.ndarray | None:
    """An episode's end flags (ended by itself), ``(N,)`` bool, or ``None`` when not recorded."""
    return read_labels(path).get("done")


def _split_score(name: str, seed: int) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def split_episodes(
    paths: Sequence[str | Path], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Path], list[Path]]:
    """Split episodes into ``(train, val)``, deterministically by file name.

    Each episode is ranked by a hash of its file name and ``seed`` (so the input
    order does not matter) and the ``round(val_fraction * N)`` lowest go to
    validation; with ``val_fraction > 0`` and at least two episodes, val gets at
    least one and train is never empty. Both lists come back sorted.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("no episodes to split (expected at least one .npz file)")
    ranked = sorted(paths, key=lambda p: (_split_score(p.name, seed), p.name, str(p)))
    num_val = round(val_fraction * len(paths))
    if val_fraction > 0 and len(paths) >= 2:
        num_val = min(max(num_val, 1), len(paths) - 1)
    num_val = min(num_val, len(paths) - 1)
    return sorted(ranked[num_val:]), sorted(ranked[:num_val])


def shard_episodes(paths: Sequence[str | Path], rank: int, world_size: int) -> list[Path]:
    """This rank's share of ``paths`` (round-robin over the sorted list)."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return sorted(Path(p) for p in paths)[rank::world_size]


def read_sidecar(path: str | Path, *, strict: bool = False) -> dict[str, Any]:
    """The JSON sidecar written beside a recording (``<name>.json``), or ``{}`` when absent.

    An unreadable or invalid sidecar is ``{}`` too, unless ``strict``: then it
    is a ``ValueError`` naming the file (for checks that must not pass silently).
    """
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, ValueError) as error:
        if strict:
            raise ValueError(f"sidecar {sidecar} cannot be read as JSON: {error}") from error
        return {}
    return data if isinstance(data, dict) else {}


# Sidecar facts that say where a world's data came from (recorded in training_info.json).
PROVENANCE_FIELDS = ("source", "scenario", "frame_skip", "steps_per_second", "policy", "keys")
GAME_TICS_PER_SECOND = 35  # ViZDoom


def recording_provenance(episodes: list[Path]) -> dict[str, Any]:
    """Where recordings came from, from their sidecars: each field's single value or sorted values.

    ``steps_per_second`` is the sidecars' own (any game's recorder can write it:
    ``record_env`` takes the env's ``metadata["render_fps"]``); when they hold
    none, it is derived for a ViZDoom recording (35 game tics / a frame skip
    shared by all episodes), or the frame rate of a screen recording
    (``elworld record screen``) when one ``fps`` is shared by all episodes. A
    field no sidecar has is left out.
    """
    found: dict[str, set[str]] = {}
    screen_fps: set[float] = set()
    for path in episodes:
        sidecar = read_sidecar(path)
        for name in PROVENANCE_FIELDS:
            if name in sidecar:
                found.setdefault(name, set()).add(json.dumps(sidecar[name], sort_keys=True))
        if sidecar.get("source") == "screen" and isinstance(sidecar.get("fps"), int | float):
            screen_fps.add(float(sidecar["fps"]))
    info: dict[str, Any] = {}
    for name in PROVENANCE_FIELDS:
        if name in found:
            values = [json.loads(v) for v in sorted(found[name])]
            info[name] = values[0] if len(values) == 1 else values
    if "steps_per_second" in info:
        return info
    if isinstance(info.get("frame_skip"), int) and info.get("source") == "vizdoom":
        info["steps_per_second"] = GAME_TICS_PER_SECOND / info["frame_skip"]
    elif info.get("source") == "screen" and len(screen_fps) == 1:
        info["steps_per_second"] = screen_fps.pop()
    return info


def recording_sets(folders: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """The recording sets behind ``folders`` (links resolved): one entry per real folder and
    policy, with its seeds, episode and step counts, read from each episode's sidecar."""
    sets: dict[tuple[str, str], dict[str, Any]] = {}
    for folder in folders:
        for path in find_episodes(folder):
            real = Path(os.path.realpath(path))
            side = real.with_suffix(".json")
            meta = json.loads(side.read_text()) if side.is_file() else {}
            key = (_shown(real.parent), str(meta.get("policy", "unknown")))
            entry = sets.setdefault(key, {"folder": key[0], "policy": key[1], "episodes": 0,
                                          "steps": 0, "seeds": []})  # fmt: skip
            entry["episodes"] += 1
            entry["steps"] += int(meta.get("steps", 0))
            if meta.get("seed") is not None:
                entry["seeds"].append(int(meta["seed"]))
            for name in ("agent", "explore", "scenario", "frame_skip"):
                if name in meta:
                    entry.setdefault(name, meta[name])
    out = []
    for entry in sets.values():
        seeds = sorted(entry.pop("seeds"))
        entry["seeds"] = _ranges(seeds)
        out.append(entry)
    return out


def _shown(path: Path) -> str:
    """``path`` relative to the working folder where it lies below it, or below one of its
    linked folders (``data -> /big/disk/data``), so cards stay portable."""
    cwd = Path.cwd()
    roots = [(Path(), cwd.resolve())] + [
        (entry.relative_to(cwd), entry.resolve())
        for entry in sorted(cwd.iterdir())
        if entry.is_symlink() and entry.is_dir()
    ]
    for shown, real in roots:
        try:
            return str(shown / path.relative_to(real))
        except ValueError:
            continue
    return str(path)


def _ranges(values: list[int]) -> list[list[int]]:
    """``[1, 2, 3, 7]`` -> ``[[1, 3], [7, 7]]``."""
    ranges: list[list[int]] = []
    for value in values:
        if ranges and value == ranges[-1][1] + 1:
            ranges[-1][1] = value
        elif not ranges or value != ranges[-1][1]:
            ranges.append([value, value])
    return ranges
