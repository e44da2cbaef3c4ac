"""A time limit is not a death: recordings keep ``done`` (ended by itself) and ``truncated`` apart.

A Gymnasium env under ``TimeLimit`` is recorded with ``record_env``; the
episode-end model and the memory model's end head must learn no end at the
cap, and old files (``done`` set at a time limit) are read as truncated.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from elworld.data import episodes as episodes_module
from elworld.data import read_labels
from elworld.data.datasets import TransitionDataset
from elworld.data.episodes import inspect_episode
from elworld.keys import KEY_INDEX, NUM_KEYS
from elworld.model.end import EndConfig
from elworld.record import record_env, write_episode
from elworld.train.end import _load_episodes, train_end_model

CAP = 6  # TimeLimit's max_episode_steps
Z = KEY_INDEX["z"]


class _ZEndsIt(gym.Env):
    """Frames whose brightness counts the steps; pressing "z" ends the episode (a death)."""

    observation_space = gym.spaces.Box(0, 255, (48, 64, 3), np.uint8)
    action_space = gym.spaces.MultiBinary(NUM_KEYS)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros((48, 64, 3), np.uint8), {}

    def step(self, action):
        self.t += 1
        frame = np.full((48, 64, 3), 30 * self.t, np.uint8)
        return frame, 1.0, bool(action[Z]), False, {}


class _SometimesZ:
    """Presses "z" with probability 0.1 per step (seeded per episode)."""

    def reset(self, seed):
        self.rng = np.random.default_rng(seed)

    def __call__(self, frame):
        action = np.zeros(NUM_KEYS, np.uint8)
        action[Z] = self.rng.random() < 0.1
        return action


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("capped")
    env = gym.wrappers.TimeLimit(_ZEndsIt(), max_episode_steps=CAP)
    return record_env(env, _SometimesZ(), out, episodes=60, seed=0, meta={"game": "z"})


def _token_files(paths: list[Path]) -> list[Path]:
    """A stand-in token cache: 4 tokens per frame, each the frame's step number (0..7)."""
    files = []
    for path in paths:
        obs = np.load(path)["obs"]
        steps = np.minimum(obs[:, 0, 0, 0] // 30, 7).astype(np.uint16)  # (N,)
        file = path.with_suffix(".tokens.npy")
        np.save(file, np.repeat(steps[:, None, None], 4, axis=2))  # (N, 1, 4)
        files.append(file)
    return files


def test_a_time_limit_is_recorded_as_truncated_not_done(capped: list[Path]) -> None:
    ends = {"terminated": 0, "truncated": 0}
    for path in capped:
        data = np.load(path)
        ended = json.loads(path.with_suffix(".json").read_text())["ended"]
        ends[ended] += 1
        assert inspect_episode(path).has_truncated
        if ended == "truncated":  # cut at the cap
            assert len(data["done"]) == CAP
            assert data["done"].sum() == 0 and data["truncated"].tolist() == [0] * (CAP - 1) + [1]
        else:  # "z" ended it
            assert data["act"][-1, Z] == 1
            assert (
                data["done"][-1] == 1 and data["done"].sum() == 1 and data["truncated"].sum() == 0
            )
    assert ends["terminated"] >= 10 and ends["truncated"] >= 10  # both kinds are in the data


def test_a_capped_episode_trains_no_end_at_the_cap(capped: list[Path], one_torch_thread) -> None:
    episodes = _load_episodes(capped, _token_files(capped))
    assert sum(e.done.sum() for e in episodes) == sum(e.actions[-1, Z] for e in episodes)
    # The memory model's end head reads the same targets.
    memory = TransitionDataset(capped, _token_files(capped))
    targets = [float(memory[i]["done"]) for i in range(len(memory))]
    assert sum(targets) == sum(e.done.sum() for e in episodes) >= 10
    config = EndConfig(vocab_size=8, tokens_per_frame=4, n_embd=8, hidden=16)
    train, val = episodes[:45], episodes[45:]
    model, _ = train_end_model(train, val, config, epochs=60, batch_size=16, lr=1e-2, seed=0)
    at_cap, at_z = [], []
    with torch.no_grad():
        for e in episodes:
            hazard = torch.sigmoid(
                model(torch.from_numpy(e.tokens[None].astype(np.int64)),
                      torch.from_numpy(e.actions[None].astype(np.float32)))
            )[0].numpy()  # fmt: skip
            (at_z if e.actions[-1, Z] else at_cap).append(hazard[-1])
    assert len(at_cap) >= 10 and len(at_z) >= 10
    assert np.mean(at_cap) < 0.2 < 0.8 < np.mean(at_z)


def test_an_old_file_with_done_at_a_time_limit_is_read_as_truncated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(episodes_module, "_corrected", set())  # as in a fresh process
    obs = np.zeros((5, 8, 8, 3), np.uint8)
    act = np.zeros((5, NUM_KEYS), np.uint8)
    old_done = np.array([0, 0, 0, 0, 1], np.uint8)  # what recorders before `truncated` wrote
    for name, ended in (("cut_a", "truncated"), ("cut_b", "truncated"), ("died", "terminated")):
        write_episode(tmp_path / f"{name}.npz", obs, act, done=old_done, meta={"ended": ended})
    write_episode(tmp_path / "unknown.npz", obs, act, done=old_done)  # no "ended": left as is
    assert not inspect_episode(tmp_path / "cut_a.npz").has_truncated
    with caplog.at_level(logging.WARNING, logger="elworld.data.episodes"):
        cut_a, cut_b = read_labels(tmp_path / "cut_a.npz"), read_labels(tmp_path / "cut_b.npz")
        died, unknown = read_labels(tmp_path / "died.npz"), read_labels(tmp_path / "unknown.npz")
    assert cut_a["done"].sum() == 0 and cut_a["truncated"].tolist() == [0, 0, 0, 0, 1]
    assert cut_b["done"].sum() == 0 and cut_b["truncated"][-1]
    assert died["done"].tolist() == [0, 0, 0, 0, 1] and died["truncated"].sum() == 0
    assert unknown["done"][-1] and "truncated" not in unknown
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cut_a.npz" in warnings[0].getMessage()  # once per process


def test_a_step_cannot_be_both_done_and_truncated(tmp_path: Path) -> None:
    obs = np.zeros((2, 8, 8, 3), np.uint8)
    act = np.zeros((2, NUM_KEYS), np.uint8)
    with pytest.raises(ValueError, match="both done .* and truncated"):
        write_episode(tmp_path / "e.npz", obs, act, done=[0, 1], truncated=[0, 1])
    with pytest.raises(ValueError, match="truncated must be"):
        write_episode(tmp_path / "e.npz", obs, act, truncated=[0, 2])


def test_data_info_counts_how_episodes_ended(capped: list[Path]) -> None:
    from elworld.data.cli import summarize

    ended = summarize(capped[0].parent)["episodes_ended"]
    z_ends = sum(int(np.load(p)["done"][-1]) for p in capped)
    assert ended == {"by itself": z_ends, "truncated": len(capped) - z_ends}
