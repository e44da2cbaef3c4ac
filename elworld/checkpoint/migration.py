"""Moving checkpoints from the old flat layout into ``ROOT/<kind>/``.

Also the ``elworld migrate-checkpoints`` subcommand (:func:`register`) and the
standalone ``migrate_checkpoints.py`` script (:func:`migrate_main`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from elworld.atomic import fsync_dir
from elworld.checkpoint.layout import (
    _EPOCH_RE,
    BEST_MODEL,
    CONFIG_FILE,
    KINDS,
    CheckpointError,
    best_model_dir,
)
from elworld.checkpoint.publish import recover_interrupted

logger = logging.getLogger(__name__)


def _flat_kind(folder: Path) -> str:
    """The kind of an old flat ``best_model`` folder: its config's ``kind``, else vision."""
    try:
        kind = json.loads((folder / CONFIG_FILE).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    return kind if kind in KINDS else "vision"


def migrate_checkpoints(root: str | os.PathLike, dry_run: bool = False) -> list[tuple[Path, Path]]:
    """Move checkpoints from the old flat layout into ``ROOT/<kind>/``.

    ``ROOT/best_model`` goes to ``ROOT/vision/best_model`` (or the kind its
    ``config.json`` names) and ``ROOT/<kind>_model_checkpoint_N`` to
    ``ROOT/<kind>/``. An existing destination is never overwritten (the source is
    left in place with a warning). Returns the ``(src, dst)`` moves made, or
    planned when ``dry_run``.
    """
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint root {root} does not exist or is not a folder")
    if not dry_run:
        recover_interrupted(root)
    moves = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir():
            continue
        match = _EPOCH_RE.match(entry.name)
        if match:
            dst = root / match.group(1) / entry.name
        elif entry.name == BEST_MODEL:
            dst = best_model_dir(root, _flat_kind(entry))
        else:
            continue
        if dst.exists():
            logger.warning("skipping %s: %s already exists (left both in place)", entry, dst)
            continue
        if not dry_run:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.rename(entry, dst)
            fsync_dir(dst.parent)
        moves.append((entry, dst))
    if moves and not dry_run:
        fsync_dir(root)
    return moves


def _add_migrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "root",
        nargs="?",
        default="checkpoints",
        help="checkpoint root holding the old flat layout (default: %(default)s)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="only report what would move; change nothing"
    )


_MIGRATE_DESCRIPTION = (
    "Move checkpoints saved in the old flat layout into one folder per model kind: "
    "ROOT/best_model -> ROOT/vision/best_model and ROOT/<kind>_model_checkpoint_N -> "
    "ROOT/<kind>/<kind>_model_checkpoint_N. Safe to run twice; never overwrites."
)


def _run_migrate(args: argparse.Namespace) -> int:
    try:
        moves = migrate_checkpoints(args.root, dry_run=args.dry_run)
    except (CheckpointError, OSError) as error:
        logger.error("%s", error)
        return 1
    verb = "would move" if args.dry_run else "moved"
    for src, dst in moves:
        logger.info("%s %s -> %s", verb, src, dst)
    if not moves:
        logger.info("nothing to migrate in %s", args.root)
    elif args.dry_run:
        logger.info("dry run: %d folder(s) would move; nothing changed", len(moves))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``elworld migrate-checkpoints [ROOT] [--dry-run]``."""
    parser = subparsers.add_parser(
        "migrate-checkpoints",
        help="move old flat-layout checkpoints into vision/, memory/, control/",
        description=_MIGRATE_DESCRIPTION,
    )
    _add_migrate_arguments(parser)
    parser.set_defaults(func=_run_migrate)


def migrate_main(argv: list[str] | None = None) -> int:
    """Entry point of the standalone ``migrate_checkpoints.py`` script."""
    parser = argparse.ArgumentParser(
        prog="migrate_checkpoints.py", description=_MIGRATE_DESCRIPTION
    )
    _add_migrate_arguments(parser)
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    return _run_migrate(args)
