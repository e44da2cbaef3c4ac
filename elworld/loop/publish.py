"""Publish one round of an ``elworld loop`` into a checkpoint root, with its provenance.

``publish_round`` copies round N's refit world and agent (memory, episode-end
model, start bank, control) into a root such as ``checkpoints/``, each folder
swapped in atomically, and writes into every copied ``training_info.json`` and
model card what made it:

- ``"loop"``: the loop's command (:func:`loop_command`, rebuilt from the saved
  settings, so ``elworld loop`` with it remakes the round), the round, where
  the checkpoint came from;
- ``"lineage"``: the commands that made its ancestors, oldest first: the root
  world's own training command, then each earlier round's refit;
- ``"recordings"``: every recording set the world's data mixed, read from the
  episodes' own sidecars (folder, policy, seeds, episodes, steps).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

from elworld import checkpoint
from elworld.atomic import atomic_write
from elworld.checkpoint.lineage import lineage_markdown, recordings_markdown
from elworld.data.episodes import recording_sets
from elworld.loop.rounds import STATE_FILE, LoopConfig, round_dir

logger = logging.getLogger(__name__)

PUBLISHED_KINDS = ("memory", "end", "control")
START_FRAMES = "start_frames.npz"
# LoopConfig fields that do not change what a round makes (or have no flag).
_NOT_IN_COMMAND = {"time_limit_min", "resume", "extra_control_args", "scenario"}
# Control arguments a loop may pass that choose the machine, not the recipe (recorded apart).
_MACHINE_FLAGS = {"--device", "--precision"}


def _flag(name: str) -> str:
    return "--" + {"cache_dir": "cache-dir"}.get(name, name.replace("_", "-"))


def loop_command(config: dict[str, Any], rounds: int) -> str:
    """The ``elworld loop`` command that makes ``rounds`` rounds with ``config``'s settings
    (``OUT/loop.json``'s "config"): every setting that differs from the default, plus the
    folders and ``--rounds``."""
    required = ("out", "world", "data")
    defaults = {f.name: f.default for f in fields(LoopConfig) if f.name not in required}
    extra = [w for w in config.get("extra_control_args") or [] if w.startswith("--")]
    if set(extra) - _MACHINE_FLAGS:
        raise ValueError(
            f"the loop passed control arguments {config['extra_control_args']} that "
            "`elworld loop` has no flag for: its command cannot be rebuilt"
        )
    words = ["elworld", "loop", "--out", str(config["out"]), "--world", str(config["world"]),
             "--data", str(config["data"])]  # fmt: skip
    if config.get("scenario", "take_cover") != "take_cover":
        words += ["--real", f"doom:{config['scenario']}"]
    for name, default in defaults.items():
        if name in _NOT_IN_COMMAND or name == "rounds":
            continue
        value = config.get(name, default)
        if value is not None and value != default:
            words += [_flag(name), str(value)]
    words += ["--rounds", str(rounds)]
    return " ".join(words)


def _info(folder: Path) -> dict[str, Any]:
    return json.loads((folder / checkpoint.TRAINING_INFO_FILE).read_text())


def _lineage(config: dict[str, Any], kind: str, index: int) -> list[dict[str, Any]]:
    """Ancestors of round ``index``'s ``kind``, oldest first: the starting world's own
    lineage and command, then rounds 1 .. index-1."""
    root = checkpoint.best_model_dir(config["world"], kind)
    info = _info(root)
    out = Path(config["out"])
    if (info.get("loop") or {}).get("out") == str(out):
        # The starting world now holds a round of this very loop (published into --world):
        # its own lineage still names the starting world's ancestors.
        chain = [s for s in info["lineage"] if not Path(s["checkpoint"]).is_relative_to(out)]
    else:
        chain = [*info.get("lineage", []), {"command": info.get("command"), "checkpoint": str(root),
                                            "fingerprint": checkpoint.checkpoint_fingerprint(root)}]  # fmt: skip
    for r in range(1, index):
        folder = checkpoint.best_model_dir(round_dir(out, r), kind)
        chain.append({"command": _info(folder).get("command"), "checkpoint": str(folder),
                      "fingerprint": checkpoint.checkpoint_fingerprint(folder)})  # fmt: skip
    return chain


def _card_section(loop: dict[str, Any], lineage: list[dict[str, Any]],
                  recordings: list[dict[str, Any]]) -> str:  # fmt: skip
    lines = ["", "## Made by `elworld loop`", "",
             f"Round {loop['round']} of `{loop['command']}`, copied from `{loop['from']}` by "
             f"`elworld loop --out {loop['out']} --publish {loop['round']} --to ROOT`.", "",
             "Lineage (oldest first; each resumed or started from the one before):", ""]  # fmt: skip
    lines += lineage_markdown(lineage)
    lines += ["", "Recordings in its data:", "",
              "| folder | policy | episodes | steps | seeds |", "|---|---|---|---|---|",
              *recordings_markdown(recordings)]  # fmt: skip
    return "\n".join(lines) + "\n"


def publish_round(out: str | os.PathLike, index: int, to: str | os.PathLike) -> list[Path]:
    """Copy round ``index`` of the loop in ``out`` into the checkpoint root ``to`` (see the
    module docstring); return the folders and files written."""
    out, to = Path(out), Path(to)
    state_path = out / STATE_FILE
    if not state_path.is_file():
        raise FileNotFoundError(f"--out {out}: no loop state {state_path}")
    state = json.loads(state_path.read_text())
    if f"{index}:control" not in state["done"]:
        done = sorted({int(k.split(":")[0]) for k in state["done"] if k.endswith(":control")})
        raise ValueError(f"--publish {index}: round {index} of {out} has no finished agent "
                         f"(rounds with one: {done or 'none'})")  # fmt: skip
    config = state["config"]
    source = round_dir(out, index)
    loop = {"command": loop_command(config, index), "round": index, "out": str(out)}
    if config.get("extra_control_args"):
        loop["control_machine_args"] = list(config["extra_control_args"])
    written = []
    for kind in PUBLISHED_KINDS:
        src = checkpoint.best_model_dir(source, kind)
        if not src.is_dir():
            if kind == "end":
                continue  # a world without an episode-end model
            raise FileNotFoundError(f"round {index} of {out} has no {kind} checkpoint {src}")
        info = _info(src)
        entry = {**loop, "from": str(src)}
        lineage = _lineage(config, kind, index)
        data = [info["data"]] if info.get("data") else []
        recordings = recording_sets(data) if data else []
        info.update(loop=entry, lineage=lineage)
        if recordings:
            info["recordings_mixed"] = recordings
        card = (src / checkpoint.README_FILE).read_text() + _card_section(
            entry, lineage, recordings
        )
        dst = checkpoint.best_model_dir(to, kind)
        checkpoint.copy_checkpoint(src, dst, training_info=info, readme=card)
        written.append(dst)
        logger.info("published %s -> %s", src, dst)
    bank = source / START_FRAMES
    if bank.is_file():
        target = to / START_FRAMES
        atomic_write(target, lambda fp: shutil.copyfileobj(bank.open("rb"), fp))
        written.append(target)
    return written
