"""Tests for the checkpoint store (``elworld.checkpoint``) and ``migrate_checkpoints.py``."""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from elworld import checkpoint as ckpt
from elworld.checkpoint import CheckpointError

REPO = Path(__file__).resolve().parents[1]


@dataclass
class TinyConfig:
    width: int = 4
    sizes: tuple[int, ...] = (2, 3)

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ValueError(f"width must be positive, got {self.width}")


class TinyModel(nn.Module):
    kind = "vision"
    config_class = TinyConfig

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.inp = nn.Linear(3, config.width)
        self.emb = nn.Embedding(5, config.width)
        self.head = nn.Linear(config.width, 5, bias=False)
        self.head.weight = self.emb.weight  # tied: shared storage in state_dict
        self.register_buffer("scale", torch.linspace(0.5, 1.5, config.width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.inp(x) * self.scale)


class BiggerModel(TinyModel):
    def __init__(self, config: TinyConfig) -> None:
        super().__init__(config)
        self.extra = nn.Linear(2, 2)


def _model(seed: int = 0) -> TinyModel:
    torch.manual_seed(seed)
    return TinyModel(TinyConfig())


def _save(path: Path, model: TinyModel, **kwargs) -> Path:
    info = kwargs.pop("training_info", {"epoch": 1, "metrics": {"loss": 0.5}})
    return ckpt.save_checkpoint(
        path, model=model, config=model.config, training_info=info, **kwargs
    )


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


X = torch.linspace(-1, 1, 6).reshape(2, 3)


def test_round_trip_weights_config_and_training_state(tmp_path: Path) -> None:
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    model(X).sum().backward()
    optimizer.step()
    scheduler.step()
    path = best = ckpt.best_model_dir(tmp_path, "vision")
    info = {
        "epoch": 3,
        "metrics": {"loss": 0.25},
        "data": "data/*.npz",
        "command": ["elworld", "train"],
    }
    _save(path, model, training_info=info, optimizer=optimizer, scheduler=scheduler)

    names = {p.name for p in best.iterdir()}
    assert {"model.safetensors", "config.json", "training_info.json", "README.md"} <= names
    assert {"optimizer.pth", "scheduler.pth"} <= names and "trainer_state.pth" not in names
    assert json.loads((best / "config.json").read_text()) == {
        "kind": "vision",
        "width": 4,
        "sizes": [2, 3],
    }
    saved_info = json.loads((best / "training_info.json").read_text())
    assert saved_info["epoch"] == 3 and "saved_at" in saved_info and "saved_at" not in info
    readme = (best / "README.md").read_text()
    assert "epoch 3" in readme and "| loss | 0.25 |" in readme and "elworld train" in readme

    assert ckpt.load_config(best, TinyConfig) == model.config  # list -> tuple restored
    loaded = ckpt.load_model(best, TinyModel)
    assert not loaded.training
    assert torch.equal(loaded(X), model(X))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    state = ckpt.load_training_state(best)
    assert state["trainer_state"] is None and state["training_info"]["epoch"] == 3
    fresh_opt = torch.optim.AdamW(loaded.parameters(), lr=1.0)
    fresh_opt.load_state_dict(state["optimizer"])
    assert fresh_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    fresh_sched = torch.optim.lr_scheduler.CosineAnnealingLR(fresh_opt, T_max=10)
    fresh_sched.load_state_dict(state["scheduler"])
    assert fresh_sched.last_epoch == scheduler.last_epoch


def test_training_info_records_the_elworld_version(tmp_path: Path) -> None:
    """Every checkpoint says which code made it: the same version `elworld --version` prints."""
    import elworld

    path = _save(tmp_path / "vision" / "best_model", _model())
    info = json.loads((path / "training_info.json").read_text())
    assert info["elworld_version"] == elworld.__version__
    assert info["epoch"] == 1  # the caller's facts are kept beside it


def test_trainer_state_restores_rng_streams(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    extra = {"epoch": 2, "best": np.float32(0.5), "seen": np.arange(3)}
    _save(tmp_path / "c", _model(), trainer_state={"rng": ckpt.rng_state(), **extra})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())

    trainer_state = ckpt.load_training_state(tmp_path / "c")["trainer_state"]
    assert trainer_state["epoch"] == 2 and trainer_state["seen"] == [0, 1, 2]
    ckpt.set_rng_state(trainer_state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_fp16_weights_cast_back_to_model_dtype(tmp_path: Path) -> None:
    model = _model()
    _save(tmp_path / "c", model, weights_dtype=torch.float16)
    on_disk = ckpt.load_state_dict(tmp_path / "c")
    assert on_disk["inp.weight"].dtype == torch.float16
    loaded = ckpt.load_model(tmp_path / "c", TinyModel)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(loaded(X), model(X), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("wrap", [None, "model_state_dict", "state_dict"])
def test_legacy_model_pth_loads(tmp_path: Path, wrap: str | None) -> None:
    model = _model()
    folder = tmp_path / "best_model"
    folder.mkdir()
    state = model.state_dict()
    torch.save(state if wrap is None else {wrap: state, "epoch": 7}, folder / "model.pth")
    (folder / "config.json").write_text(json.dumps({"width": 4, "sizes": [2, 3]}))
    loaded = ckpt.load_model(folder, TinyModel)
    assert torch.equal(loaded(X), model(X))


class _Payload:
    """Unpickling this creates the file at ``path``: a stand-in for malicious code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_code_executing_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    folder = tmp_path / "evil"
    folder.mkdir()
    sentinel = tmp_path / "SENTINEL"
    torch.save({"w": torch.zeros(2), "x": _Payload(sentinel)}, folder / "model.pth")
    with pytest.raises(CheckpointError, match="refused: not a plain tensor state dict") as info:
        ckpt.load_state_dict(folder)
    assert str(folder / "model.pth") in str(info.value)
    assert not sentinel.exists()
    # The payload is live: an unsafe load would have run it.
    unsafe = tmp_path / "UNSAFE"
    torch.save({"x": _Payload(unsafe)}, tmp_path / "probe.pth")
    torch.load(tmp_path / "probe.pth", weights_only=False)
    assert unsafe.exists()


def test_interrupted_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    best = ckpt.best_model_dir(tmp_path, "vision")
    first = _model(0)
    _save(best, first)
    before = ckpt.checkpoint_fingerprint(best)
    real_write = ckpt._write_bytes

    def failing_write(path: Path, data: bytes) -> None:
        if path.name == "README.md":
            raise OSError("disk full")
        real_write(path, data)

    monkeypatch.setattr(ckpt, "_write_bytes", failing_write)
    with pytest.raises(OSError, match="disk full"):
        _save(best, _model(1))
    assert ckpt.checkpoint_fingerprint(best) == before
    assert torch.equal(ckpt.load_model(best, TinyModel)(X), first(X))
    assert _hidden(best.parent) == []


def test_failed_final_rename_puts_previous_back(tmp_path: Path, monkeypatch) -> None:
    best = ckpt.best_model_dir(tmp_path, "vision")
    first = _model(0)
    _save(best, first)
    real_rename = os.rename

    def failing_rename(src, dst) -> None:
        if Path(src).name.startswith(".tmp-"):
            raise OSError("rename failed")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="rename failed"):
        _save(best, _model(1))
    monkeypatch.undo()
    assert best.is_dir() and _hidden(best.parent) == []  # before any recovery runs
    assert torch.equal(ckpt.load_model(best, TinyModel)(X), first(X))
    assert _hidden(best.parent) == []


CRASH_SCRIPT = textwrap.dedent(
    """
    import dataclasses, os, sys
    import torch
    from elworld import checkpoint

    @dataclasses.dataclass
    class Config:
        width: int = 4

    real_rename = os.rename

    def crash(src, dst):
        if os.path.basename(src).startswith(".tmp-"):
            os._exit(17)  # the process dies between the two renames
        real_rename(src, dst)

    os.rename = crash
    checkpoint.save_checkpoint(
        sys.argv[1], model=torch.nn.Linear(3, 4), config=Config(), training_info={}, kind="vision"
    )
    """
)


def test_crash_between_renames_is_recovered(tmp_path: Path) -> None:
    best = ckpt.best_model_dir(tmp_path, "vision")
    first = _model(0)
    _save(best, first)
    done = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(best)], capture_output=True)
    assert done.returncode == 17, done.stderr.decode()
    assert not best.exists()
    assert [name[:5] for name in _hidden(best.parent)] == [".old-", ".tmp-"]

    assert ckpt.recover_interrupted(best.parent) == [best]
    assert _hidden(best.parent) == []
    assert torch.equal(ckpt.load_model(best, TinyModel)(X), first(X))


def test_recover_deletes_stale_and_spares_live_folders(tmp_path: Path) -> None:
    best = _save(ckpt.best_model_dir(tmp_path, "vision"), _model())
    parent = best.parent
    dead_pid = 2**22 + 12345  # above Linux's pid_max default: never a running process
    stale_old = parent / f".old-best_model-{dead_pid}-0123abcd"
    stale_tmp = parent / f".tmp-best_model-{dead_pid}-89abcdef"
    live_tmp = parent / f".tmp-best_model-{os.getppid()}-00000000"
    for folder in (stale_old, stale_tmp, live_tmp):
        folder.mkdir()
    assert ckpt.recover_interrupted(parent) == []  # best_model exists: nothing to restore
    assert _hidden(parent) == [live_tmp.name]
    assert ckpt.load_model(best, TinyModel) is not None  # load also recovers, and works


def test_copy_checkpoint_and_fingerprint(tmp_path: Path) -> None:
    epoch = _save(ckpt.epoch_checkpoint_dir(tmp_path, "vision", 2), _model(0))
    best = _save(ckpt.best_model_dir(tmp_path, "vision"), _model(1))
    assert ckpt.checkpoint_fingerprint(best) != ckpt.checkpoint_fingerprint(epoch)
    assert ckpt.copy_checkpoint(epoch, best) == best
    assert ckpt.checkpoint_fingerprint(best) == ckpt.checkpoint_fingerprint(epoch)
    assert sorted(p.name for p in best.iterdir()) == sorted(p.name for p in epoch.iterdir())
    with pytest.raises(CheckpointError, match="onto itself"):
        ckpt.copy_checkpoint(best, best)


def test_prune_keeps_last_k(tmp_path: Path) -> None:
    for epoch in (1, 2, 3, 10):
        ckpt.epoch_checkpoint_dir(tmp_path, "memory", epoch).mkdir(parents=True)
    ckpt.best_model_dir(tmp_path, "memory").mkdir()
    epochs = [epoch for epoch, _ in ckpt.list_epoch_checkpoints(tmp_path, "memory")]
    assert epochs == [1, 2, 3, 10]
    removed = ckpt.prune_epoch_checkpoints(tmp_path, "memory", keep_last=2)
    assert [p.name for p in removed] == ["memory_model_checkpoint_1", "memory_model_checkpoint_2"]
    assert [e for e, _ in ckpt.list_epoch_checkpoints(tmp_path, "memory")] == [3, 10]
    assert ckpt.best_model_dir(tmp_path, "memory").is_dir()
    assert _hidden(tmp_path / "memory") == []


def _write_config(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(data))
    return folder / "config.json"


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"kind": "vision", "width": 4, "sizes": [2], "depth": 2}, r"unknown fields \['depth'\]"),
        ({"kind": "memory", "width": 4, "sizes": [2]}, "'memory' checkpoint, expected 'vision'"),
        (
            {"kind": "vision", "width": 0, "sizes": [2]},
            "invalid TinyConfig: width must be positive",
        ),
    ],
)
def test_load_config_errors_name_the_file(tmp_path: Path, data: dict, pattern: str) -> None:
    file = _write_config(tmp_path / "c", data)
    with pytest.raises(CheckpointError, match=pattern) as info:
        ckpt.load_config(tmp_path / "c", TinyConfig, kind="vision")
    assert str(file) in str(info.value)


def test_missing_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError) as info:
        ckpt.load_config(tmp_path / "empty", TinyConfig)
    assert str(tmp_path / "empty" / "config.json") in str(info.value)
    with pytest.raises(CheckpointError) as info:
        ckpt.load_state_dict(tmp_path / "empty")
    assert "model.safetensors" in str(info.value) and "model.pth" in str(info.value)
    assert str(tmp_path / "empty") in str(info.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_model(tmp_path / "nowhere", TinyModel)


def test_strict_load_reports_mismatches(tmp_path: Path) -> None:
    folder = _save(tmp_path / "c", _model())
    with pytest.raises(CheckpointError, match=r"missing keys \['extra.bias', 'extra.weight'\]"):
        ckpt.load_model(folder, BiggerModel)
    _write_config(folder, {"kind": "vision", "width": 5, "sizes": [2, 3]})
    with pytest.raises(CheckpointError, match=r"inp.weight: checkpoint \(4, 3\) vs model \(5, 3\)"):
        ckpt.load_model(folder, TinyModel)


def _old_layout(root: Path) -> dict[str, str]:
    """A flat old-style checkpoint root; returns {relative folder: marker text}."""
    markers = {
        "best_model": "best",
        "vision_model_checkpoint_1": "v1",
        "vision_model_checkpoint_2": "v2",
        "memory_model_checkpoint_3": "m3",
        "control_model_checkpoint_4": "c4",
        "notes": "unrelated",
        "vision/vision_model_checkpoint_2": "already there",
    }
    for rel, text in markers.items():
        (root / rel).mkdir(parents=True)
        (root / rel / "marker.txt").write_text(text)
    return markers


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_migration_dry_run_then_move_then_idempotent(tmp_path: Path) -> None:
    _old_layout(tmp_path)
    before = _snapshot(tmp_path)
    planned = ckpt.migrate_checkpoints(tmp_path, dry_run=True)
    assert _snapshot(tmp_path) == before
    rel = {(str(s.relative_to(tmp_path)), str(d.relative_to(tmp_path))) for s, d in planned}
    assert rel == {
        ("best_model", "vision/best_model"),
        ("vision_model_checkpoint_1", "vision/vision_model_checkpoint_1"),
        ("memory_model_checkpoint_3", "memory/memory_model_checkpoint_3"),
        ("control_model_checkpoint_4", "control/control_model_checkpoint_4"),
    }
    assert ckpt.migrate_checkpoints(tmp_path) == planned
    after = _snapshot(tmp_path)
    assert after["vision/best_model/marker.txt"] == "best"
    assert after["memory/memory_model_checkpoint_3/marker.txt"] == "m3"
    assert after["vision/vision_model_checkpoint_2/marker.txt"] == "already there"
    assert after["vision_model_checkpoint_2/marker.txt"] == "v2"  # skipped, left in place
    assert after["notes/marker.txt"] == "unrelated"
    assert ckpt.migrate_checkpoints(tmp_path) == []
    assert _snapshot(tmp_path) == after


def test_migration_routes_flat_best_model_by_config_kind(tmp_path: Path) -> None:
    _write_config(tmp_path / "best_model", {"kind": "memory"})
    moves = ckpt.migrate_checkpoints(tmp_path)
    assert moves == [(tmp_path / "best_model", tmp_path / "memory" / "best_model")]


def test_migrate_subcommand_and_script(tmp_path: Path) -> None:
    _old_layout(tmp_path)
    parser = argparse.ArgumentParser()
    ckpt.register(parser.add_subparsers())
    args = parser.parse_args(["migrate-checkpoints", str(tmp_path), "--dry-run"])
    before = _snapshot(tmp_path)
    assert args.func(args) == 0
    assert _snapshot(tmp_path) == before

    script = [sys.executable, str(REPO / "migrate_checkpoints.py"), str(tmp_path)]
    done = subprocess.run(script, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "control" / "control_model_checkpoint_4" / "marker.txt").is_file()
    assert "moved" in done.stderr and "already exists" in done.stderr


def test_migrate_main_reports_missing_root(tmp_path: Path, caplog) -> None:
    assert ckpt.migrate_main([str(tmp_path / "nope")]) == 1
    assert "does not exist" in caplog.text and str(tmp_path / "nope") in caplog.text


@dataclass
class RequiredConfig:
    width: int  # no default: a checkpoint must state it
    sizes: tuple[int, ...] = (2, 3)


def test_load_config_requires_fields_without_default(tmp_path: Path) -> None:
    file = _write_config(tmp_path / "c", {"kind": "vision", "sizes": [2]})
    with pytest.raises(CheckpointError, match=r"missing fields \['width'\]") as info:
        ckpt.load_config(tmp_path / "c", RequiredConfig, kind="vision")
    assert str(file) in str(info.value)


def test_load_config_fills_fields_added_later_with_their_defaults(tmp_path: Path) -> None:
    _write_config(tmp_path / "c", {"kind": "vision", "width": 4})  # written before "sizes" existed
    assert ckpt.load_config(tmp_path / "c", TinyConfig, kind="vision") == TinyConfig(width=4)
