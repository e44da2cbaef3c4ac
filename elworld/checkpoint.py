"""The checkpoint store: one folder per saved model, written atomically.

Layout (the original's): ``ROOT/{vision,memory,control}/best_model/`` and
``ROOT/<kind>/<kind>_model_checkpoint_N/``. Each folder holds
``model.safetensors`` (weights), ``config.json`` (``{"kind": ..., **asdict(config)}``),
``training_info.json``, ``README.md``, and when given ``optimizer.pth``,
``scheduler.pth`` and ``trainer_state.pth`` (every ``.pth`` loads with
``torch.load(weights_only=True)``).

A save writes a hidden ``.tmp-`` sibling folder, fsyncs it, moves the previous
folder aside to ``.old-``, renames the new one into place and only then deletes
the old one, so a crash never leaves a half-written checkpoint and never loses
the previous one; :func:`recover_interrupted` (run by every load and save)
cleans up after a crash. One process writes a given folder at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import logging
import os
import pickle
import random
import re
import secrets
import shlex
import shutil
import threading
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file as _load_safetensors
from safetensors.torch import save_file as _save_safetensors
from torch import nn

from elworld import __version__
from elworld.atomic import atomic_path, atomic_write, fsync_dir

logger = logging.getLogger(__name__)

KINDS = ("vision", "memory", "control", "idm")
BEST_MODEL = "best_model"
WEIGHTS_FILE = "model.safetensors"
LEGACY_WEIGHTS_FILE = "model.pth"
CONFIG_FILE = "config.json"
TRAINING_INFO_FILE = "training_info.json"
README_FILE = "README.md"
OPTIMIZER_FILE = "optimizer.pth"
SCHEDULER_FILE = "scheduler.pth"
TRAINER_STATE_FILE = "trainer_state.pth"

_EPOCH_RE = re.compile(r"^(vision|memory|control)_model_checkpoint_(\d+)$")
# Hidden siblings: ".tmp-<name>-<pid>-<hex>" (being written), ".old-..." (moved
# aside during a swap), ".del-..." (being deleted by prune).
_HIDDEN_RE = re.compile(r"^\.(tmp|old|del)-(.+)-(\d+)-([0-9a-f]{8})$")
_STATE_KEYS = ("model_state_dict", "state_dict", "model")

# Hidden folders this process is working on right now (absolute paths).
_ACTIVE: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


class CheckpointError(Exception):
    """A checkpoint folder or file is missing, corrupt or does not fit the model."""


# --------------------------------------------------------------------------- layout


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def kind_dir(root: str | os.PathLike, kind: str) -> Path:
    """``ROOT/<kind>``: the folder holding one model kind's checkpoints."""
    return Path(root) / _check_kind(kind)


def best_model_dir(root: str | os.PathLike, kind: str) -> Path:
    """``ROOT/<kind>/best_model``."""
    return kind_dir(root, kind) / BEST_MODEL


def epoch_checkpoint_dir(root: str | os.PathLike, kind: str, epoch: int) -> Path:
    """``ROOT/<kind>/<kind>_model_checkpoint_<epoch>``."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return kind_dir(root, kind) / f"{kind}_model_checkpoint_{int(epoch)}"


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


# --------------------------------------------------------------------------- atomic writes


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


# --------------------------------------------------------------------------- saving


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


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _flat_metrics(metrics: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(metrics, dict):
        return [(prefix or "value", metrics)]
    rows = []
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        rows.extend(_flat_metrics(value, name) if isinstance(value, dict) else [(name, value)])
    return rows


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h {seconds // 60 % 60:02d}m {seconds % 60:02d}s"


def _default_readme(kind: str, info: dict[str, Any], config: Any, model: nn.Module) -> str:
    """A human-readable summary of a checkpoint built from its training info."""
    epoch = info.get("epoch")
    title = f"# {kind.capitalize()} model checkpoint" + (
        f": epoch {epoch}" if epoch is not None else ""
    )
    lines = [title, ""]
    metrics = _flat_metrics(info["metrics"]) if info.get("metrics") is not None else []
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {name} | {_format_value(value)} |" for name, value in metrics]
        lines.append("")
    command = info.get("command")
    if isinstance(command, (list, tuple)):
        command = shlex.join(str(part) for part in command)
    elapsed = next((info[k] for k in ("elapsed_s", "elapsed", "elapsed_time") if k in info), None)
    facts = [
        ("Kind", kind),
        ("Epoch", epoch),
        ("Learning rate", info.get("lr")),
        ("Elapsed", _format_seconds(elapsed) if isinstance(elapsed, (int, float)) else elapsed),
        ("Data", info.get("data")),
        ("Date", info.get("date") or info.get("saved_at")),
        ("Command", f"`{command}`" if command else None),
    ]
    lines += [f"- {name}: {_format_value(value)}" for name, value in facts if value is not None]
    lines += ["", "## Model configuration", "", "| field | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in dataclasses.asdict(config).items()]
    cls = type(model)
    lines += ["", "## Loading", "", "```python"]
    if hasattr(cls, "from_checkpoint"):
        lines += [
            f"from {cls.__module__} import {cls.__qualname__}",
            "",
            f'model = {cls.__qualname__}.from_checkpoint("path/to/this/folder")',
        ]
    else:
        lines += [
            "from elworld.checkpoint import load_model",
            "",
            f'model = load_model("path/to/this/folder", {cls.__qualname__})',
        ]
    lines += ["```", ""]
    return "\n".join(lines)


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


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a whole checkpoint folder to ``dst`` atomically (e.g. an epoch to best_model)."""
    src, dst = _checkpoint_dir(src), Path(dst)
    if dst.absolute() == src.absolute():
        raise CheckpointError(f"cannot copy checkpoint {src} onto itself")
    _weights_file(src)  # a folder without weights is not a checkpoint

    def fill(folder: Path) -> None:
        for entry in src.iterdir():
            if entry.is_file():
                with atomic_path(folder / entry.name) as tmp:
                    shutil.copyfile(entry, tmp)

    return _publish(dst, fill)


# --------------------------------------------------------------------------- loading


def _checkpoint_dir(path: str | os.PathLike) -> Path:
    """The checkpoint folder ``path`` names (a file inside it stands for its folder)."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    recover_interrupted(path.parent)
    if path.is_dir():
        return path
    hint = ""
    if path.parent.name in KINDS and (path.parent.parent / path.name).is_dir():
        hint = " (an old flat layout was found: run `elworld migrate-checkpoints`)"
    raise CheckpointError(f"checkpoint folder {path} does not exist{hint}")


def _weights_file(folder: Path) -> Path:
    for name in (WEIGHTS_FILE, LEGACY_WEIGHTS_FILE):
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(
        f"no weights in {folder}: expected {WEIGHTS_FILE} (or a legacy {LEGACY_WEIGHTS_FILE})"
    )


def _field_hints(config_cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(config_cls)
    except Exception:  # unresolvable annotations: fall back to no conversion
        return {}


def load_config(path: str | os.PathLike, config_cls: type, *, kind: str | None = None) -> Any:
    """Rebuild ``config_cls`` from a checkpoint's ``config.json``.

    ``kind`` (default ``config_cls.kind`` if it has one) must match the file's
    ``"kind"``; no unknown field may be present, and every init field must be,
    except fields with a default: those were added to the config after the
    checkpoint was written, and their defaults keep the behaviour it was trained with.
    """
    file = _checkpoint_dir(path) / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(f"missing {file}: every checkpoint folder needs a {CONFIG_FILE}")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{file} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} must hold a JSON object, got {type(data).__name__}")
    data = dict(data)
    stored_kind = data.pop("kind", None)
    expected = kind or getattr(config_cls, "kind", None)
    if expected is not None and stored_kind is not None and stored_kind != expected:
        raise CheckpointError(f"{file} is a {stored_kind!r} checkpoint, expected {expected!r}")
    fields = dataclasses.fields(config_cls)
    init_names = {f.name for f in fields if f.init}
    unknown = sorted(set(data) - {f.name for f in fields})
    has_default = {
        f.name
        for f in fields
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    missing = sorted(init_names - set(data) - has_default)
    if unknown or missing:
        parts = [
            f"unknown fields {unknown}" if unknown else "",
            f"missing fields {missing}" if missing else "",
        ]
        raise CheckpointError(
            f"{file} does not match {config_cls.__name__}: " + "; ".join(p for p in parts if p)
        )
    hints = _field_hints(config_cls)
    kwargs = {}
    for name in init_names & set(data):
        value = data[name]
        if typing.get_origin(hints.get(name)) is tuple and isinstance(value, list):
            value = tuple(value)  # JSON has no tuples
        kwargs[name] = value
    try:
        return config_cls(**kwargs)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{file} holds an invalid {config_cls.__name__}: {error}") from error


def _torch_load(file: Path) -> Any:
    try:
        return torch.load(file, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{file} refused: not a plain tensor state dict (loading it could run code); "
            f"re-save it as {WEIGHTS_FILE} from a trusted environment ({error})"
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(
            f"{file} could not be read (corrupt or truncated?): {error}"
        ) from error


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A checkpoint's weights: ``model.safetensors``, else a legacy ``model.pth``."""
    file = _weights_file(_checkpoint_dir(path))
    if file.name == WEIGHTS_FILE:
        try:
            return _load_safetensors(str(file), device="cpu")
        except Exception as error:  # safetensors raises its own error type
            raise CheckpointError(f"{file} could not be read (corrupt?): {error}") from error
    state = _torch_load(file)
    if isinstance(state, dict):
        for key in _STATE_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise CheckpointError(f"{file} holds a {type(state).__name__}, expected a state dict")
    bad = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise CheckpointError(f"{file} is not a tensor state dict: non-tensor entries {bad[:10]}")
    return dict(state)


def load_model(path: str | os.PathLike, model_cls: type, device: str | torch.device = "cpu") -> Any:
    """Build ``model_cls(config)`` from a checkpoint and load its weights strictly.

    ``model_cls`` needs ``config_class`` and ``kind`` attributes. Weights are cast
    to the model's own dtypes. Returns the model on ``device`` in eval mode.
    """
    folder = _checkpoint_dir(path)
    config = load_config(folder, model_cls.config_class, kind=model_cls.kind)
    model = model_cls(config)
    state = load_state_dict(folder)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(state) & set(expected))
        if state[key].shape != expected[key].shape
    ]
    if missing or unexpected or shapes:
        problems = [
            f"missing keys {missing}" if missing else "",
            f"unexpected keys {unexpected}" if unexpected else "",
            f"shape mismatches [{'; '.join(shapes)}]" if shapes else "",
        ]
        raise CheckpointError(
            f"weights in {folder} do not fit {model_cls.__name__}: "
            + "; ".join(p for p in problems if p)
        )
    for key, tensor in state.items():
        if tensor.is_floating_point() and expected[key].is_floating_point():
            state[key] = tensor.to(expected[key].dtype)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """What ``--resume`` needs: optimizer, scheduler and trainer state (None when absent)."""
    folder = _checkpoint_dir(path)
    result: dict[str, Any] = {}
    for key, file in (
        ("optimizer", OPTIMIZER_FILE),
        ("scheduler", SCHEDULER_FILE),
        ("trainer_state", TRAINER_STATE_FILE),
    ):
        result[key] = _torch_load(folder / file) if (folder / file).is_file() else None
    info_file = folder / TRAINING_INFO_FILE
    try:
        result["training_info"] = json.loads(info_file.read_text()) if info_file.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{info_file} is not valid JSON: {error}") from error
    return result


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


# --------------------------------------------------------------------------- migration


def _flat_kind(folder: Path) -> str:
    """The kind of an old flat ``best_model`` folder: its config's ``kind``, else vision."""
    try:
        kind = json.loads((folder / CONFIG_FILE).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    return kind if kind in KINDS else "vision"


def migrate_checkpoints(root: str | os.PathLike, dry_run: bool = False) -> list[tuple[Path, Path]]:
    """Move checkpoints from the old flat layout into ``ROOT/<kind>/``.

    ``ROOT/best_model`` goes to ``ROOT/vision/best_model`` (or the kind its
    ``config.json`` names) and ``ROOT/<kind>_model_checkpoint_N`` to
    ``ROOT/<kind>/``. An existing destination is never overwritten (the source is
    left in place with a warning). Returns the ``(src, dst)`` moves made, or
    planned when ``dry_run``.
    """
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint root {root} does not exist or is not a folder")
    if not dry_run:
        recover_interrupted(root)
    moves = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir():
            continue
        match = _EPOCH_RE.match(entry.name)
        if match:
            dst = root / match.group(1) / entry.name
        elif entry.name == BEST_MODEL:
            dst = best_model_dir(root, _flat_kind(entry))
        else:
            continue
        if dst.exists():
            logger.warning("skipping %s: %s already exists (left both in place)", entry, dst)
            continue
        if not dry_run:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.rename(entry, dst)
            fsync_dir(dst.parent)
        moves.append((entry, dst))
    if moves and not dry_run:
        fsync_dir(root)
    return moves


def _add_migrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "root",
        nargs="?",
        default="checkpoints",
        help="checkpoint root holding the old flat layout (default: %(default)s)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="only report what would move; change nothing"
    )


_MIGRATE_DESCRIPTION = (
    "Move checkpoints saved in the old flat layout into one folder per model kind: "
    "ROOT/best_model -> ROOT/vision/best_model and ROOT/<kind>_model_checkpoint_N -> "
    "ROOT/<kind>/<kind>_model_checkpoint_N. Safe to run twice; never overwrites."
)


def _run_migrate(args: argparse.Namespace) -> int:
    try:
        moves = migrate_checkpoints(args.root, dry_run=args.dry_run)
    except (CheckpointError, OSError) as error:
        logger.error("%s", error)
        return 1
    verb = "would move" if args.dry_run else "moved"
    for src, dst in moves:
        logger.info("%s %s -> %s", verb, src, dst)
    if not moves:
        logger.info("nothing to migrate in %s", args.root)
    elif args.dry_run:
        logger.info("dry run: %d folder(s) would move; nothing changed", len(moves))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``elworld migrate-checkpoints [ROOT] [--dry-run]``."""
    parser = subparsers.add_parser(
        "migrate-checkpoints",
        help="move old flat-layout checkpoints into vision/, memory/, control/",
        description=_MIGRATE_DESCRIPTION,
    )
    _add_migrate_arguments(parser)
    parser.set_defaults(func=_run_migrate)


def migrate_main(argv: list[str] | None = None) -> int:
    """Entry point of the standalone ``migrate_checkpoints.py`` script."""
    parser = argparse.ArgumentParser(
        prog="migrate_checkpoints.py", description=_MIGRATE_DESCRIPTION
    )
    _add_migrate_arguments(parser)
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    return _run_migrate(args)
