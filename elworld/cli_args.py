"""Command-line pieces every stage shares: how a run is recorded and the common run flags.

The bottom floor of the import plan (``docs/ARCHITECTURE.md``): any command's
module may use it; it imports nothing of ElWorld.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def command_line() -> str:
    """This process's command line, as recorded in training info and reports.

    ``elworld ...`` under the console script, else ``sys.argv`` joined
    (``torchrun``, ``python -m``, a test).
    """
    argv = sys.argv
    if argv and Path(argv[0]).name == "elworld":
        return "elworld " + shlex.join(argv[1:])
    return shlex.join(argv)


# The precisions a run may ask for; elworld.model.common.PRECISIONS (tests keep them equal).
PRECISION_CHOICES = ("auto", "bf16", "fp32")


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def add_dream_pass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, precision: bool = True
) -> None:
    """``--guidance`` and (unless ``precision=False``) ``--precision``: how the memory model's
    passes of each dream step run, shared by every command that steps a dream."""
    parser.add_argument(
        "--guidance", type=positive_float, default=None,
        help="classifier-free guidance on the keys: 1 runs one memory pass per dream step, a "
        "scale > 1 a pair (conditional and unconditional, batched; needs a memory model trained "
        "with --action-dropout) (default: the world's recommended scale, from its memory "
        "checkpoint's training_info.json, else 1)",
    )  # fmt: skip
    if precision:
        parser.add_argument(
            "--precision", choices=PRECISION_CHOICES, default="auto",
            help="the memory model's passes: bf16 autocast, fp32, or auto: bf16 where the device "
            "runs it natively (AVX-512 BF16/AMX CPU, CUDA), else fp32 (default: %(default)s)",
        )  # fmt: skip


def add_small_model_arguments(parser: argparse.ArgumentParser, *, epochs: int) -> None:
    """``--out``, ``--epochs``, ``--time-limit``, ``--seed`` and ``--device``: the run
    options of the small single-process trainers (``elworld train idm`` / ``end``)."""
    parser.add_argument(
        "--out", type=Path, default=Path("checkpoints"),
        help="checkpoint root (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--epochs", type=int, default=epochs, help="epochs to train (default: %(default)s)"
    )
    parser.add_argument(
        "--time-limit", type=float, default=None, metavar="MIN",
        help="stop after the epoch in which MIN minutes of training have passed",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=0,
        help="seed for initialisation, data order and the split (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--device", default="auto", help="auto | cpu | cuda[:N] (default: %(default)s)"
    )


def add_fit_arguments(
    parser: argparse.ArgumentParser,
    *,
    max_episodes_help: str,
    val_fraction: float,
    val_help: str,
    batch_size: int,
    batch_unit: str,
    lr: float,
    optimizer: str,
) -> None:
    """``--max-episodes``, ``--val-fraction``, ``--batch-size`` and ``--lr``: the data and
    optimiser flags of the small trainers (``elworld train idm`` / ``end``)."""
    parser.add_argument(
        "--max-episodes", type=int, default=None, metavar="N", help=max_episodes_help
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=val_fraction,
        help=f"{val_help} (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=batch_size,
        help=f"{batch_unit} per step (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--lr", type=float, default=lr, help=f"{optimizer} learning rate (default: %(default)s)"
    )
