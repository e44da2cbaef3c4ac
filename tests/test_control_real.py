"""The policy-class ceiling: CMA-ES with its fitness from real ViZDoom take_cover episodes.

A tiny world (``tiny_checkpoints``, described as recorded in take_cover at frame
skip 4) provides the vision model and the features; candidates play the real
game for a few short episodes. Real steps are counted by wrapping
``DoomEnv.step``, independently of the trainer's own counter.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from elworld import checkpoint
from elworld.cli import main
from elworld.control.real_fitness import (
    VALIDATION_SEED,
    check_real_config,
    real_scenario,
    training_seeds,
)
from elworld.control.train import ControlTrainConfig, train_control
from elworld.record.doom import DoomEnv

# Population 2 leaves CMA-ES no rank-mu update (cmu = 0): cmaes divides by it, harmlessly.
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
pytest.importorskip("cmaes", reason="needs the cmaes package (pip install 'elworld[rl]')")
pytest.importorskip("vizdoom", reason="needs ViZDoom (pip install 'elworld[doom]')")

RECORDINGS = {
    "scenario": "take_cover",
    "frame_skip": 4,
    "keys": {"left": "MOVE_LEFT", "right": "MOVE_RIGHT"},
}
TINY_REAL = dict(
    real="doom:take_cover", population=2, rollouts=1, max_steps=20, eval_every=1,
    eval_episodes=2, hold=3, device="cpu",
)  # fmt: skip


@pytest.fixture(scope="module")
def doom_world(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world, its memory checkpoint saying it was recorded in take_cover at frame skip 4."""
    root = tmp_path_factory.mktemp("doom_world") / "world"
    shutil.copytree(tiny_checkpoints, root)
    info_file = checkpoint.best_model_dir(root, "memory") / checkpoint.TRAINING_INFO_FILE
    info = json.loads(info_file.read_text())
    info_file.write_text(json.dumps({**info, "recordings": RECORDINGS}))
    return root


@pytest.fixture
def counted_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-item list holding how many times ``DoomEnv.step`` ran."""
    count = [0]
    original = DoomEnv.step

    def step(self, action):
        count[0] += 1
        return original(self, action)

    monkeypatch.setattr(DoomEnv, "step", step)
    return count


def _train(out: Path, world: Path, generations: int, resume: bool = False) -> dict:
    cfg = ControlTrainConfig(
        out=out, checkpoints=world, generations=generations, resume=resume, **TINY_REAL
    )
    return train_control(cfg, progress=False)


def test_real_fitness_trains_counts_real_steps_and_resumes_exactly(
    doom_world: Path, tmp_path: Path, counted_steps: list[int], one_torch_thread
) -> None:
    straight = _train(tmp_path / "straight", doom_world, generations=2)
    assert straight["generation"] == 2
    # 2 generations x 2 candidates x 1 episode, and 2 evaluations x 2 validation episodes,
    # each at most 20 steps: every DoomEnv.step is counted once.
    assert 0 < straight["real_steps"] == counted_steps[0] <= (2 * 2 + 2 * 2) * 20
    assert straight["dream_steps"] == 0
    path = checkpoint.epoch_checkpoint_dir(tmp_path / "straight", "control", 2)
    info = json.loads((path / "training_info.json").read_text())
    assert info["real_steps"] == counted_steps[0]
    assert info["real_episodes"] == 2 * 2 + 2 * 2
    assert 0 < info["real_tics"] <= 4 * info["real_steps"]  # at most frame skip 4 tics a step
    assert info["real"]["env"] == "doom:take_cover" and info["real"]["frame_skip"] == 4
    assert "dream" not in info and info["metrics"]["heldout_return_mean"] > 0
    card = (path / "README.md").read_text()
    assert f"| real steps | {counted_steps[0]:,} |" in card
    history = checkpoint.load_training_state(path)["trainer_state"]["history"]
    assert [h["generation"] for h in history] == [1, 2]
    per_generation = sum(h["real_steps"] for h in history)
    validation = sum(round(h["heldout_length_mean"] * 2) for h in history)
    assert per_generation + validation == counted_steps[0]

    counted_steps[0] = 0
    first = _train(tmp_path / "split", doom_world, generations=1)
    resumed = _train(tmp_path / "split", doom_world, generations=2, resume=True)
    assert 0 < first["real_steps"] < resumed["real_steps"] == counted_steps[0]  # carried over
    assert resumed["real_steps"] == straight["real_steps"]  # the same seeds, the same games
    weights = checkpoint.load_state_dict(
        checkpoint.epoch_checkpoint_dir(tmp_path / "split", "control", 2)
    )
    for name, tensor in checkpoint.load_state_dict(path).items():
        assert torch.equal(weights[name], tensor), name


def test_eval_control_scores_the_ceiling_like_any_agent(
    doom_world: Path, tmp_path: Path, one_torch_thread
) -> None:
    out = tmp_path / "run"
    args = ["train", "control", "--checkpoints", str(doom_world), "--out", str(out)]
    args += ["--real", "doom:take_cover", "--generations", "1", "--population", "2"]
    args += ["--rollouts", "1", "--max-steps", "20", "--eval-episodes", "2", "--hold", "3"]
    assert main(args + ["--device", "cpu"]) == 0
    best = checkpoint.best_model_dir(out, "control")
    validation = json.loads((best / "training_info.json").read_text())["metrics"]
    report = tmp_path / "eval"
    args = ["eval", "control", "--agent", str(best), "--checkpoints", str(doom_world)]
    args += ["--policies", "agent", "--episodes", "2", "--dream-episodes", "0"]
    args += ["--max-steps", "20", "--seed", str(VALIDATION_SEED), "--out", str(report)]
    assert main(args) == 0
    agent = json.loads((report / "eval.json").read_text())["real"]["agent"]
    # The same validation seeds played one game at a time by Agent.act: the same returns.
    assert agent["return_mean"] == pytest.approx(validation["heldout_return_mean"])
    assert agent["length_mean"] == pytest.approx(validation["heldout_length_mean"])


def test_bad_real_settings_name_the_flag() -> None:
    assert real_scenario("doom:take_cover", "take_cover") == "take_cover"
    with pytest.raises(ValueError, match="--real must look like doom:SCENARIO"):
        real_scenario("take_cover", None)
    assert training_seeds(300_000, 3, 2) == [300_004, 300_005]
    with pytest.raises(ValueError, match="--real-seed"):
        check_real_config(ControlTrainConfig(real="doom:take_cover", real_seed=599_990, rollouts=2))
    with pytest.raises(ValueError, match="--eval-episodes"):
        check_real_config(ControlTrainConfig(real="doom:take_cover", eval_episodes=101))
    with pytest.raises(ValueError, match="--real-games"):
        check_real_config(ControlTrainConfig(real="doom:take_cover", real_games=0))
