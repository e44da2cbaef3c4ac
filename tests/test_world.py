"""The dream core's settings and loading (``elworld.world``): one check, one rule, clear errors."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch

from elworld.checkpoint import CheckpointError
from elworld.world.dream import DreamWorld
from elworld.world.settings import CPU_STEP_CHUNK, SamplingSettings, resolve_guidance
from elworld_gym.dream_env import DreamEnv


@pytest.mark.parametrize("name", ["temperature", "guidance"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_sampling_settings_refuse_nan_and_bad_numbers(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
        SamplingSettings(**{name: value})


def test_the_env_refuses_nan_temperature_and_guidance(tiny_checkpoints: Path) -> None:
    for kwargs in ({"temperature": float("nan")}, {"guidance": float("nan")}):
        with pytest.raises(ValueError, match=f"{next(iter(kwargs))} must be a finite number"):
            DreamEnv(tiny_checkpoints, device="cpu", **kwargs)


def test_a_live_temperature_change_is_checked_too(tiny_checkpoints: Path) -> None:
    world = DreamWorld.from_checkpoints(tiny_checkpoints, device="cpu", temperature=0.5)
    world.temperature = 0.0
    assert world.settings.temperature == 0.0 and world.temperature == 0.0
    with pytest.raises(ValueError, match="temperature"):
        world.temperature = float("nan")


def test_settings_resolve_once_for_the_world(tiny_checkpoints: Path) -> None:
    settings = SamplingSettings(top_k=3, precision="fp32")
    world = DreamWorld.from_checkpoints(
        tiny_checkpoints, num_envs=5, device="cpu", settings=settings
    )
    assert world.settings == SamplingSettings(
        top_k=3, guidance=1.0, precision="fp32", step_chunk=CPU_STEP_CHUNK
    )
    on_gpu = settings.resolve(torch.device("meta"), num_envs=5)
    assert on_gpu.step_chunk == 5 and on_gpu.precision == "fp32"
    # keywords override a given settings object
    world = DreamWorld.from_checkpoints(
        tiny_checkpoints, device="cpu", settings=settings, top_k=None
    )
    assert world.top_k is None and world.precision == "fp32"


def test_guidance_none_is_the_world_recommendation(tiny_checkpoints: Path) -> None:
    assert resolve_guidance(None, None) == 1.0
    assert resolve_guidance(None, tiny_checkpoints / "memory" / "best_model") == 1.0
    assert resolve_guidance(2.0, tiny_checkpoints / "memory" / "best_model") == 2.0


def _copy_world(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_a_huge_config_is_refused_from_the_weights_header(
    tiny_checkpoints: Path, tmp_path: Path
) -> None:
    """A shared world is untrusted: config.json is checked against the safetensors header
    before anything is allocated (this config would need terabytes)."""
    root = _copy_world(tiny_checkpoints, tmp_path / "world")
    config_file = root / "memory" / "best_model" / "config.json"
    config = json.loads(config_file.read_text())
    config.update(n_embd=1048576, n_layer=64)  # the issue had 4096 layers: refused too, slower
    config_file.write_text(json.dumps(config))
    started = time.monotonic()
    with pytest.raises(CheckpointError, match="config.json") as info:
        DreamWorld.from_checkpoints(root, device="cpu")
    assert "checked before building" in str(info.value) and str(config_file) in str(info.value)
    assert time.monotonic() - started < 60


def test_a_corrupt_start_bank_names_the_file(tiny_checkpoints: Path, tmp_path: Path) -> None:
    root = _copy_world(tiny_checkpoints, tmp_path / "world")
    (root / "start_frames.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="start_frames.npz") as info:
        DreamEnv(root, device="cpu")
    assert str(root / "start_frames.npz") in str(info.value)
