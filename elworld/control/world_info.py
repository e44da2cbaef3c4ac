"""Which world a control agent lives in: checkpoint paths, fingerprints, scenario keys, frame skip.

A control checkpoint records the vision and memory checkpoints it was trained
in (paths and ``checkpoint_fingerprint``s) under ``training_info["world"]``;
:func:`check_same_world` refuses to pair it with any other world. The keys the
agent may press and the frame skip come from the memory checkpoint's
``training_info["recordings"]`` (written by ``elworld train memory`` from the
recordings' sidecars), else from the sidecars of its ``data`` folder when that
folder is still there.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from elworld import checkpoint
from elworld.keys import KEY_INDEX
from elworld.world.loading import CheckpointPaths, resolve_checkpoints

logger = logging.getLogger(__name__)

WORLD_INFO_KEY = "world"


@dataclass(frozen=True)
class WorldInfo:
    """A world's checkpoints and what its recordings say about the game."""

    vision: str
    memory: str
    root: str | None
    vision_fingerprint: str
    memory_fingerprint: str
    scenario: str | None  # e.g. "take_cover", from the recordings
    frame_skip: int | None  # game tics per step, from the recordings
    keys: tuple[str, ...] | None  # key names the recordings' player could press
    # The episode-end model the dream's ends came from (provenance only: the agent
    # acts on vision tokens, so check_same_world does not require the same one).
    end: str | None = None
    end_fingerprint: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``"world"`` entry of a control checkpoint's training info)."""
        data = asdict(self)
        data["keys"] = list(self.keys) if self.keys is not None else None
        return data


def _key_names(table: Any) -> tuple[str, ...] | None:
    """Key names of a recordings key table (``{"left": "MOVE_LEFT", ...}``, or a list of them)."""
    tables = table if isinstance(table, list) else [table]
    names: set[str] = set()
    for item in tables:
        if not isinstance(item, dict):
            return None
        names.update(name for name in item if name in KEY_INDEX)
    return tuple(sorted(names, key=KEY_INDEX.__getitem__)) or None


def _recordings(memory_info: dict[str, Any]) -> dict[str, Any]:
    recordings = memory_info.get("recordings")
    if isinstance(recordings, dict) and recordings:
        return recordings
    data = memory_info.get("data")
    if isinstance(data, str) and Path(data).is_dir():  # an older memory checkpoint
        from elworld.data import find_episodes, recording_provenance

        episodes = find_episodes(data)
        if episodes:
            logger.info("reading the recordings' keys and frame skip from the sidecars in %s", data)
            return recording_provenance(episodes)
    return {}


def describe_world(paths: CheckpointPaths) -> WorldInfo:
    """Fingerprint the world's checkpoints and read its recordings' scenario, keys and frame skip."""
    recordings = _recordings(checkpoint.read_training_info(paths.memory))
    skip = recordings.get("frame_skip")
    scenario = recordings.get("scenario")
    return WorldInfo(
        vision=str(paths.vision),
        memory=str(paths.memory),
        root=str(paths.root) if paths.root is not None else None,
        vision_fingerprint=checkpoint.checkpoint_fingerprint(paths.vision),
        memory_fingerprint=checkpoint.checkpoint_fingerprint(paths.memory),
        scenario=scenario if isinstance(scenario, str) else None,
        frame_skip=skip if isinstance(skip, int) and not isinstance(skip, bool) else None,
        keys=_key_names(recordings.get("keys")),
        end=str(paths.end) if paths.end is not None else None,
        end_fingerprint=checkpoint.checkpoint_fingerprint(paths.end) if paths.end else None,
    )


def resolve_world(
    checkpoints: str | Path | None = None,
    vision: str | Path | None = None,
    memory: str | Path | None = None,
) -> tuple[CheckpointPaths, WorldInfo]:
    """Resolve a world like the dream env does (argument, ``$ELWORLD_CHECKPOINTS``, bundled) and describe it."""
    paths = resolve_checkpoints(checkpoints, vision, memory)
    return paths, describe_world(paths)


def recorded_world(control_path: str | Path) -> dict[str, Any]:
    """The ``"world"`` entry of a control checkpoint's training info (``CheckpointError`` if absent)."""
    info = checkpoint.read_training_info(control_path)
    world = info.get(WORLD_INFO_KEY)
    if not isinstance(world, dict) or "vision_fingerprint" not in world:
        raise checkpoint.CheckpointError(
            f"{control_path} does not record the world it was trained in "
            f"(training_info.json has no {WORLD_INFO_KEY!r} entry): is it a control checkpoint?"
        )
    return world


def check_same_world(control_path: str | Path, recorded: dict[str, Any], actual: WorldInfo) -> None:
    """Raise ``CheckpointError`` naming both worlds when ``actual`` is not the one ``recorded``."""
    problems = [
        f"{kind} {actual_path} (fingerprint {actual_fp[:12]}) is not the {kind} it was trained in, "
        f"{recorded.get(kind)} (fingerprint {str(recorded.get(f'{kind}_fingerprint'))[:12]})"
        for kind, actual_path, actual_fp in (
            ("vision", actual.vision, actual.vision_fingerprint),
            ("memory", actual.memory, actual.memory_fingerprint),
        )
        if recorded.get(f"{kind}_fingerprint") != actual_fp
    ]
    if problems:
        raise checkpoint.CheckpointError(
            f"control checkpoint {control_path} was trained in another world: "
            + "; ".join(problems)
            + ". Pass checkpoints=<the root it was trained in> (--checkpoints on the command "
            "line, or set $ELWORLD_CHECKPOINTS), "
            "or train a new agent in this world with `elworld train control`"
        )


def resolve_keys(world: WorldInfo, keys: str | None) -> tuple[str, ...]:
    """The keys an agent may press: ``keys`` ("left,right") if given, else the world's recordings'."""
    if keys:
        names = tuple(name.strip() for name in keys.split(",") if name.strip())
        unknown = [name for name in names if name not in KEY_INDEX]
        if unknown or not names:
            raise ValueError(f"--keys must be key names ({', '.join(KEY_INDEX)}), got {keys!r}")
        if world.keys is not None and set(names) - set(world.keys):
            logger.warning(
                "--keys %s includes keys the recordings never pressed (%s): the dream has not "
                "seen what they do",
                keys,
                ",".join(world.keys),
            )
        return tuple(sorted(set(names), key=KEY_INDEX.__getitem__))
    if world.keys is None:
        raise ValueError(
            f"the memory checkpoint {world.memory} does not record which keys its recordings "
            "pressed (no training_info 'recordings' -> 'keys'); pass --keys, e.g. --keys left,right "
            "for take_cover"
        )
    return world.keys
