"""Where checkpoints live: the kinds, the file names and the folder paths.

Layout: ``ROOT/<kind>/best_model/`` and ``ROOT/<kind>/<kind>_model_checkpoint_N/``
for each kind in :data:`KINDS`. Nothing here touches the disk.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

KINDS = ("vision", "memory", "control", "idm", "end")
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


class CheckpointError(Exception):
    """A checkpoint folder or file is missing, corrupt or does not fit the model."""


# Raised from every module of the package, named by the package (tracebacks, pickles).
CheckpointError.__module__ = "elworld.checkpoint"


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
