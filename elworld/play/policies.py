"""Who holds the keys in a headless rollout.

``random`` and ``sticky`` are ``elworld.record.collect``'s scripted policies
(the ones ``elworld collect`` records with), over a chosen set of keys
(default ``DEFAULT_POLICY_KEYS``). ``keys FILE`` replays a key sequence:

- ``.npz``: its ``act`` array ``(N, 22)`` of 0/1 (any recording works);
- ``.json``: a list with one entry per step, each a list of key names,
  e.g. ``[["right"], ["right", "z"], []]``;
- anything else, text: one line per step, key names separated by spaces,
  commas or ``+`` (``right z``, ``left+x``); an empty line or ``-`` holds no
  key; ``#`` starts a comment.

Key names are ``elworld.keys.KEY_NAMES``. A sequence shorter than the rollout
starts over from its first step. Every policy is ``policy(frame) -> (22,)
uint8`` with ``reset(seed)``, like ``elworld.record``'s recorder expects.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from elworld.keys import KEY_INDEX, NUM_KEYS, action_from_names, check_action
from elworld.policy import Policy  # the one interface (re-exported here)

POLICY_NAMES = ("random", "sticky", "keys")
# Keys the scripted policies press by default: moving left and right means
# something in every ElWorld game (the original and every Doom scenario), while
# a key a checkpoint never saw held only shows the model an unseen action.
DEFAULT_POLICY_KEYS = ("left", "right")


def parse_key_names(text: str, where: str = "key list") -> list[str]:
    """Key names in ``text`` (separated by spaces, commas or ``+``); ``ValueError`` if unknown."""
    names = [name for name in re.split(r"[\s,+]+", text.strip().lower()) if name and name != "-"]
    for name in names:
        if name not in KEY_INDEX:
            raise ValueError(
                f"{where}: unknown key {name!r}; expected names from {', '.join(KEY_INDEX)}"
            )
    return names


def load_key_sequence(path: str | os.PathLike[str]) -> np.ndarray:
    """The actions ``(N, 22)`` uint8 stored in a keys file (format in the module docstring).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is malformed, names an unknown key, or holds no step.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"keys file {path} does not exist")
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "act" not in archive.files:
                raise ValueError(f"keys file {path} has no 'act' array (expected (N, 22) of 0/1)")
            act = np.asarray(archive["act"])
        if act.ndim != 2 or act.shape[1] != NUM_KEYS:
            raise ValueError(f"keys file {path}: act must be (N, {NUM_KEYS}), got {act.shape}")
        actions = np.stack([check_action(a, name=f"{path} act[{i}]") for i, a in enumerate(act)])
    elif path.suffix.lower() == ".json":
        try:
            steps = json.loads(path.read_text())
        except ValueError as error:
            raise ValueError(f"keys file {path} is not valid JSON: {error}") from error
        if not isinstance(steps, list) or not all(isinstance(s, list) for s in steps):
            raise ValueError(
                f"keys file {path} must hold a JSON list of key-name lists, "
                'e.g. [["right"], ["right", "z"], []]'
            )
        rows = [
            action_from_names(parse_key_names(" ".join(map(str, keys)), f"{path} step {i}"))
            for i, keys in enumerate(steps)
        ]
        actions = np.stack(rows) if rows else np.zeros((0, NUM_KEYS), dtype=np.uint8)
    else:
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            line = line.split("#", 1)[0].strip()
            if line:  # blank and comment-only lines are not steps
                rows.append(action_from_names(parse_key_names(line, f"{path} line {number}")))
        actions = np.stack(rows) if rows else np.zeros((0, NUM_KEYS), dtype=np.uint8)
    if len(actions) == 0:
        raise ValueError(f"keys file {path} holds no steps")
    return actions.astype(np.uint8)


class KeySequencePolicy:
    """Replays ``actions`` ``(N, 22)`` one row per call, starting over after the last."""

    name = "keys"

    def __init__(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions, dtype=np.uint8)
        if actions.ndim != 2 or actions.shape[1] != NUM_KEYS or len(actions) == 0:
            raise ValueError(f"actions must be (N >= 1, {NUM_KEYS}), got {actions.shape}")
        self.actions = actions
        self._step = 0

    def reset(self, seed: int | None = None) -> None:
        """Start over from the first step (the seed is unused)."""
        self._step = 0

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """The next row of the sequence."""
        action = self.actions[self._step % len(self.actions)].copy()
        self._step += 1
        return action


def make_policy(
    name: str,
    *,
    seed: int | None = None,
    keys_file: str | os.PathLike[str] | None = None,
    keys: Sequence[str] = DEFAULT_POLICY_KEYS,
) -> Policy:
    """The rollout policy ``name``: ``random`` / ``sticky`` over ``keys``, or ``keys`` from a file.

    Raises:
        ValueError: an unknown policy or key name, or ``keys`` without ``keys_file``.
    """
    if name == "keys":
        if keys_file is None:
            raise ValueError("--policy keys needs a keys FILE (.npz with act, .json or text)")
        return KeySequencePolicy(load_key_sequence(keys_file))
    if name not in ("random", "sticky"):
        raise ValueError(f"unknown policy {name!r}; expected one of {', '.join(POLICY_NAMES)}")
    indices = [KEY_INDEX[k] for k in parse_key_names(" ".join(keys), "policy keys")]
    if not indices:
        raise ValueError("policy keys must name at least one key")
    from elworld.record.collect import make_policy as make_scripted_policy

    return make_scripted_policy(name, indices, seed)
