"""``elworld eval``: the metrics' definitions and the report it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from elworld.cli import main
from elworld.evaluate import PSNR_CAP, precision_recall, psnr, ssim

from conftest import sliding_square_clip


def test_psnr_is_capped_and_ordered() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    noisy = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(a.astype(int) + rng.integers(-60, 61, a.shape), 0, 255).astype(np.uint8)
    assert np.all(psnr(a, a) == PSNR_CAP)
    assert np.all(psnr(a, noisy) > psnr(a, noisier))
    one = np.zeros((1, 4, 4, 3), np.uint8)
    assert psnr(one, one + 1)[0] == pytest.approx(20 * math.log10(255), abs=1e-9)  # MSE 1


def test_ssim_is_one_for_identical_frames_and_lower_for_noise() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    noisy = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(a.astype(int) + rng.integers(-80, 81, a.shape), 0, 255).astype(np.uint8)
    assert np.allclose(ssim(a, a), 1.0)
    assert np.all(ssim(a, noisier) < ssim(a, noisy)) and np.all(ssim(a, noisy) < 1.0)


def test_precision_recall_counts() -> None:
    predicted = np.array([1, 1, 0, 0, 1], bool)
    actual = np.array([1, 0, 0, 1, 1], bool)
    result = precision_recall(predicted, actual)
    assert result["precision"] == pytest.approx(2 / 3) and result["recall"] == pytest.approx(2 / 3)
    assert math.isnan(precision_recall(np.zeros(3, bool), np.zeros(3, bool))["precision"])


def _episodes(directory: Path, count: int = 2, frames: int = 40) -> Path:
    directory.mkdir()
    clip = sliding_square_clip(frames)
    for i in range(count):
        act = np.zeros((frames, 22), np.uint8)
        act[:, 4] = 1  # right held: the square slides
        done = np.zeros(frames, np.uint8)
        done[-1] = 1
        np.savez(
            directory / f"ep_{i}.npz", obs=clip, act=act, rew=np.ones(frames, np.float32), done=done
        )
    return directory


def test_eval_writes_json_markdown_and_plot(tiny_checkpoints: Path, tmp_path: Path) -> None:
    data = _episodes(tmp_path / "heldout")
    out = tmp_path / "report"
    args = ["eval", "--vision", str(tiny_checkpoints / "vision/best_model"), "--memory",
            str(tiny_checkpoints / "memory/best_model"), "--data", str(data), "--out", str(out),
            "--horizons", "1,4,16", "--start-stride", "4", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    results = json.loads((out / "eval.json").read_text())
    assert results["episodes"] == 2 and results["vision"]["frames"] == 80
    rollout = results["memory"]["rollout_psnr"]
    assert set(rollout) == {"1", "4", "16"}
    # The clip moves every frame, so the copy-last baseline falls with the horizon.
    assert rollout["1"]["copy_last"] > rollout["16"]["copy_last"]
    assert all(0 < row["dream"] <= PSNR_CAP and row["starts"] > 0 for row in rollout.values())
    control = results["memory"]["controllability"]
    assert control["delta_psnr"] == pytest.approx(
        control["true_actions_psnr"] - control["random_actions_psnr"]
    )
    assert {"precision", "recall"} <= set(results["memory"]["end_head"])
    assert 0.0 <= results["memory"]["next_token_acc"] <= 1.0
    assert "| horizon | dream PSNR | copy-last PSNR" in (out / "eval.md").read_text()
    assert (out / "psnr_vs_horizon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_rejects_a_memory_model_that_does_not_fit(
    tiny_checkpoints: Path, tmp_path: Path, capsys
) -> None:
    from elworld.checkpoint import save_checkpoint
    from elworld.model.memory import MemoryConfig, MemoryModel

    config = MemoryConfig(
        vocab_size=32, grid_height=8, grid_width=8, n_layer=1, n_head=2, n_embd=16
    )
    other = save_checkpoint(
        tmp_path / "memory" / "best_model",
        model=MemoryModel(config),
        config=config,
        training_info={},
    )
    args = ["eval", "--vision", str(tiny_checkpoints / "vision/best_model"), "--memory", str(other),
            "--data", str(_episodes(tmp_path / "d")), "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(args) == 1
    assert "do not fit: memory vocab_size 32 != vision codebook_size 16" in capsys.readouterr().err
