"""What a checkpoint was started from, and the chain of runs behind it (its lineage).

A training run that starts from another checkpoint (``--resume-from``,
``--distill-from``, ``--init-from``) records it as ``"started_from"`` in its
``training_info.json``: the folder, the flag and the folder's fingerprint at the
start. :func:`lineage_of` walks back from there: the start's own lineage, then
the start itself, so a checkpoint copied into a root over its own parent (as a
distilled world replaces the world it learnt from) still names every run that
made it. A step that was itself published from an ``elworld loop`` round keeps
the loop's record (``"loop"``), whose command remakes it.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from elworld.checkpoint.layout import CheckpointError
from elworld.checkpoint.loading import read_training_info
from elworld.checkpoint.store import checkpoint_fingerprint

# The flags by which a training command names the checkpoint it starts from.
START_FLAGS = ("--distill-from", "--resume-from", "--init-from")


def start_record(path: str | os.PathLike, flag: str) -> dict[str, str]:
    """The ``"started_from"`` entry of a run that starts from checkpoint ``path`` via ``flag``."""
    if flag not in START_FLAGS:
        raise ValueError(f"unknown start flag {flag!r}; expected one of {START_FLAGS}")
    return {"flag": flag, "checkpoint": str(path), "fingerprint": checkpoint_fingerprint(path)}


def started_from(info: dict[str, Any]) -> tuple[Path, str | None] | None:
    """The checkpoint a run started from and its fingerprint then (``None`` when the run did
    not record one: older runs), from ``info["started_from"]`` or else the run's command;
    ``None`` for a run from scratch."""
    record = info.get("started_from")
    if record:
        return Path(record["checkpoint"]), record.get("fingerprint")
    words = shlex.split(info.get("command") or "")
    for flag in START_FLAGS:
        if flag in words[:-1]:
            return Path(words[words.index(flag) + 1]), None
    return None


def lineage_step(folder: str | os.PathLike, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """One lineage entry for ``folder``: its command, where it was and its fingerprint, the
    loop that published it, if one did, and the recording sets of its data, if published."""
    info = read_training_info(folder) if info is None else info
    step = {"command": info.get("command"), "checkpoint": str(folder),
            "fingerprint": checkpoint_fingerprint(folder)}  # fmt: skip
    if info.get("loop"):
        step["loop"] = info["loop"]
    if info.get("recordings_mixed"):
        step["recordings"] = info["recordings_mixed"]
    return step


def lineage_of(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The runs behind checkpoint ``folder``, oldest first, excluding ``folder``'s own run.

    Raises ``CheckpointError`` when the start is gone or no longer the checkpoint the
    run started from (its fingerprint changed), so a lineage is never guessed.
    """
    folder = Path(folder)
    info = read_training_info(folder)
    start = started_from(info)
    if start is None:
        return list(info.get("lineage") or [])
    parent, expected = start
    if not (parent / "config.json").is_file():
        raise CheckpointError(
            f"{folder} was started from {parent}, which is no longer a checkpoint: "
            "its lineage cannot be read"
        )
    found = checkpoint_fingerprint(parent)
    parent_info = read_training_info(parent)
    published_from = (parent_info.get("published") or {}).get("from")
    if (published_from and Path(published_from).resolve() == folder.resolve()) or (
        expected is None and found == checkpoint_fingerprint(folder)
    ):
        raise CheckpointError(
            f"{folder} was started from {parent}, which now holds this very model (published "
            "already): its lineage cannot be read from there"
        )
    if expected is not None and found != expected:
        raise CheckpointError(
            f"{folder} was started from {parent} (fingerprint {expected[:12]}), which now holds "
            f"another model ({found[:12]}): its lineage cannot be read"
        )
    return [*(parent_info.get("lineage") or []), lineage_step(parent, parent_info)]


def lineage_markdown(lineage: list[dict[str, Any]]) -> list[str]:
    """Model-card lines for ``lineage``: one numbered line per run, with its loop if any."""
    lines = []
    for i, step in enumerate(lineage, 1):
        line = (f"{i}. `{step['command']}` (then {step['checkpoint']}, fingerprint "
                f"{str(step.get('fingerprint'))[:12]})")  # fmt: skip
        if step.get("loop"):
            loop = step["loop"]
            line += f", round {loop['round']} of `{loop['command']}`"
        lines.append(line)
    return lines


def recordings_markdown(entries: list[dict[str, Any]], run: str = "") -> list[str]:
    """Model-card table rows (folder, policy, episodes, steps, seeds) for recording sets
    (``elworld.data.episodes.recording_sets``); ``run`` prefixes the folder (e.g. ``"2: "``)."""
    rows = []
    for entry in entries:
        seeds = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in entry["seeds"]) or "-"
        policy = entry["policy"]
        if "explore" in entry:
            policy += f" (agent `{entry.get('agent')}`, explore {entry['explore']})"
        rows.append(
            f"| {run}{entry['folder']} | {policy} | {entry['episodes']} | {entry['steps']} | {seeds} |"
        )
    return rows
