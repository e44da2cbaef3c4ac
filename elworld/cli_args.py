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
