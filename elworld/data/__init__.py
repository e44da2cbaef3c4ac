"""Episode recordings and the datasets built from them.

``episodes`` finds, validates, streams and splits ``.npz`` recordings;
``datasets`` caches resized frames and serves frames (vision) and transitions
(memory); ``tokens`` caches the vision model's tokens per episode.
"""

from __future__ import annotations

from elworld.data.datasets import FrameDataset, TransitionDataset, prepare_frames
from elworld.data.episodes import (
    DataError,
    EpisodeInfo,
    find_episodes,
    inspect_episode,
    iter_frames,
    read_actions,
    read_dones,
    read_labels,
    read_rewards,
    read_sidecar,
    recording_provenance,
    shard_episodes,
    split_episodes,
)
from elworld.data.tokens import build_token_cache, load_tokens, read_manifest

__all__ = [
    "DataError",
    "EpisodeInfo",
    "FrameDataset",
    "TransitionDataset",
    "build_token_cache",
    "find_episodes",
    "inspect_episode",
    "iter_frames",
    "load_tokens",
    "prepare_frames",
    "read_actions",
    "read_dones",
    "read_labels",
    "read_manifest",
    "read_rewards",
    "read_sidecar",
    "recording_provenance",
    "shard_episodes",
    "split_episodes",
]
