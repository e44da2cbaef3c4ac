"""Where the dream env finds its checkpoints and start frames.

One place resolves the construction kwargs shared by ``DreamEnv`` and
``DreamVectorEnv``:

- ``resolve_checkpoints``: the vision and memory checkpoint folders, from
  explicit ``vision=`` / ``memory=`` folders, else a checkpoints root
  (``checkpoints=``, else ``$ELWORLD_CHECKPOINTS``, else the bundled demo
  world) in the standard layout ``<root>/<kind>/best_model``.
- ``bundled_checkpoints_root``: where the bundled demo world is: the package
  data ``elworld_gym/demo_world/`` of an installed wheel (``pyproject.toml``
  maps the repository's ``checkpoints/`` there), else, in a checkout or an
  editable install, the repository's top-level ``checkpoints/``.
- ``iter_start_frames``: the real frames episodes start from, streamed in
  chunks and resized: an ``.npz`` recording, an array of frames, or by default
  ``<root>/start_frames.npz``; ``start_clip_flags``: where a bank of short
  clips starts each clip.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elworld.checkpoint import CheckpointError, best_model_dir
from elworld.frames import resize_frames

CHECKPOINTS_ENV_VAR = "ELWORLD_CHECKPOINTS"
# The demo world as package data of an installed wheel (inference files only).
PACKAGED_CHECKPOINTS = Path(__file__).resolve().parents[2] / "elworld_gym" / "demo_world"
# The demo world in a checkout (and an editable install): the repository's checkpoints/.
CHECKOUT_CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
START_FRAMES_FILE = "start_frames.npz"
# Frames resized and encoded per chunk when building the start bank.
START_CHUNK = 64


@dataclass(frozen=True)
class CheckpointPaths:
    """The checkpoint folders a dream runs on; ``root`` is ``None`` when both were explicit."""

    vision: Path
    memory: Path
    root: Path | None
    end: Path | None = None  # the episode-end model, when the world has one


def bundled_checkpoints_root() -> Path:
    """The bundled demo world's root: the installed package data, else the checkout's."""
    return PACKAGED_CHECKPOINTS if PACKAGED_CHECKPOINTS.is_dir() else CHECKOUT_CHECKPOINTS


BUNDLED_CHECKPOINTS = bundled_checkpoints_root()


def default_checkpoints_root() -> Path:
    """``$ELWORLD_CHECKPOINTS`` if set, else the bundled demo world's root."""
    value = os.environ.get(CHECKPOINTS_ENV_VAR)
    return Path(value).expanduser() if value else bundled_checkpoints_root()


def resolve_checkpoints(
    checkpoints: str | Path | None = None,
    vision: str | Path | None = None,
    memory: str | Path | None = None,
    end_model: str | Path | bool | None = None,
) -> CheckpointPaths:
    """Find the vision and memory checkpoint folders, and the episode-end model's.

    Explicit ``vision`` / ``memory`` folders win; a missing one comes from the
    root (``checkpoints``, else ``$ELWORLD_CHECKPOINTS``, else the bundled demo
    world, see :func:`bundled_checkpoints_root`) as ``<root>/<kind>/best_model``.
    The episode-end model (``elworld.model.end``) is ``end_model`` when it is a
    folder, none when it is ``False``, else (``None`` or ``True``)
    ``<root>/end/best_model`` if the root has one.

    Raises:
        CheckpointError: a folder does not exist or lacks ``config.json``; the
            message names the path and how to fix it.
    """
    root, origin = None, ""
    if checkpoints is not None:
        root, origin = Path(checkpoints).expanduser(), "checkpoints="
    elif vision is None or memory is None:
        root = default_checkpoints_root()
        from_env = bool(os.environ.get(CHECKPOINTS_ENV_VAR))
        origin = f"${CHECKPOINTS_ENV_VAR}" if from_env else "the bundled demo checkpoints"
    if root is not None and (vision is None or memory is None) and not root.is_dir():
        raise CheckpointError(
            f"checkpoints root {root} (from {origin}) does not exist; pass "
            "checkpoints=<folder holding vision/best_model and memory/best_model>, "
            f"set ${CHECKPOINTS_ENV_VAR}, or pass vision= and memory= checkpoint folders"
        )
    folders = {}
    for kind, explicit in (("vision", vision), ("memory", memory)):
        if explicit is not None:
            folder, source = Path(explicit).expanduser(), f"{kind}="
        else:
            assert root is not None
            folder, source = best_model_dir(root, kind), f"checkpoints root {root}, {origin}"
        if not (folder / "config.json").is_file():
            raise CheckpointError(
                f"no {kind} checkpoint at {folder} (from {source}): expected a folder with "
                f"config.json and model.safetensors. Train one with `elworld train {kind}`, "
                f"or pass checkpoints=<root>, ${CHECKPOINTS_ENV_VAR}, or {kind}=<folder>"
            )
        folders[kind] = folder
    end = None
    if isinstance(end_model, (str, os.PathLike)):
        end = Path(end_model).expanduser()
        if not (end / "config.json").is_file():
            raise CheckpointError(
                f"no episode-end checkpoint at {end} (from end_model=): expected a folder with "
                "config.json and model.safetensors. Train one with `elworld train end`"
            )
    elif end_model is not False and root is not None:
        found = best_model_dir(root, "end")
        end = found if (found / "config.json").is_file() else None
    return CheckpointPaths(vision=folders["vision"], memory=folders["memory"], root=root, end=end)


def _npz_names(path: Path) -> set[str]:
    """The member names of ``.npz`` file ``path``; ``ValueError`` naming it when it is no zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            return set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"start frames {path} is not a readable .npz: {error}") from error


def _npz_frames(path: Path, height: int, width: int) -> Iterator[np.ndarray]:
    """Stream the ``obs`` frames of an ``.npz`` file, resized, in chunks."""
    names = _npz_names(path)
    if "obs.npy" not in names:
        raise ValueError(
            f"start_observations {path} has no 'obs' array (expected obs (N, H, W, 3) uint8)"
        )
    if "act.npy" in names:  # a full recording: stream it, never hold all of it
        from elworld.data.episodes import iter_frames

        yield from iter_frames(path, chunk=START_CHUNK, height=height, width=width)
        return
    with np.load(path, allow_pickle=False) as archive:
        frames = archive["obs"]
    yield from _array_frames(frames, f"start_observations {path} obs", height, width)


def _array_frames(frames: object, name: str, height: int, width: int) -> Iterator[np.ndarray]:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        kind = frames.dtype if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"{name} must be a uint8 array of frames (N, H, W, 3), got {kind}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, H, W, 3) with N >= 1, got {frames.shape}")
    for start in range(0, len(frames), START_CHUNK):
        yield resize_frames(frames[start : start + START_CHUNK], height, width)


def iter_start_frames(
    start_observations: str | Path | np.ndarray | None,
    root: Path | None,
    height: int,
    width: int,
) -> Iterator[np.ndarray]:
    """Chunks ``(n, height, width, 3)`` uint8 of the frames episodes start from.

    ``start_observations`` is an ``.npz`` path (its ``obs`` array) or a uint8
    array ``(N, H, W, 3)`` of any size; ``None`` means ``<root>/start_frames.npz``.

    Raises:
        FileNotFoundError: the file (or the default start bank) does not exist.
        ValueError: the frames are not uint8 ``(N, H, W, 3)``.
    """
    if isinstance(start_observations, np.ndarray):
        yield from _array_frames(start_observations, "start_observations", height, width)
        return
    if start_observations is None:
        path = root / START_FRAMES_FILE if root is not None else None
        if path is None or not path.is_file():
            where = f"{path} does not exist" if path is not None else "no checkpoints root"
            raise FileNotFoundError(
                f"no start frames: {where}. Pass start_observations=<an .npz recording or a "
                "uint8 array (N, H, W, 3) of real frames> to reset the dream from"
            )
    elif isinstance(start_observations, str | os.PathLike):
        path = Path(start_observations).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"start_observations file {path} does not exist")
    else:
        raise ValueError(
            "start_observations must be an .npz path or a uint8 array (N, H, W, 3), "
            f"got {type(start_observations).__name__}"
        )
    yield from _npz_frames(path, height, width)


def start_clip_flags(start_observations: object, root: Path | None) -> np.ndarray | None:
    """The start bank's ``first`` flags (True where a frame starts a new clip), if it has them.

    ``elworld data start-frames`` writes short consecutive clips and these
    flags; a recording or an array of frames is one clip (``None``).
    """
    if start_observations is None:
        path = root / START_FRAMES_FILE if root is not None else None
    elif isinstance(start_observations, str | os.PathLike):
        path = Path(start_observations).expanduser()
    else:
        return None
    if path is None or not path.is_file() or "first.npy" not in _npz_names(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive["first"].astype(bool)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"start frames {path}: its 'first' flags cannot be read: {error}"
        ) from error
