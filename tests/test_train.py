"""The training CLI end to end on tiny data: checkpoints, best model, --resume, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elworld import checkpoint
from elworld.cli import main

TINY_VISION = ["--image-size", "32x32", "--width", "8", "--res-blocks", "1", "--code-dim", "8",
               "--codebook-size", "16", "--downsamples", "2"]  # fmt: skip
TINY_RUN = ["--batch-size", "4", "--steps-per-epoch", "3", "--warmup-steps", "2", "--device", "cpu"]


def _write_episodes(directory: Path, count: int = 4, frames: int = 12, seed: int = 0) -> Path:
    """Episodes of a bright square that moves right while key 'right' (index 4) is held."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for episode in range(count):
        obs = np.zeros((frames, 48, 64, 3), dtype=np.uint8)
        act = np.zeros((frames, 22), dtype=np.uint8)
        x = int(rng.integers(0, 40))
        for t in range(frames):
            act[t, 4] = rng.integers(0, 2)
            obs[t, 16:32, x : x + 16] = (200, 80, 40)
            x = min(x + 4 * int(act[t, 4]), 47)
        done = np.zeros(frames, dtype=np.uint8)
        done[-1] = 1
        np.savez(
            directory / f"episode_{episode:04d}.npz",
            obs=obs,
            act=act,
            rew=np.ones(frames, np.float32),
            done=done,
        )
    return directory


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_episodes(tmp_path_factory.mktemp("data"))


def _train_tiny_vision(data_dir: Path, out: Path, *extra: str) -> Path:
    """Train a tiny vision model for one epoch; return its best_model folder."""
    args = ["train", "vision", "--data", str(data_dir), "--out", str(out), "--epochs", "1"]
    assert main([*args, *TINY_VISION, *TINY_RUN, *extra]) == 0
    return checkpoint.best_model_dir(out, "vision")


def _info(path: Path) -> dict:
    return json.loads((path / "training_info.json").read_text())


def test_train_vision_writes_epoch_and_best_checkpoints(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    assert (
        main(
            [
                "train",
                "vision",
                "--data",
                str(data_dir),
                "--out",
                str(out),
                "--epochs",
                "2",
                *TINY_VISION,
                *TINY_RUN,
            ]
        )
        == 0
    )
    epochs = [epoch for epoch, _ in checkpoint.list_epoch_checkpoints(out, "vision")]
    assert epochs == [1, 2]
    best = checkpoint.best_model_dir(out, "vision")
    for name in (
        "model.safetensors",
        "config.json",
        "training_info.json",
        "README.md",
        "optimizer.pth",
        "scheduler.pth",
    ):
        assert (best / name).is_file(), name
    info = _info(best)
    assert info["best_val_loss"] == pytest.approx(
        min(
            _info(p)["metrics"]["val_loss"]
            for _, p in checkpoint.list_epoch_checkpoints(out, "vision")
        )
    )
    assert "val_psnr" in info["metrics"] and "train_perplexity" in info["metrics"]


def test_resume_reproduces_uninterrupted_losses(data_dir: Path, tmp_path: Path) -> None:
    args = ["train", "vision", "--data", str(data_dir), "--epochs", "3", *TINY_VISION, *TINY_RUN]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    # Same run stopped after its first epoch (time limit 0), then resumed to the end.
    assert main([*args, "--out", str(tmp_path / "split"), "--time-limit", "0"]) == 0
    assert [e for e, _ in checkpoint.list_epoch_checkpoints(tmp_path / "split", "vision")] == [1]
    assert main([*args, "--out", str(tmp_path / "split"), "--resume"]) == 0
    for epoch in (2, 3):
        full = _info(checkpoint.epoch_checkpoint_dir(tmp_path / "full", "vision", epoch))["metrics"]
        split = _info(checkpoint.epoch_checkpoint_dir(tmp_path / "split", "vision", epoch))[
            "metrics"
        ]
        assert split["train_loss"] == pytest.approx(full["train_loss"], rel=1e-5, abs=1e-7)
        assert split["val_loss"] == pytest.approx(full["val_loss"], rel=1e-5, abs=1e-7)


def test_resume_without_checkpoint_is_a_clear_error(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["train", "vision", "--data", str(data_dir), "--out", str(tmp_path), "--resume"]
    assert main([*args, *TINY_VISION, *TINY_RUN]) == 1
    assert "error: --resume: no vision epoch checkpoint under" in capsys.readouterr().err


def test_train_memory_on_vision_tokens(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    _train_tiny_vision(data_dir, out)
    vision = checkpoint.best_model_dir(out, "vision")
    memory_args = ["train", "memory", "--data", str(data_dir), "--vision", str(vision), "--out", str(out), "--epochs", "2",
                   "--n-layer", "1", "--n-head", "2", "--n-embd", "16", *TINY_RUN]  # fmt: skip
    assert main(memory_args) == 0
    best = checkpoint.best_model_dir(out, "memory")
    config = json.loads((best / "config.json").read_text())
    assert (config["vocab_size"], config["grid_height"], config["grid_width"]) == (16, 8, 8)
    info = _info(best)
    assert info["vision_fingerprint"] == checkpoint.checkpoint_fingerprint(vision)
    assert {"val_token_acc", "val_end_bce", "val_reward_mse"} <= set(info["metrics"])


def test_distill_from_starts_as_the_teacher_and_recommends_one_pass(
    data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ckpt"
    vision = _train_tiny_vision(data_dir, out)
    common = ["train", "memory", "--data", str(data_dir), "--vision", str(vision), *TINY_RUN]
    guided = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--action-dropout", "0.2"]
    assert main([*common, "--out", str(out), "--epochs", "1", *guided]) == 0
    teacher = checkpoint.best_model_dir(out, "memory")
    student_out = tmp_path / "distilled"
    assert main([*common, "--out", str(student_out), "--epochs", "1", "--lr", "0",
                 "--distill-from", str(teacher), "--distill-guidance", "3"]) == 0  # fmt: skip
    student = checkpoint.best_model_dir(student_out, "memory")
    # lr 0: the student is still the teacher, so starting from its weights is checked exactly
    assert checkpoint.load_state_dict(student).keys() == checkpoint.load_state_dict(teacher).keys()
    for name, value in checkpoint.load_state_dict(teacher).items():
        assert np.array_equal(value.numpy(), checkpoint.load_state_dict(student)[name].numpy())
    info = _info(student)
    assert info["sampling"]["guidance"] == 1.0
    assert info["sampling"]["distilled"] == {"teacher": str(teacher), "guidance": 3.0}
    assert "val_token_kl" in info["metrics"] and "val_token_ce" not in info["metrics"]
    assert checkpoint.recommended_guidance(student) == 1.0
    assert info["started_from"] == {"flag": "--distill-from", "checkpoint": str(teacher),
                                    "fingerprint": checkpoint.checkpoint_fingerprint(teacher)}  # fmt: skip

    # Continued with the mode-seeking options: the weights come from the student's epoch.
    more = tmp_path / "distilled_more"
    assert main([*common, "--out", str(more), "--epochs", "2", "--distill-from", str(teacher),
                 "--distill-guidance", "3", "--resume-from", str(student),
                 "--distill-argmax-weight", "0.5",
                 "--distill-full-mask"]) == 0  # fmt: skip
    more_info = _info(checkpoint.best_model_dir(more, "memory"))
    assert more_info["sampling"]["distilled"] == {"teacher": str(teacher), "guidance": 3.0,
                                                  "argmax_weight": 0.5, "full_mask": True}  # fmt: skip
    assert more_info["started_from"]["flag"] == "--resume-from"
    assert more_info["started_from"]["checkpoint"] == str(student)
    assert "val_argmax_ce" in more_info["metrics"]

    # Published over its own teacher, the student's lineage still names the teacher's run.
    teacher_command = _info(teacher)["command"]
    assert main(["publish", str(student), "--to", str(out)]) == 0
    published = _info(teacher)  # the same folder, now holding the student
    assert published["command"] == info["command"]
    assert [step["command"] for step in published["lineage"]] == [teacher_command]
    assert published["lineage"][0]["fingerprint"] == info["started_from"]["fingerprint"]
    card = (teacher / "README.md").read_text()
    assert f"`{teacher_command}`" in card and "## Published by `elworld publish`" in card
    assert main(["publish", str(student), "--to", str(out)]) == 1  # its start is gone now


def test_memory_with_misfit_vision_is_a_clear_error(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "ckpt"
    _train_tiny_vision(data_dir, out)
    memory_args = ["train", "memory", "--data", str(data_dir), "--vision", str(checkpoint.best_model_dir(out, "vision")),
                   "--out", str(out), "--epochs", "1", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", *TINY_RUN]  # fmt: skip
    assert main(memory_args) == 0
    # Retrain vision with a different codebook; resuming memory on it must refuse.
    other = tmp_path / "other"
    tiny_other = [a if a != "16" else "32" for a in TINY_VISION]
    assert (
        main(
            [
                "train",
                "vision",
                "--data",
                str(data_dir),
                "--out",
                str(other),
                "--epochs",
                "1",
                *tiny_other,
                *TINY_RUN,
            ]
        )
        == 0
    )
    memory_args[memory_args.index("--vision") + 1] = str(checkpoint.best_model_dir(other, "vision"))
    assert main([*memory_args, "--resume", "--epochs", "2"]) == 1
    assert "do not fit: memory vocab_size 16 != vision codebook_size 32" in capsys.readouterr().err


def test_torchrun_two_processes_gloo(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "elworld", "train", "vision", "--data", str(data_dir), "--out", str(out), "--epochs", "1",
               *TINY_VISION, *TINY_RUN]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [e for e, _ in checkpoint.list_epoch_checkpoints(out, "vision")] == [1]
    info = _info(checkpoint.best_model_dir(out, "vision"))
    assert info["world_size"] == 2


def test_compiled_memory_training_matches_eager(data_dir: Path, tmp_path: Path) -> None:
    """--compile changes speed, not what is learnt: same losses as eager (to rounding)."""
    import torch._inductor.config

    # Compiled random ops draw from another generator than eager ones; with the eager
    # fallback both runs draw the same masks, so the losses can be compared exactly.
    out = tmp_path / "ckpt"
    _train_tiny_vision(data_dir, out)
    vision = checkpoint.best_model_dir(out, "vision")
    losses = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        run = tmp_path / name
        args = ["train", "memory", "--data", str(data_dir), "--vision", str(vision), "--out", str(run),
                "--epochs", "1", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
                "--attention", "axial", "--adaln", "--precision", "fp32", *TINY_RUN, *extra]  # fmt: skip
        with torch._inductor.config.patch(fallback_random=True):
            assert main(args) == 0
        losses[name] = _info(checkpoint.best_model_dir(run, "memory"))["metrics"]["val_loss"]
        assert _info(checkpoint.best_model_dir(run, "memory"))["train_config"]["compile"] == bool(
            extra
        )
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-3)


def test_memory_resume_and_resume_from_a_best_model_reproduce_the_losses(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--resume, and --resume-from a best_model (as the bundled world ships), continue exactly."""
    vision = _train_tiny_vision(data_dir, tmp_path / "v")
    args = ["train", "memory", "--data", str(data_dir), "--vision", str(vision), "--epochs", "3",
            "--n-layer", "1", "--n-head", "2", "--n-embd", "16", *TINY_RUN]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    assert main([*args, "--out", str(tmp_path / "split"), "--time-limit", "0"]) == 0
    assert main([*args, "--out", str(tmp_path / "split"), "--resume"]) == 0
    # Only the best model of a one-epoch run travels, as in checkpoints/memory/best_model.
    assert main([*args, "--out", str(tmp_path / "one"), "--time-limit", "0"]) == 0
    bundled = tmp_path / "bundled" / "best_model"
    shutil.copytree(checkpoint.best_model_dir(tmp_path / "one", "memory"), bundled)
    shutil.rmtree(tmp_path / "one")
    info_file = bundled / checkpoint.TRAINING_INFO_FILE  # a world that recommends guidance 2
    info_file.write_text(json.dumps({**_info(bundled), "sampling": {"guidance": 2.0}}))
    assert main([*args, "--out", str(tmp_path / "continued"), "--resume-from", str(bundled)]) == 0
    for path in (checkpoint.best_model_dir(tmp_path / "continued", "memory"),
                 checkpoint.epoch_checkpoint_dir(tmp_path / "continued", "memory", 3)):  # fmt: skip
        assert _info(path)["sampling"] == {"guidance": 2.0, "inherited_from": str(bundled)}
    assert "sampling" not in _info(checkpoint.epoch_checkpoint_dir(tmp_path / "split", "memory", 3))
    assert [e for e, _ in checkpoint.list_epoch_checkpoints(tmp_path / "continued", "memory")] == [
        2, 3,
    ]  # fmt: skip
    for epoch in (2, 3):
        full = _info(checkpoint.epoch_checkpoint_dir(tmp_path / "full", "memory", epoch))["metrics"]
        for run in ("split", "continued"):
            path = checkpoint.epoch_checkpoint_dir(tmp_path / run, "memory", epoch)
            got = _info(path)["metrics"]
            assert got["train_loss"] == pytest.approx(full["train_loss"], rel=1e-5, abs=1e-7), run
            assert got["val_loss"] == pytest.approx(full["val_loss"], rel=1e-5, abs=1e-7), run
    # A folder without the training state is refused by name.
    (bundled / "optimizer.pth").unlink()
    assert main([*args, "--out", str(tmp_path / "again"), "--resume-from", str(bundled)]) == 1
    assert f"--resume-from {bundled}: no optimizer.pth there" in capsys.readouterr().err
