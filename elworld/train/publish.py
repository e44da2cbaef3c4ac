"""``elworld publish``: copy trained checkpoints into a checkpoint root, with their lineage.

A run's ``best_model`` (say a world distilled with ``elworld train memory
--distill-from``, or an agent retrained with ``elworld train control
--init-from``) becomes ``ROOT/<kind>/best_model``. Each folder is swapped in
atomically, and its ``training_info.json`` and model card gain what made it:

- ``"lineage"``: the runs behind it, oldest first (``elworld.checkpoint.lineage``),
  read before anything is replaced, so a checkpoint that replaces its own parent
  still names it;
- ``"published"``: where it was copied from and this command;
- ``"recordings_mixed"``: the recording sets its data held (folder, policy, seeds,
  episodes, steps), from the episodes' sidecars; each lineage run's own under its
  ``"recordings"`` (as published, else from its ``--data`` folder if still here), so a
  model card names every recording set its weights learnt from.

Every lineage is read and checked before the first copy, so a refused folder
leaves the root as it was.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
from pathlib import Path
from typing import Any

from elworld import checkpoint
from elworld.checkpoint.lineage import lineage_markdown, lineage_of, recordings_markdown
from elworld.data.episodes import recording_sets

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Copy trained checkpoints (each a folder with config.json, model.safetensors and
training_info.json, e.g. runs/distill/memory/best_model) into a checkpoint root
as ROOT/<kind>/best_model, the kind read from each folder's config.json. Each
copy records its lineage (every run behind it, read from the run it started
from: --resume-from, --distill-from or --init-from) and the recording sets of
its data, in training_info.json and its model card. At most one folder per kind.
"""


def _kind(folder: Path) -> str:
    config = folder / checkpoint.CONFIG_FILE
    if not config.is_file():
        raise checkpoint.CheckpointError(f"{folder}: no {checkpoint.CONFIG_FILE}, not a checkpoint")
    kind = json.loads(config.read_text()).get("kind")
    if kind not in checkpoint.KINDS:
        raise checkpoint.CheckpointError(
            f"{config}: kind {kind!r} is not one of {', '.join(checkpoint.KINDS)}"
        )
    return kind


def _data_of(command: str | None) -> str | None:
    """The ``--data`` folder of a run's command, if it named one."""
    words = shlex.split(command or "")
    return words[words.index("--data") + 1] if "--data" in words[:-1] else None


def _with_recordings(lineage: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``lineage`` with each run's recording sets: as it was published, else read from its
    ``--data`` folder where that is still here; runs with neither stay without."""
    steps = []
    for step in lineage:
        data = _data_of(step.get("command"))
        if "recordings" not in step and data and Path(data).is_dir():
            step = {**step, "recordings": recording_sets([data])}
        steps.append(step)
    return steps


def _lineage_recordings(lineage: list[dict[str, Any]]) -> list[str]:
    """Card lines naming the recordings behind every run of the lineage (what its weights
    learnt from before this run), or saying which run's recordings are not known here."""
    lines = ["", "Recordings behind its lineage (the runs above, by number):", "",
             "| run: folder | policy | episodes | steps | seeds |", "|---|---|---|---|---|"]  # fmt: skip
    unknown = []
    for i, step in enumerate(lineage, 1):
        if step.get("recordings"):
            lines += recordings_markdown(step["recordings"], f"{i}: ")
        else:
            data = _data_of(step.get("command"))
            unknown.append(f"run {i} (`--data {data}`: not here)" if data else f"run {i}")
    if unknown:
        lines += ["", f"Not known here: {'; '.join(unknown)}."]
    return lines


def _card_section(command: str, lineage: list[dict[str, Any]],
                  recordings: list[dict[str, Any]]) -> str:  # fmt: skip
    lines = ["", "## Published by `elworld publish`", "", f"`{command}`", ""]
    if lineage:
        lines += ["Lineage (oldest first; each run started from the one before, and this "
                  "checkpoint's own run from the last):", "", *lineage_markdown(lineage)]  # fmt: skip
    else:
        lines += ["Trained from scratch: no lineage."]
    if recordings:
        lines += ["", "Recordings in its data:", "",
                  "| folder | policy | episodes | steps | seeds |", "|---|---|---|---|---|",
                  *recordings_markdown(recordings)]  # fmt: skip
    if lineage:
        lines += _lineage_recordings(lineage)
    return "\n".join(lines) + "\n"


def publish_checkpoints(sources: list[str | Path], root: str | Path, command: str) -> list[Path]:
    """Copy each of ``sources`` to ``root/<kind>/best_model`` with its lineage (see the module
    docstring); return the folders written."""
    root = Path(root)
    plans = []
    kinds: dict[str, Path] = {}
    for source in map(Path, sources):
        if not source.is_dir():
            raise FileNotFoundError(f"{source}: no such checkpoint folder")
        kind = _kind(source)
        if kind in kinds:
            raise ValueError(f"{kinds[kind]} and {source} are both {kind} checkpoints: "
                             "publish one per kind")  # fmt: skip
        kinds[kind] = source
        dst = checkpoint.best_model_dir(root, kind)
        if dst.resolve() == source.resolve():
            raise ValueError(f"{source} is already {dst}")
        info = checkpoint.read_training_info(source)
        lineage = _with_recordings(lineage_of(source))  # before any copy: the parent may go
        data = info.get("data")
        recordings = recording_sets([data]) if data and Path(data).is_dir() else []
        info.update(lineage=lineage, published={"from": str(source), "command": command})
        if recordings:
            info["recordings_mixed"] = recordings
        card_file = source / checkpoint.README_FILE
        card = card_file.read_text() if card_file.is_file() else f"# {kind} checkpoint\n"
        plans.append((source, dst, info, card + _card_section(command, lineage, recordings)))
    written = []
    for source, dst, info, card in plans:
        checkpoint.copy_checkpoint(source, dst, training_info=info, readme=card)
        logger.info("published %s -> %s (%d runs in its lineage)", source, dst,
                    len(info["lineage"]))  # fmt: skip
        written.append(dst)
    return written


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``elworld publish FOLDER... --to ROOT``."""
    parser = subparsers.add_parser(
        "publish",
        help="copy trained checkpoints into a checkpoint root, recording their lineage",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folders", type=Path, nargs="+", metavar="FOLDER",
                        help="trained checkpoint folders (e.g. runs/distill/memory/best_model)")  # fmt: skip
    parser.add_argument("--to", type=Path, required=True, metavar="ROOT",
                        help="the checkpoint root to publish into (e.g. checkpoints)")  # fmt: skip
    parser.set_defaults(func=_run_publish)


def _run_publish(args: argparse.Namespace) -> int:
    command = shlex.join(["elworld", "publish", *map(str, args.folders), "--to", str(args.to)])
    publish_checkpoints(args.folders, args.to, command)
    return 0
