"""``elworld publish``: trained checkpoints copied into a root with their lineage and recordings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from elworld import checkpoint
from elworld.checkpoint.lineage import lineage_of, start_record, started_from
from elworld.cli import main
from elworld.model.end import EndConfig, EndModel

LOOP = {"command": "elworld loop --out runs/l --world w --data d --rounds 1", "round": 1,
        "out": "runs/l", "from": "runs/l/round_01/end/best_model"}  # fmt: skip


def _save(folder: Path, info: dict, seed: int) -> Path:
    torch.manual_seed(seed)
    model = EndModel(EndConfig(vocab_size=8, tokens_per_frame=4, n_embd=4, hidden=4))
    checkpoint.save_checkpoint(folder, model=model, config=model.config, training_info=info)
    return folder


def _episodes(folder: Path, seeds: list[int], policy: str) -> Path:
    folder.mkdir(parents=True)
    for i, seed in enumerate(seeds, 1):
        np.savez(folder / f"ep_{i:04d}.npz", act=np.zeros((3, 22), np.uint8))
        (folder / f"ep_{i:04d}.json").write_text(json.dumps({"policy": policy, "seed": seed,
                                                              "steps": 3}))  # fmt: skip
    return folder


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A root whose end model came from a loop round on top of a first run, and a new run
    that started from it (--init-from) on a data folder of five sticky episodes."""
    monkeypatch.chdir(tmp_path)
    root = Path("root")
    first = {"command": "elworld train end --data a --out runs/first"}
    bundled = _save(checkpoint.best_model_dir(root, "end"), {
        "command": "elworld train end --data b --out runs/l/round_01 --init-from x",
        "loop": LOOP,
        "lineage": [{**first, "checkpoint": "root/end/best_model", "fingerprint": "f" * 64}],
    }, seed=0)  # fmt: skip
    data = _episodes(Path("data/sticky"), [7, 8, 9, 10, 12], "sticky")
    new = _save(Path("runs/new/end/best_model"), {
        "command": f"elworld train end --data {data} --out runs/new --init-from {bundled}",
        "started_from": start_record(bundled, "--init-from"),
        "data": str(data),
    }, seed=1)  # fmt: skip
    return {"root": root, "bundled": bundled, "new": new, "data": data}


def test_a_checkpoint_that_replaces_its_parent_keeps_the_whole_lineage(world) -> None:
    root, bundled, new = world["root"], world["bundled"], world["new"]
    before = checkpoint.read_training_info(bundled)
    parent_fingerprint = checkpoint.checkpoint_fingerprint(bundled)
    assert main(["publish", str(new), "--to", str(root)]) == 0
    assert checkpoint.checkpoint_fingerprint(bundled) == checkpoint.checkpoint_fingerprint(new)
    info = checkpoint.read_training_info(bundled)
    assert info["command"] == checkpoint.read_training_info(new)["command"]
    assert info["lineage"] == [
        *before["lineage"],
        {"command": before["command"], "checkpoint": str(bundled),
         "fingerprint": parent_fingerprint, "loop": LOOP},
    ]  # fmt: skip
    assert info["published"]["from"] == str(new)
    assert info["recordings_mixed"] == [{"folder": "data/sticky", "policy": "sticky",
                                         "episodes": 5, "steps": 15,
                                         "seeds": [[7, 10], [12, 12]]}]  # fmt: skip
    card = (bundled / "README.md").read_text()
    for command in (before["lineage"][0]["command"], before["command"], LOOP["command"]):
        assert f"`{command}`" in card
    assert "| data/sticky | sticky | 5 | 15 | 7-10, 12 |" in card
    # Again: the root now holds this very model, so its lineage cannot be read from there.
    with pytest.raises(checkpoint.CheckpointError, match="this very model"):
        lineage_of(new)


def test_a_changed_start_is_refused_and_nothing_is_copied(world, capsys) -> None:
    root, bundled, new = world["root"], world["bundled"], world["new"]
    memory_like = _save(Path("runs/other/end/best_model"), {"command": "elworld train end"}, 2)
    _save(bundled, checkpoint.read_training_info(bundled), seed=3)  # the start was retrained
    replaced = checkpoint.checkpoint_fingerprint(bundled)
    assert main(["publish", str(new), "--to", str(root)]) == 1
    assert "now holds another model" in capsys.readouterr().err
    assert checkpoint.checkpoint_fingerprint(bundled) == replaced
    # Two folders of one kind: refused before anything is written.
    assert main(["publish", str(memory_like), str(new), "--to", str(root)]) == 1
    assert "both end checkpoints" in capsys.readouterr().err
    assert checkpoint.checkpoint_fingerprint(bundled) == replaced
    assert main(["publish", "runs/none", "--to", str(root)]) == 1
    assert "runs/none: no such checkpoint folder" in capsys.readouterr().err


def test_the_start_is_read_from_the_record_or_else_the_command() -> None:
    assert started_from({"command": "elworld train memory --out o --resume-from a/b"}) == (
        Path("a/b"), None)  # fmt: skip
    assert started_from({"started_from": {"checkpoint": "c", "fingerprint": "0" * 64},
                         "command": "elworld train memory --resume-from a"}) == (Path("c"), "0" * 64)  # fmt: skip
    assert started_from({"command": "elworld train memory --out o"}) is None
    with pytest.raises(ValueError, match="unknown start flag"):
        start_record("x", "--from")


def test_the_card_names_the_recordings_behind_every_run_of_the_lineage(world) -> None:
    root, bundled, new = world["root"], world["bundled"], world["new"]
    _episodes(Path("b"), [1, 2], "random")  # the bundled run's --data is here; the first's is not
    assert main(["publish", str(new), "--to", str(root)]) == 0
    info = checkpoint.read_training_info(bundled)
    assert "recordings" not in info["lineage"][0]
    assert info["lineage"][1]["recordings"] == [
        {"folder": "b", "policy": "random", "episodes": 2, "steps": 6, "seeds": [[1, 2]]}
    ]
    card = (bundled / "README.md").read_text()
    assert "| 2: b | random | 2 | 6 | 1-2 |" in card
    assert "Not known here: run 1 (`--data a`: not here)." in card
    # Published again from a run on top of it, with both data folders gone: run 2's
    # recordings come from the lineage as published, run 3's from its recordings_mixed.
    import shutil

    shutil.rmtree("b")
    shutil.rmtree(world["data"])
    newer = _save(Path("runs/newer/end/best_model"), {
        "command": f"elworld train end --data c --out runs/newer --init-from {bundled}",
        "started_from": start_record(bundled, "--init-from"),
    }, seed=4)  # fmt: skip
    assert main(["publish", str(newer), "--to", str(root)]) == 0
    card = (bundled / "README.md").read_text()
    assert "| 2: b | random | 2 | 6 | 1-2 |" in card
    assert "| 3: data/sticky | sticky | 5 | 15 | 7-10, 12 |" in card
