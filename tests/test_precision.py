"""The precision default: bf16 only where the device runs it natively."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from elworld.model.common import PRECISIONS, autocast, choose_precision, cpu_bf16_support

NATIVE = (True, "CPU capability AVX512 with avx512_bf16")
EMULATED = (False, "CPU capability AVX2 without avx512_bf16 or amx_tile (bf16 is emulated)")


def test_auto_takes_bf16_on_a_cpu_with_native_bf16() -> None:
    choice = choose_precision("auto", "cpu", cpu_bf16=NATIVE)
    assert choice.precision == "bf16"
    assert "avx512_bf16" in choice.reason


def test_auto_takes_fp32_on_an_avx2_only_cpu() -> None:
    choice = choose_precision("auto", "cpu", cpu_bf16=EMULATED)
    assert choice.precision == "fp32"
    assert "emulated" in choice.reason


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_follows_its_bf16_support(native: bool, expected: str) -> None:
    assert choose_precision("auto", "cuda", cuda_bf16=native).precision == expected


@pytest.mark.parametrize("asked", ["bf16", "fp32"])
@pytest.mark.parametrize("cpu", [NATIVE, EMULATED])
def test_an_explicit_precision_always_wins(asked: str, cpu: tuple[bool, str]) -> None:
    assert choose_precision(asked, "cpu", cpu_bf16=cpu).precision == asked


def test_auto_is_fp32_where_autocast_has_no_bf16() -> None:
    assert choose_precision("auto", "meta").precision == "fp32"


def test_an_unknown_precision_names_the_choices() -> None:
    with pytest.raises(ValueError, match="precision must be one of .*'auto'.*got 'fp16'"):
        choose_precision("fp16", "cpu")
    assert "auto" in PRECISIONS


def test_this_cpus_probe_agrees_with_its_cpuinfo_flags() -> None:
    native, reason = cpu_bf16_support()
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        pytest.skip("no /proc/cpuinfo to compare the probe with")
    assert native == bool({"avx512_bf16", "amx_tile"} & flags), reason


def test_auto_autocast_runs_as_the_choice_says(caplog: pytest.LogCaptureFixture) -> None:
    expected = choose_precision("auto", "cpu").precision
    layer = torch.nn.Linear(4, 4)
    with caplog.at_level(logging.INFO), autocast("cpu", "auto"):
        out = layer(torch.ones(2, 4))
    assert out.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)


def test_the_cli_precision_choices_are_the_models() -> None:
    from elworld.cli_args import PRECISION_CHOICES
    from elworld.model.common import PRECISIONS

    assert PRECISION_CHOICES == PRECISIONS


@pytest.mark.parametrize(
    "command",
    [["eval", "--vision", "v", "--data", "d"], ["eval", "control"], ["play"], ["rollout"],
     ["demo"], ["keys-figure"], ["train", "control"]],
)  # fmt: skip
def test_every_dream_command_refuses_a_guidance_that_is_not_positive(
    command: list[str], capsys: pytest.CaptureFixture
) -> None:
    from elworld.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--guidance", "0"])
    assert exit_info.value.code == 2
    assert "--guidance: expected a number > 0, got 0" in capsys.readouterr().err
