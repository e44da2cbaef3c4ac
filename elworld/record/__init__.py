"""Recording gameplay episodes: ViZDoom collection, human play, any Gymnasium env.

- ``write_episode`` / ``next_episode_index`` / ``RecordError``: atomic ``.npz`` + ``.json`` files.
- ``record_env``: the one recording loop, for any env with image observations.
- ``DoomEnv`` / ``DoomKeyMapping`` / ``make_doom_game``: ViZDoom with 22-key actions.
- ``collect_doom``: scripted (``random``/``sticky``) episodes, optionally in parallel.
- ``record_human_doom``: a person plays in a pygame window.
"""

from elworld.record.collect import (
    POLICIES,
    RandomKeysPolicy,
    StickyKeysPolicy,
    collect_doom,
    make_policy,
)
from elworld.record.doom import (
    SCENARIOS,
    DoomEnv,
    DoomKeyMapping,
    describe_key_tables,
    make_doom_game,
)
from elworld.record.human import KeyboardPolicy, record_human_doom
from elworld.record.recorder import StopRecording, record_env
from elworld.record.writer import RecordError, episode_path, next_episode_index, write_episode

__all__ = [
    "POLICIES",
    "SCENARIOS",
    "DoomEnv",
    "DoomKeyMapping",
    "KeyboardPolicy",
    "RandomKeysPolicy",
    "RecordError",
    "StickyKeysPolicy",
    "StopRecording",
    "collect_doom",
    "describe_key_tables",
    "episode_path",
    "make_doom_game",
    "make_policy",
    "next_episode_index",
    "record_env",
    "record_human_doom",
    "write_episode",
]
