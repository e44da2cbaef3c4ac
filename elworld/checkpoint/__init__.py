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

One job per module; import the names below from here (``from elworld import checkpoint``):

- :mod:`.layout`: the kinds, file names and folder paths; :class:`CheckpointError`.
- :mod:`.publish`: atomic folder publish and crash recovery.
- :mod:`.store`: save, copy, list and prune checkpoints; fingerprints; RNG state.
- :mod:`.loading`: config, weights (a legacy ``model.pth`` too) and whole models.
- :mod:`.model_card`: the ``README.md`` written into every folder.
- :mod:`.lineage`: what a run started from, and the runs behind a checkpoint.
- :mod:`.migration`: the old flat layout to ``ROOT/<kind>/``, and its command line.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from elworld.checkpoint import layout, loading, migration, model_card, publish, store
from elworld.checkpoint.layout import (
    BEST_MODEL,
    CONFIG_FILE,
    KINDS,
    LEGACY_WEIGHTS_FILE,
    OPTIMIZER_FILE,
    README_FILE,
    SCHEDULER_FILE,
    TRAINER_STATE_FILE,
    TRAINING_INFO_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    best_model_dir,
    epoch_checkpoint_dir,
    kind_dir,
)
from elworld.checkpoint.loading import (
    load_config,
    load_model,
    load_state_dict,
    load_training_state,
    read_training_info,
    recommended_guidance,
    recording_info,
    sampling_defaults,
)
from elworld.checkpoint.migration import migrate_checkpoints, migrate_main, register
from elworld.checkpoint.publish import _write_bytes as _write_bytes  # a seam the tests patch
from elworld.checkpoint.publish import recover_interrupted
from elworld.checkpoint.store import (
    checkpoint_fingerprint,
    copy_checkpoint,
    list_epoch_checkpoints,
    prune_epoch_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

__all__ = [
    "BEST_MODEL",
    "CONFIG_FILE",
    "KINDS",
    "LEGACY_WEIGHTS_FILE",
    "OPTIMIZER_FILE",
    "README_FILE",
    "SCHEDULER_FILE",
    "TRAINER_STATE_FILE",
    "TRAINING_INFO_FILE",
    "WEIGHTS_FILE",
    "CheckpointError",
    "best_model_dir",
    "checkpoint_fingerprint",
    "copy_checkpoint",
    "epoch_checkpoint_dir",
    "kind_dir",
    "list_epoch_checkpoints",
    "load_config",
    "load_model",
    "load_state_dict",
    "load_training_state",
    "migrate_checkpoints",
    "migrate_main",
    "prune_epoch_checkpoints",
    "read_training_info",
    "recommended_guidance",
    "recording_info",
    "recover_interrupted",
    "register",
    "rng_state",
    "sampling_defaults",
    "save_checkpoint",
    "set_rng_state",
]

_SUBMODULES = (layout, publish, loading, model_card, store, migration)
_MISSING = object()


class _Package(types.ModuleType):
    """Rebinding a name here rebinds it in the submodules that use it.

    The store was one module, so ``monkeypatch.setattr(checkpoint, "_write_bytes", f)``
    (tests failing a write on purpose) changed what ``save_checkpoint`` calls. A name
    is looked up in the submodule that imported it, so setting a re-exported name on
    the package also sets it in every submodule bound to the same object; a
    monkeypatch's undo puts the old object back the same way.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        old = self.__dict__.get(name, _MISSING)
        if old is not _MISSING and not isinstance(old, types.ModuleType):
            for module in _SUBMODULES:
                if module.__dict__.get(name, _MISSING) is old:
                    setattr(module, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
