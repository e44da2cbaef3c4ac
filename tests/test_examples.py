"""Smoke tests: the examples run end to end on the tiny test checkpoints."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.usefixtures("one_torch_thread")
def test_random_agent_runs(tiny_checkpoints: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main = runpy.run_path(str(EXAMPLES / "random_agent.py"))["main"]
    argv = ["--checkpoints", str(tiny_checkpoints), "--steps", "12", "--max-episode-steps", "5"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("episode ") >= 2 and "FPS:" in out


@pytest.mark.usefixtures("one_torch_thread")
def test_ppo_in_dream_runs(tiny_checkpoints: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("stable_baselines3", reason="the optional 'rl' extra is not installed")
    main = runpy.run_path(str(EXAMPLES / "ppo_in_dream.py"))["main"]
    argv = ["--checkpoints", str(tiny_checkpoints), "--total-timesteps", "64", "--num-envs", "2"]
    argv += [
        "--n-steps",
        "32",
        "--batch-size",
        "32",
        "--max-episode-steps",
        "8",
        "--eval-episodes",
        "1",
    ]
    assert main(argv) == 0
    assert "mean return after 64 steps" in capsys.readouterr().out


@pytest.mark.usefixtures("one_torch_thread")
def test_ppo_dream_vecenv_runs(tiny_checkpoints: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("stable_baselines3", reason="the optional 'rl' extra is not installed")
    main = runpy.run_path(str(EXAMPLES / "ppo_dream_vecenv.py"))["main"]
    argv = ["--checkpoints", str(tiny_checkpoints), "--total-timesteps", "128"]
    argv += ["--num-envs", "4", "--n-steps", "16", "--batch-size", "32", "--n-epochs", "1"]
    argv += ["--max-episode-steps", "8", "--eval-episodes", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "mean return after 128 steps" in out and "(4 dreams)" in out
