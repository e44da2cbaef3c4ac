"""``elworld loop``: one round end to end against real ViZDoom, stopped and resumed mid-round.

The world is tiny but real in every part: episodes recorded from take_cover, a
memory and an episode-end model trained by the CLI on them, a start bank and a
dream-trained agent. A time limit of 0 makes every call stop after one phase (or
after one CMA-ES generation), so the test walks the round phase by phase with
``--resume``, as a user whose machine stopped would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from elworld import checkpoint
from elworld.cli import main
from elworld.data.episodes import find_episodes, read_labels
from elworld.loop.rounds import LoopConfig, rounds_table, run_loop

pytest.importorskip("vizdoom")
pytest.importorskip("cmaes")


@pytest.fixture(scope="module")
def tiny_real_world(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A world trained on 3 real take_cover episodes, and a dream-trained agent in it."""
    base = tmp_path_factory.mktemp("loop_world")
    data, world = base / "data", base / "world"
    assert main(["collect", "doom", "--scenario", "take_cover", "--episodes", "3",
                 "--frame-skip", "4", "--seed", "123000", "--out", str(data)]) == 0  # fmt: skip
    world.mkdir()
    shutil.copytree(checkpoint.kind_dir(tiny_checkpoints, "vision"), world / "vision")
    vision = str(checkpoint.best_model_dir(world, "vision"))
    common = ["--data", str(data), "--vision", vision, "--out", str(world), "--device", "cpu"]
    assert main(["train", "memory", *common, "--epochs", "1", "--steps-per-epoch", "2",
                 "--batch-size", "4", "--val-fraction", "0.34", "--n-layer", "1", "--n-head", "2",
                 "--n-embd", "16", "--precision", "fp32"]) == 0  # fmt: skip
    assert main(["train", "end", *common, "--epochs", "1", "--hidden", "8",
                 "--val-fraction", "0.34"]) == 0  # fmt: skip
    assert main(["data", "start-frames", str(data), "--count", "3", "--clip", "2",
                 "--val-fraction", "0.34", "--out", str(world / "start_frames.npz")]) == 0  # fmt: skip
    assert main(["train", "control", "--checkpoints", str(world), "--out", str(world),
                 "--generations", "1", "--population", "2", "--rollouts", "1", "--max-steps", "4",
                 "--precision", "fp32", "--device", "cpu"]) == 0  # fmt: skip
    return {"data": data, "world": world}


def _config(world: dict, out: Path, **changes) -> LoopConfig:
    settings = dict(
        out=out, world=world["world"], data=world["data"], rounds=1, episodes=1, explore=0.5,
        record_seed=124000, eval_episodes=1, eval_seed=125000, max_steps=12, memory_epochs=1,
        memory_steps=1, memory_batch_size=2, memory_val_batches=1, end_epochs=1, bank_clips=1,
        generations=2, population=2, rollouts=1, dream_max_steps=4, time_limit_min=0.0,
        extra_control_args=["--precision", "fp32", "--device", "cpu"],
    )  # fmt: skip
    return LoopConfig(**{**settings, **changes})


def test_one_round_runs_phase_by_phase_and_resumes_mid_round(
    tiny_real_world: dict, tmp_path: Path, one_torch_thread
) -> None:
    out = tmp_path / "loop"
    state = run_loop(_config(tiny_real_world, out), progress=False)
    assert state["done"] == ["0:eval"]  # a time limit of 0: one phase per call
    assert [row["round"] for row in state["rows"]] == [0]
    with pytest.raises(FileExistsError, match="--resume"):
        run_loop(_config(tiny_real_world, out), progress=False)

    state = run_loop(_config(tiny_real_world, out, resume=True), progress=False)
    assert state["done"][-1] == "1:record"
    recorded = find_episodes(out / "data" / "round_01")
    assert [p.name for p in recorded] == ["agent_r01_0001.npz"]
    labels = read_labels(recorded[0])  # the original .npz format
    sidecar = json.loads(recorded[0].with_suffix(".json").read_text())
    assert sidecar["seed"] == 124000 and sidecar["loop_round"] == 1
    assert sidecar["scenario"] == "take_cover" and sidecar["frame_skip"] == 4
    assert state["recorded_steps"] == sidecar["steps"] == len(labels["act"]) <= 12
    assert labels["done"].sum() + labels["truncated"].sum() == 1  # a death or the cap, not both

    memory_before = json.loads(
        (checkpoint.best_model_dir(tiny_real_world["world"], "memory") / "training_info.json").read_text()
    )["epoch"]
    state = run_loop(_config(tiny_real_world, out, resume=True), progress=False)
    assert state["done"][-1] == "1:memory"
    refit = json.loads((out / "round_01" / "memory" / "best_model" / "training_info.json").read_text())
    assert refit["epoch"] == memory_before + 1  # resumed, not from scratch
    mix = {p.name for p in find_episodes(out / "data" / "mix_01")}
    assert "agent_r01_0001.npz" in mix and len(mix) == 4  # 3 base episodes + the loop's

    state = run_loop(_config(tiny_real_world, out, resume=True), progress=False)
    assert state["done"][-1] == "1:end"
    end_info = json.loads((out / "round_01" / "end" / "best_model" / "training_info.json").read_text())
    assert end_info["init_from"].endswith("end/best_model")

    state = run_loop(_config(tiny_real_world, out, resume=True), progress=False)
    assert state["done"][-1] == "1:bank"
    before = np.load(tiny_real_world["world"] / "start_frames.npz")
    after = np.load(out / "round_01" / "start_frames.npz")
    assert len(after["obs"]) == len(before["obs"]) + 2 and after["first"].sum() == 4
    np.testing.assert_array_equal(after["obs"][: len(before["obs"])], before["obs"])

    # The control phase stops after its first generation (time limit 0): mid-phase.
    state = run_loop(_config(tiny_real_world, out, resume=True), progress=False)
    assert state["done"][-1] == "1:bank"
    assert [g for g, _ in checkpoint.list_epoch_checkpoints(out / "round_01", "control")] == [1]
    args = ["loop", "--out", str(out), "--rounds", "1", "--resume",
            "--time-limit", "0"]  # fmt: skip
    assert main(args) == 0  # the CLI resumes with the loop's saved settings
    state = json.loads((out / "loop.json").read_text())
    assert state["done"][-1] == "1:control"
    (generation, last), = checkpoint.list_epoch_checkpoints(out / "round_01", "control")
    control = json.loads((last / "training_info.json").read_text())
    assert generation == 2 and control["train_config"]["resume"] is True  # continued generation 1

    state = run_loop(_config(tiny_real_world, out, resume=True), progress=False)
    assert state["done"][-1] == "1:eval"
    assert [row["round"] for row in state["rows"]] == [0, 1]
    row = state["rows"][1]
    assert row["real_steps_recorded"] == sidecar["steps"] and row["cpu_min"] >= 0
    assert 1 <= row["real_length_mean"] <= 12 and row["real_return_mean"] > 0
    assert (out / "rounds.md").read_text() == rounds_table(state["rows"])
    again = run_loop(_config(tiny_real_world, out, resume=True), progress=False)
    assert again["done"] == state["done"]  # nothing left to do

    _check_publish(tiny_real_world, out, tmp_path / "published")


def _check_publish(world: dict, out: Path, root: Path) -> None:
    """``elworld loop --publish 1 --to ROOT``: the round's world and agent, with provenance."""
    shutil.copytree(world["world"], root)
    from elworld.loop.publish import publish_round

    with pytest.raises(ValueError, match=r"round 2 .* no finished agent .* \[1\]"):
        publish_round(out, 2, root)
    assert main(["loop", "--out", str(out), "--publish", "1", "--to", str(root)]) == 0
    round_root = out / "round_01"
    for kind in ("memory", "end", "control"):
        src, dst = (checkpoint.best_model_dir(r, kind) for r in (round_root, root))
        assert checkpoint.checkpoint_fingerprint(dst) == checkpoint.checkpoint_fingerprint(src)
        info = json.loads((dst / "training_info.json").read_text())
        first = json.loads((checkpoint.best_model_dir(world["world"], kind) / "training_info.json").read_text())
        assert info["loop"]["round"] == 1 and info["loop"]["from"] == str(src)
        assert info["lineage"] == [{"command": first["command"],
                                    "checkpoint": str(checkpoint.best_model_dir(world["world"], kind)),
                                    "fingerprint": info["lineage"][0]["fingerprint"]}]  # fmt: skip
        command = info["loop"]["command"].split()
        assert command[:2] == ["elworld", "loop"] and command[-2:] == ["--rounds", "1"]
        assert "--explore 0.5" in info["loop"]["command"]  # a non-default setting is kept
        card = (dst / "README.md").read_text()
        assert info["loop"]["command"] in card and first["command"] in card
        if kind != "control":  # the refits name every recording set they mixed
            sets = {(s["policy"], s["episodes"]): s for s in info["recordings_mixed"]}
            assert sets[("agent+explore0.5", 1)]["seeds"] == [[124000, 124000]]
            assert sets[("sticky", 3)]["seeds"] == [[123000, 123002]]
    np.testing.assert_array_equal(np.load(root / "start_frames.npz")["obs"],
                                  np.load(round_root / "start_frames.npz")["obs"])  # fmt: skip
    from elworld.control.agent import Agent

    Agent.from_checkpoint(checkpoint.best_model_dir(root, "control"), checkpoints=root)  # its world

    # Published into the loop's own starting world, twice: the lineage still starts there.
    first = json.loads((checkpoint.best_model_dir(root, "memory") / "training_info.json").read_text())
    for _ in range(2):
        publish_round(out, 1, world["world"])
        info = json.loads(
            (checkpoint.best_model_dir(world["world"], "memory") / "training_info.json").read_text()
        )
        assert info["lineage"] == first["lineage"]


def test_rounds_table_lists_every_round() -> None:
    rows = [
        {"round": 0, "real_steps_recorded": 0, "cpu_min": 0.1, "wall_min": 0.2,
         "dream_return": 500.0, "real_return_mean": 250.0, "real_return_std": 10.0,
         "real_length_mean": 62.5},
        {"round": 1, "real_steps_recorded": 1400, "cpu_min": 20.0, "wall_min": 15.0,
         "dream_return": None, "real_return_mean": 300.0, "real_return_std": 20.0,
         "real_length_mean": 75.0},
    ]  # fmt: skip
    lines = rounds_table(rows).splitlines()
    assert len(lines) == 4
    assert lines[2] == "| 0 | 0 | 0.1 | 0.2 | 500.0 | 250.0 +/- 10.0 | 62.5 |"
    assert lines[3] == "| 1 | 1400 | 20.0 | 15.0 | - | 300.0 +/- 20.0 | 75.0 |"


def test_bad_settings_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="explore"):
        LoopConfig(out=tmp_path, world=tmp_path, data=tmp_path, explore=1.5)
    with pytest.raises(ValueError, match="episodes"):
        LoopConfig(out=tmp_path, world=tmp_path, data=tmp_path, episodes=0)
    with pytest.raises(FileNotFoundError, match="--world"):
        run_loop(LoopConfig(out=tmp_path / "o", world=tmp_path / "none", data=tmp_path))


def test_the_published_loop_command_rebuilds_the_same_settings(tmp_path: Path) -> None:
    """``loop_command`` (what a published card shows) parses back to the loop's settings."""
    import shlex
    from dataclasses import asdict

    from elworld.cli import build_parser
    from elworld.loop.cli import loop_config
    from elworld.loop.publish import loop_command
    from elworld.loop.rounds import _jsonable

    cfg = LoopConfig(out=tmp_path / "o", world=tmp_path / "w", data=tmp_path / "d", rounds=2,
                     cache_dir=tmp_path / "c", base_episodes=7, explore=0.25, record_seed=5,
                     memory_steps=33, dream_max_steps=100, sigma=0.3, temperature=1.15)  # fmt: skip
    command = loop_command(_jsonable(asdict(cfg)), rounds=2)
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert loop_config(args) == cfg
    assert "--temperature 1.15" in command and "--episodes" not in command  # defaults left out
    with pytest.raises(ValueError, match="no flag for"):
        loop_command(_jsonable(asdict(cfg)) | {"extra_control_args": ["--hold", "3"]}, 2)
