"""Reading checkpoints: config, weights (safetensors or a legacy ``model.pth``), models, training info.

Every ``.pth`` file loads with ``torch.load(weights_only=True)``: a file that
needs more (arbitrary pickled objects) is refused, never executed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import typing
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file as _load_safetensors

from elworld.checkpoint.layout import (
    CONFIG_FILE,
    KINDS,
    LEGACY_WEIGHTS_FILE,
    OPTIMIZER_FILE,
    SCHEDULER_FILE,
    TRAINER_STATE_FILE,
    TRAINING_INFO_FILE,
    WEIGHTS_FILE,
    CheckpointError,
)
from elworld.checkpoint.publish import recover_interrupted

_STATE_KEYS = ("model_state_dict", "state_dict", "model")


logger = logging.getLogger(__name__)


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


def _weight_shapes(folder: Path) -> dict[str, tuple[int, ...]] | None:
    """Tensor shapes of ``model.safetensors`` from its header alone (no tensor is read).

    ``None`` for a legacy ``model.pth``, which has no header to read apart.
    """
    file = _weights_file(folder)
    if file.name != WEIGHTS_FILE:
        return None
    try:
        with safe_open(str(file), framework="pt") as weights:
            return {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises its own error type
        raise CheckpointError(f"{file} could not be read (corrupt?): {error}") from error


def _fit_problems(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> str:
    """What differs between a model's tensor shapes and a checkpoint's ("" when they fit)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [
        f"{key}: checkpoint {found[key]} vs model {expected[key]}"
        for key in sorted(set(found) & set(expected))
        if found[key] != expected[key]
    ]
    problems = [
        f"missing keys {missing}" if missing else "",
        f"unexpected keys {unexpected}" if unexpected else "",
        f"shape mismatches [{'; '.join(shapes)}]" if shapes else "",
    ]
    return "; ".join(p for p in problems if p)


def load_model(path: str | os.PathLike, model_cls: type, device: str | torch.device = "cpu") -> Any:
    """Build ``model_cls(config)`` from a checkpoint and load its weights strictly.

    ``model_cls`` needs ``config_class`` and ``kind`` attributes. A world that
    someone shares is untrusted input, so the config is checked against the
    weights before anything is allocated: the model is first built on the
    ``meta`` device (shapes, no storage) and its shapes compared with the
    safetensors header. Weights are cast to the model's own dtypes. Returns the
    model on ``device`` in eval mode.

    Raises:
        CheckpointError: naming ``config.json`` when it does not fit the weights.
    """
    folder = _checkpoint_dir(path)
    config = load_config(folder, model_cls.config_class, kind=model_cls.kind)
    with torch.device("meta"):
        skeleton = model_cls(config)
    expected = {key: tuple(t.shape) for key, t in skeleton.state_dict().items()}
    header = _weight_shapes(folder)
    if header is not None and (problems := _fit_problems(expected, header)):
        raise CheckpointError(
            f"weights in {folder} do not fit {model_cls.__name__} as its "
            f"{folder / CONFIG_FILE} describes it (checked before building): {problems}"
        )
    state = load_state_dict(folder)
    if problems := _fit_problems(expected, {key: tuple(t.shape) for key, t in state.items()}):
        raise CheckpointError(f"weights in {folder} do not fit {model_cls.__name__}: {problems}")
    model = model_cls(config)
    dtypes = {key: t.dtype for key, t in model.state_dict().items()}
    for key, tensor in state.items():
        if tensor.is_floating_point() and dtypes[key].is_floating_point:
            state[key] = tensor.to(dtypes[key])
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
    result["training_info"] = read_training_info(folder)
    return result


def read_training_info(folder: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint folder's ``training_info.json`` as a dict.

    ``{}`` when the file is absent or holds no JSON object; ``CheckpointError``
    when it cannot be read as JSON.
    """
    file = Path(folder) / TRAINING_INFO_FILE
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{file} is not valid JSON: {error}") from error
    return data if isinstance(data, dict) else {}


def _training_info_entry(checkpoint: str | os.PathLike, key: str) -> dict[str, Any]:
    """The dict under ``key`` in ``training_info.json``; ``{}`` when absent or unreadable (warned)."""
    try:
        info = read_training_info(checkpoint)
    except CheckpointError as error:
        logger.warning("%s; ignoring it", error)
        return {}
    entry = info.get(key)
    return entry if isinstance(entry, dict) else {}


def recording_info(memory_checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The ``"recordings"`` entry of a memory checkpoint's ``training_info.json``.

    It says where the world's training data came from (``source``,
    ``scenario``, ``frame_skip``, ``steps_per_second``, ``keys``); ``{}`` for
    checkpoints trained before it was recorded, or without a readable file.
    """
    return _training_info_entry(memory_checkpoint, "recordings")


def sampling_defaults(memory_checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The ``"sampling"`` entry of a memory checkpoint's ``training_info.json``: how its world
    is meant to be sampled (e.g. ``{"guidance": 3.0}``, chosen on validation data); ``{}`` if none.
    """
    return _training_info_entry(memory_checkpoint, "sampling")


def recommended_guidance(memory_checkpoint: str | os.PathLike) -> float:
    """The guidance scale a world recommends (``sampling_defaults``), else 1 (off)."""
    return float(sampling_defaults(memory_checkpoint).get("guidance", 1.0))
