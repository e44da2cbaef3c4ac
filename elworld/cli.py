"""The ``elworld`` command line: one subcommand per pipeline stage.

Each stage's module exposes ``register(subparsers)``, which adds its parser and
sets ``func(args) -> int``; this module assembles them. It is the top of the
import plan (it may import every floor); the argument helpers the stages share
live in ``elworld.cli_args``, the bottom floor.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from elworld import __version__

# Modules that contribute subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "elworld.data.cli",  # data info
    "elworld.record.cli",  # collect, record
    "elworld.train.cli",  # train vision|memory
    "elworld.train.publish",  # publish
    "elworld.checkpoint.migration",  # migrate-checkpoints
    "elworld.eval.cli",  # eval
    "elworld.control.cli",  # eval control (parser "eval-control", see NESTED_COMMANDS)
    "elworld.play.cli",  # play, rollout, demo
    "elworld.play.keys_figure",  # keys-figure
    "elworld.loop.cli",  # loop
)
# Trainers that sit above train/ (CMA-ES steps the dream, elworld.world, one floor higher), so
# train/cli.py cannot import them: each module's register_train(models) adds ``elworld train X``.
UPPER_TRAINERS = ("elworld.control.cli",)  # train control
# ``elworld eval control`` has its own parser: ``eval``'s required flags keep argparse from
# nesting a subcommand under it, so main() renames the two words to the parser's name.
NESTED_COMMANDS = {("eval", "control"): "eval-control"}


def _route(argv: list[str]) -> list[str]:
    """``argv`` with a nested command (``eval control ...``) renamed to its parser's name."""
    first = next((i for i, word in enumerate(argv) if not word.startswith("-")), None)
    if first is not None and tuple(argv[first : first + 2]) in NESTED_COMMANDS:
        return [*argv[:first], NESTED_COMMANDS[tuple(argv[first : first + 2])], *argv[first + 2 :]]
    return argv


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every stage's subcommands)."""
    parser = argparse.ArgumentParser(
        prog="elworld",
        description=(
            "ElWorld turns recorded gameplay into a playable dream: record episodes, "
            "train the vision (VQ-VAE) and memory (transformer) models, evaluate them, "
            "and play or roll out the dream."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument(
        "--version",
        action="version",
        version=f"elworld {__version__}",
        help="print the version (also recorded in each checkpoint's training_info.json) and exit",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        added = importlib.import_module(name).register(subparsers)
        if name == "elworld.train.cli":
            for trainer in UPPER_TRAINERS:
                importlib.import_module(trainer).register_train(added)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``elworld`` console script."""
    parser = build_parser()
    args = parser.parse_args(_route(sys.argv[1:] if argv is None else list(argv)))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    from elworld.checkpoint import CheckpointError

    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ImportError, CheckpointError) as error:
        # A user mistake (bad file, argument or missing extra): one clear line, no traceback.
        if args.verbose:
            raise
        print(f"elworld {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
