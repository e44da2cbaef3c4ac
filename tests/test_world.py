"""The dream core's settings and loading (``elworld.world``): one check, one rule, clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

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
