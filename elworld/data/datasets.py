"""PyTorch datasets over memory-mapped caches of episodes.

``prepare_frames`` writes each episode's resized frames once to an ``.npy``
file; ``FrameDataset`` serves single frames from those (vision training) and
``TransitionDataset`` serves transitions from token caches (memory training,
see ``elworld.data.tokens``). Caches are opened with ``mmap_mode="r"`` lazily in
each DataLoader worker, so the dataset is never held in RAM.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from elworld.atomic import atomic_path
from elworld.data.episodes import DataError, inspect_episode, iter_frames, read_labels
from elworld.frames import FRAME_HEIGHT, FRAME_WIDTH

logger = logging.getLogger(__name__)


def cache_file(path: Path, cache_dir: Path, suffix: str, *extra: object) -> Path:
    """``cache_dir/<stem>-<hash>.<suffix>``; the hash covers the episode's path, size and mtime."""
    stat = path.stat()
    key = "|".join(str(part) for part in (path.resolve(), stat.st_size, stat.st_mtime_ns, *extra))
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir / f"{path.stem}-{digest}.{suffix}"


def cached_array_ok(path: Path, shape: tuple[int, ...], dtype: np.dtype | type) -> bool:
    """Whether ``path`` is a readable ``.npy`` of exactly ``shape`` and ``dtype``."""
    if not path.is_file():
        return False
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return False
    ok = array.shape == shape and array.dtype == np.dtype(dtype)
    del array
    return ok


def write_array_atomic(
    path: Path, shape: tuple[int, ...], dtype: np.dtype | type, fill: Callable[[np.memmap], None]
) -> None:
    """Create ``path`` as an ``.npy`` of ``shape``/``dtype`` filled by ``fill(memmap)``.

    The array is written to a temporary file beside ``path`` and renamed into
    place only when complete, so a crash never leaves a half-written cache.
    """
    with atomic_path(path, prefix=".", suffix=f".{os.getpid()}.tmp") as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        fill(array)
        array.flush()
        del array


def prepare_frames(
    paths: Sequence[str | Path],
    cache_dir: str | Path,
    height: int = FRAME_HEIGHT,
    width: int = FRAME_WIDTH,
    chunk: int = 64,
) -> list[Path]:
    """Write each episode's resized frames once to ``cache_dir``; return the cache files.

    Each file is ``<stem>-<hash>.frames.npy``, uint8 ``(N, height, width, 3)``,
    in the order of ``paths``. An existing valid file is reused.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for path in tqdm([Path(p) for p in paths], desc="caching frames", unit="episode"):
        info = inspect_episode(path)
        target = cache_file(path, cache_dir, "frames.npy", height, width)
        shape = (info.num_frames, height, width, 3)
        if cached_array_ok(target, shape, np.uint8):
            logger.debug("reusing frame cache %s", target)
        else:

            def fill(array: np.memmap, path: Path = path) -> None:
                start = 0
                for frames in iter_frames(path, chunk=chunk, height=height, width=width):
                    array[start : start + len(frames)] = frames
                    start += len(frames)

            write_array_atomic(target, shape, np.uint8, fill)
            logger.debug("wrote frame cache %s", target)
        outputs.append(target)
    return outputs


class _MemmapFiles:
    """Lengths of a list of ``.npy`` files, opened lazily (once per process)."""

    def __init__(self, files: Sequence[str | Path]) -> None:
        self.files = [Path(f) for f in files]
        self.lengths = []
        for file in self.files:
            if not file.is_file():
                raise DataError(f"cache file {file} does not exist")
            try:
                array = np.load(file, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as error:
                raise DataError(f"cache file {file} is not a readable .npy: {error}") from error
            self.lengths.append(int(array.shape[0]))
            del array
        self.offsets = np.cumsum([0, *self.lengths]).tolist()
        self._arrays: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(file number, row)`` of the global ``index``."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        file = bisect.bisect_right(self.offsets, index) - 1
        return file, index - self.offsets[file]

    def array(self, file: int) -> np.ndarray:
        if self._arrays is None:  # first use in this process (e.g. a DataLoader worker)
            self._arrays = [np.load(f, mmap_mode="r", allow_pickle=False) for f in self.files]
        return self._arrays[file]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}  # workers reopen their own maps


class FrameDataset(Dataset):
    """Single frames from frame caches (``prepare_frames``), for vision training.

    Item: ``{"frames": uint8 tensor [192, 256, 3]}``.
    """

    def __init__(self, frame_files: Sequence[str | Path]) -> None:
        self.files = _MemmapFiles(frame_files)

    @classmethod
    def from_episodes(cls, paths: Sequence[str | Path], cache_dir: str | Path) -> FrameDataset:
        """Cache the episodes' frames in ``cache_dir`` (if needed) and serve them."""
        return cls(prepare_frames(paths, cache_dir))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        file, row = self.files.locate(index)
        frame = np.array(self.files.array(file)[row])  # (H, W, 3), copied out of the map
        return {"frames": torch.from_numpy(frame)}


class TransitionDataset(Dataset):
    """Transitions ``(tokens[t-K+1..t], act[t]) -> tokens[t+1]`` for memory training.

    ``episodes`` are the ``.npz`` recordings (for the labels) and
    ``token_files`` their token caches in the same order (``build_token_cache``).
    Item ``t`` of an episode is ``{"context": int64 [K, gh*gw]`` (oldest first;
    before the episode start frame 0 is repeated), ``"action": float32 [22]``,
    ``"target": int64 [gh*gw]`` (frame t+1, zeros for the last step),
    ``"has_target": bool``, ``"reward": float32``, ``"done": float32``,
    ``"has_reward": bool``, ``"has_done": bool}``, with ``K = context_frames``.
    Tokens stay memory-mapped; only the small label arrays are held in RAM.
    """

    def __init__(
        self,
        episodes: Sequence[str | Path],
        token_files: Sequence[str | Path],
        context_frames: int = 1,
    ) -> None:
        if context_frames < 1:
            raise ValueError(f"context_frames must be >= 1, got {context_frames}")
        if len(episodes) != len(token_files):
            raise ValueError(
                f"got {len(episodes)} episodes but {len(token_files)} token files (expected one per episode)"
            )
        self.context_frames = context_frames
        self.tokens = _MemmapFiles(token_files)
        self.labels = [read_labels(path) for path in episodes]
        for path, file, length, labels in zip(
            episodes, self.tokens.files, self.tokens.lengths, self.labels
        ):
            if len(labels["act"]) != length:
                raise DataError(
                    f"token cache {file} has {length} frames but episode {path} has "
                    f"{len(labels['act'])} (rebuild the token cache)"
                )

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        episode, t = self.tokens.locate(index)
        tokens = self.tokens.array(episode)  # (N, gh, gw) uint16
        labels = self.labels[episode]
        steps = np.arange(t - self.context_frames + 1, t + 1).clip(min=0)  # (K,)
        context = tokens[steps].reshape(self.context_frames, -1).astype(np.int64)  # (K, gh*gw)
        has_target = t + 1 < len(tokens)
        if has_target:
            target = tokens[t + 1].reshape(-1).astype(np.int64)  # (gh*gw,)
        else:
            target = np.zeros(context.shape[1], dtype=np.int64)
        rew, done = labels.get("rew"), labels.get("done")
        return {
            "context": torch.from_numpy(context),
            "action": torch.from_numpy(labels["act"][t].astype(np.float32)),
            "target": torch.from_numpy(target),
            "has_target": torch.tensor(has_target),
            "reward": torch.tensor(float(rew[t]) if rew is not None else 0.0, dtype=torch.float32),
            "done": torch.tensor(float(done[t]) if done is not None else 0.0, dtype=torch.float32),
            "has_reward": torch.tensor(rew is not None),
            "has_done": torch.tensor(done is not None),
        }
