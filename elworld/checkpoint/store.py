"""Writing checkpoints: save, copy, list and prune folders; fingerprints; RNG state.

Each folder holds ``model.safetensors`` (weights), ``config.json``
(``{"kind": ..., **asdict(config)}``), ``training_info.json``, ``README.md``, and
when given ``optimizer.pth``, ``scheduler.pth`` and ``trainer_state.pth`` (each
checked to load with ``torch.load(weights_only=True)``). Folders are published
atomically by :mod:`elworld.checkpoint.publish`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import pickle
import random
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file as _save_safetensors
from torch import nn

from elworld import __version__
from elworld.atomic import atomic_path
from elworld.checkpoint.layout import (
    _EPOCH_RE,
    CONFIG_FILE,
    KINDS,
    OPTIMIZER_FILE,
    README_FILE,
    SCHEDULER_FILE,
    TRAINER_STATE_FILE,
    TRAINING_INFO_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    kind_dir,
)
from elworld.checkpoint.loading import _checkpoint_dir, _weights_file
from elworld.checkpoint.model_card import _default_readme
from elworld.checkpoint.publish import _hidden_name, _publish, _write_bytes, recover_interrupted

logger = logging.getLogger(__name__)


def list_epoch_checkpoints(root: str | os.PathLike, kind: str) -> list[tuple[int, Path]]:
    """The ``(epoch, folder)`` pairs under ``ROOT/<kind>``, oldest epoch first."""
    folder = kind_dir(root, kind)
    if not folder.is_dir():
        return []
    recover_interrupted(folder)
    found = []
    for entry in folder.iterdir():
        match = _EPOCH_RE.match(entry.name)
        if match and match.group(1) == kind and entry.is_dir():
            found.append((int(match.group(2)), entry))
    return sorted(found)


def prune_epoch_checkpoints(root: str | os.PathLike, kind: str, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest epoch checkpoints; return the removed folders."""
    if keep_last < 0:
        raise ValueError(f"keep_last must be >= 0, got {keep_last}")
    checkpoints = list_epoch_checkpoints(root, kind)
    doomed = [path for _, path in checkpoints[: max(len(checkpoints) - keep_last, 0)]]
    for path in doomed:
        # Rename first so a crash mid-delete never leaves a partial checkpoint in view.
        trash = path.parent / _hidden_name("del", path.name)
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        logger.info("removed old checkpoint %s", path)
    return doomed


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def _to_json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, default=_json_default) + "\n").encode()


def _plain(value: Any) -> Any:
    """Numpy values become plain Python so ``torch.load(weights_only=True)`` accepts them."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value


def _torch_bytes(obj: Any, what: str, path: Path) -> bytes:
    """Serialize ``obj`` and check it loads back with ``weights_only=True``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    try:
        torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        raise TypeError(
            f"{what} for {path} holds objects torch.load(weights_only=True) refuses; "
            f"keep it to tensors, numbers, strings, lists, tuples and dicts ({error})"
        ) from error
    return data


def _state_of(obj: Any) -> Any:
    return obj.state_dict() if hasattr(obj, "state_dict") else obj


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states, in a form ``trainer_state.pth`` can hold."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only if CUDA is present)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    config: Any,
    training_info: dict[str, Any],
    readme: str | None = None,
    optimizer: Any = None,
    scheduler: Any = None,
    trainer_state: dict[str, Any] | None = None,
    weights_dtype: torch.dtype | None = None,
    kind: str | None = None,
) -> Path:
    """Write a checkpoint folder at ``path`` atomically (see the module docstring).

    ``config`` is the model's config dataclass; ``kind`` defaults to ``model.kind``,
    else the name of ``path``'s parent. ``optimizer``/``scheduler`` may be objects
    with ``state_dict()`` or state dicts. ``weights_dtype`` (e.g. ``torch.float16``)
    stores floating weights in that dtype; :func:`load_model` casts them back.
    """
    path = Path(path)
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
    kind = kind or getattr(model, "kind", None) or path.parent.name
    if kind not in KINDS:
        raise ValueError(f"cannot tell the model kind for {path}: pass kind= one of {KINDS}")
    if weights_dtype is not None and not weights_dtype.is_floating_point:
        raise ValueError(f"weights_dtype must be a floating dtype, got {weights_dtype}")
    config_dict = dataclasses.asdict(config)
    if "kind" in config_dict:
        raise ValueError(
            f"{type(config).__name__} has a field named 'kind', which config.json reserves"
        )
    info = {
        **training_info,
        "elworld_version": __version__,  # which code made this world
        "saved_at": datetime.now(timezone.utc).astimezone().isoformat(),
    }
    if readme is None:
        readme = _default_readme(kind, info, config, model)

    def fill(folder: Path) -> None:
        tensors = {}
        for name, tensor in model.state_dict().items():
            tensor = tensor.detach().cpu()
            if weights_dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(weights_dtype)
            tensors[name] = tensor.contiguous().clone()  # clone: no shared storage
        with atomic_path(folder / WEIGHTS_FILE) as tmp:
            _save_safetensors(tensors, str(tmp), metadata={"format": "pt"})
        _write_bytes(folder / CONFIG_FILE, _to_json({"kind": kind, **config_dict}))
        _write_bytes(folder / TRAINING_INFO_FILE, _to_json(info))
        _write_bytes(folder / README_FILE, readme.encode())
        for file, obj, what in (
            (OPTIMIZER_FILE, optimizer, "optimizer state"),
            (SCHEDULER_FILE, scheduler, "scheduler state"),
            (TRAINER_STATE_FILE, trainer_state, "trainer_state"),
        ):
            if obj is not None:
                _write_bytes(folder / file, _torch_bytes(_plain(_state_of(obj)), what, path))

    _publish(path, fill)
    logger.debug("saved %s checkpoint to %s", kind, path)
    return path


def copy_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    training_info: dict[str, Any] | None = None,
    readme: str | None = None,
) -> Path:
    """Copy a whole checkpoint folder to ``dst`` atomically (e.g. an epoch to best_model);
    ``training_info`` / ``readme``, when given, replace the copy's ``training_info.json`` /
    model card (weights and config are copied unchanged)."""
    src, dst = _checkpoint_dir(src), Path(dst)
    if dst.absolute() == src.absolute():
        raise CheckpointError(f"cannot copy checkpoint {src} onto itself")
    _weights_file(src)  # a folder without weights is not a checkpoint
    replaced = {}
    if training_info is not None:
        replaced[TRAINING_INFO_FILE] = _to_json(training_info)
    if readme is not None:
        replaced[README_FILE] = readme.encode()

    def fill(folder: Path) -> None:
        for entry in src.iterdir():
            if entry.name in replaced:
                _write_bytes(folder / entry.name, replaced[entry.name])
            elif entry.is_file():
                with atomic_path(folder / entry.name) as tmp:
                    shutil.copyfile(entry, tmp)
        for name, data in replaced.items():
            if not (folder / name).exists():
                _write_bytes(folder / name, data)

    return _publish(dst, fill)


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """sha256 over the weights file and ``config.json``: changes whenever the model does."""
    folder = _checkpoint_dir(path)
    digest = hashlib.sha256()
    for file in (_weights_file(folder), folder / CONFIG_FILE):
        if not file.is_file():
            raise CheckpointError(f"missing {file}: cannot fingerprint checkpoint {folder}")
        digest.update(f"{file.name}\0{file.stat().st_size}\0".encode())
        with open(file, "rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
