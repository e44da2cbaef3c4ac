"""Tests for elworld.record: real ViZDoom collection, human recording, atomic files."""

from __future__ import annotations

import argparse
import errno
import importlib.util
import json
import re
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from elworld.keys import KEY_INDEX, NUM_KEYS, action_from_names
from elworld.record import (
    DoomEnv,
    DoomKeyMapping,
    RecordError,
    StickyKeysPolicy,
    StopRecording,
    collect_doom,
    make_doom_game,
    next_episode_index,
    record_env,
    record_human_doom,
    write_episode,
    writer,
)
from elworld.record import cli as record_cli
from elworld.record.doom import SCENARIOS


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # sys.modules[name] is None: hidden on purpose
        return False


# Only the tests that start a real game need the vizdoom extra; the rest (files, key
# tables, policies, record_env on other envs) run without it.
needs_vizdoom = pytest.mark.skipif(
    not _installed("vizdoom"), reason="needs the vizdoom extra (pip install 'elworld[doom]')"
)

LEFT, RIGHT = KEY_INDEX["left"], KEY_INDEX["right"]


@pytest.fixture(scope="module")
def doom_env():
    pytest.importorskip("vizdoom", reason="needs the vizdoom extra (pip install 'elworld[doom]')")
    env = DoomEnv("take_cover", frame_skip=2)
    yield env
    env.close()


def _hold(env: DoomEnv, seed: int, names: list[str], steps: int = 10) -> np.ndarray:
    """Frames seen while holding ``names`` for ``steps`` steps from ``seed``: (steps+1, H, W, 3)."""
    action = action_from_names(names)
    frames = [env.reset(seed=seed)[0]]
    for _ in range(steps):
        frames.append(env.step(action)[0])
    return np.stack(frames)


def _tmp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]


def _cfg_buttons(scenario: str) -> set[str]:
    import vizdoom

    text = Path(vizdoom.scenarios_path, f"{scenario}.cfg").read_text()
    text = re.sub(r"#.*", "", text)
    block = re.search(r"available_buttons\s*=\s*\{([^}]*)\}", text)
    assert block is not None, scenario
    return set(block.group(1).split())


# --- key table ---------------------------------------------------------------------------


@needs_vizdoom
def test_key_tables_follow_the_scenarios_buttons():
    assert DoomKeyMapping.for_scenario("take_cover").table() == {
        "left": "MOVE_LEFT",
        "right": "MOVE_RIGHT",
    }
    corridor = DoomKeyMapping.for_scenario("deadly_corridor").table()
    assert corridor["left"] == "TURN_LEFT" and corridor["a"] == "MOVE_LEFT"
    assert corridor["up"] == "MOVE_FORWARD" and corridor["z"] == "ATTACK"
    for scenario in SCENARIOS:
        mapping = DoomKeyMapping.for_scenario(scenario)
        assert len(set(mapping.buttons)) == len(mapping.buttons), scenario  # one key per button
        assert set(mapping.buttons) <= _cfg_buttons(scenario), scenario


def test_mapping_masks_and_converts_actions():
    mapping = DoomKeyMapping.for_scenario("take_cover")
    action = action_from_names(["right", "z", "up"])
    assert mapping.to_buttons(action) == [0, 1]  # MOVE_LEFT, MOVE_RIGHT
    np.testing.assert_array_equal(mapping.mask(action), action_from_names(["right"]))
    with pytest.raises(ValueError, match="shape"):
        mapping.to_buttons(np.zeros(3))


def test_unknown_scenario_lists_known_ones():
    with pytest.raises(ValueError, match="take_cover"):
        DoomKeyMapping.for_scenario("doom3")
    with pytest.raises(ValueError, match="health_gathering"):
        collect_doom("doom3", 1, "unused")


def test_missing_vizdoom_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vizdoom", None)
    with pytest.raises(ImportError, match=r"elworld\[doom\]"):
        make_doom_game("take_cover", seed=0)


# --- the real game -----------------------------------------------------------------------


def test_keys_drive_the_real_game(doom_env):
    noop_a = _hold(doom_env, 7, [])
    noop_b = _hold(doom_env, 7, [])
    np.testing.assert_array_equal(noop_a, noop_b)  # same seed, same actions: same frames
    left = _hold(doom_env, 7, ["left"])
    right = _hold(doom_env, 7, ["right"])
    unmapped = _hold(doom_env, 7, ["z", "up"])  # take_cover has no such buttons
    np.testing.assert_array_equal(unmapped, noop_a)
    assert left.shape == (11, 192, 256, 3) and left.dtype == np.uint8
    gap = np.abs(left[-1].astype(int) - right[-1]).mean()
    assert gap > np.abs(noop_a[-1].astype(int) - noop_b[-1]).mean()
    assert gap > 1.0
    assert np.abs(left[-1].astype(int) - noop_a[-1]).mean() > 1.0


def test_done_marks_only_a_natural_end(doom_env, tmp_path):
    # Standing still in take_cover, the player is killed within a few hundred steps.
    paths = record_env(doom_env, lambda frame: np.zeros(NUM_KEYS, np.uint8), tmp_path, seed=1)
    data = np.load(paths[0])
    n = len(data["obs"])
    assert 1 < n < 2000
    assert data["done"][-1] == 1 and data["done"][:-1].sum() == 0
    meta = json.loads(paths[0].with_suffix(".json").read_text())
    assert meta["ended"] == "terminated" and meta["ended_by_itself"] is True
    assert meta["frames"] == n


@needs_vizdoom
def test_collect_doom_writes_episodes(tmp_path):
    out = tmp_path / "doom"
    paths = collect_doom(
        "take_cover", 2, out, policy="random", seed=3, max_steps=30, progress=False
    )
    assert [p.name for p in paths] == ["take_cover_0001.npz", "take_cover_0002.npz"]
    mapped = np.zeros(NUM_KEYS, dtype=bool)
    mapped[[LEFT, RIGHT]] = True
    for i, path in enumerate(paths):
        data = np.load(path)
        assert data["obs"].shape == (30, 192, 256, 3) and data["obs"].dtype == np.uint8
        assert data["act"].shape == (30, NUM_KEYS) and data["act"].dtype == np.uint8
        assert data["act"][:, ~mapped].sum() == 0  # only left/right ever set
        assert data["act"][:, mapped].sum() > 0
        assert data["rew"].shape == (30,) and data["rew"].dtype == np.float32
        assert data["done"].shape == (30,) and data["done"].sum() == 0  # cut by max_steps
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["scenario"] == "take_cover" and meta["seed"] == 3 + i
        assert meta["policy"] == "random" and meta["frame_skip"] == 2 and meta["frames"] == 30
        assert meta["keys"] == {"left": "MOVE_LEFT", "right": "MOVE_RIGHT"}
        assert meta["total_reward"] == pytest.approx(float(data["rew"].sum()))
        assert meta["elworld_version"] and meta["date"]
    try:
        from elworld.data import inspect_episode
    except ImportError:
        return
    info = inspect_episode(paths[0])
    assert (info.num_frames, info.height, info.width, info.num_keys) == (30, 192, 256, NUM_KEYS)
    assert info.has_reward and info.has_done


@needs_vizdoom
def test_collect_is_reproducible_across_workers(tmp_path):
    kwargs = dict(policy="random", seed=5, max_steps=12, progress=False)
    one = collect_doom("take_cover", 2, tmp_path / "a", **kwargs)
    two = collect_doom("take_cover", 2, tmp_path / "b", workers=2, **kwargs)
    assert [p.name for p in one] == [p.name for p in two]
    for a, b in zip(one, two):
        da, db = np.load(a), np.load(b)
        np.testing.assert_array_equal(da["act"], db["act"])
        np.testing.assert_array_equal(da["obs"], db["obs"])
    assert not np.array_equal(np.load(one[0])["act"], np.load(one[1])["act"])  # seeds differ


def test_sticky_policy_holds_key_combinations():
    policy = StickyKeysPolicy([LEFT, RIGHT], seed=0)
    actions = np.stack([policy(None) for _ in range(300)])
    policy.reset(0)
    np.testing.assert_array_equal(np.stack([policy(None) for _ in range(300)]), actions)
    assert actions.sum(axis=0)[[LEFT, RIGHT]].min() > 0
    assert np.delete(actions, [LEFT, RIGHT], axis=1).sum() == 0
    changes = np.flatnonzero(np.any(actions[1:] != actions[:-1], axis=1)) + 1
    runs = np.diff(np.concatenate([[0], changes, [len(actions)]]))
    assert len(runs) > 5 and runs[:-1].min() >= 4  # the last run may be cut short


# --- interruption, numbering, bad paths ----------------------------------------------------


def test_interrupt_mid_episode_keeps_only_complete_files(doom_env, tmp_path):
    calls = {"n": 0}

    def policy(frame):
        calls["n"] += 1
        if calls["n"] == 8 + 3:  # 3rd step of episode 2
            raise KeyboardInterrupt
        return action_from_names(["left"])

    with pytest.raises(KeyboardInterrupt):
        record_env(doom_env, policy, tmp_path, episodes=3, max_steps=8, prefix="take_cover", seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "take_cover_0001.json",
        "take_cover_0001.npz",
    ]
    assert len(np.load(tmp_path / "take_cover_0001.npz")["obs"]) == 8


def test_interrupt_during_write_leaves_no_file(tmp_path, monkeypatch):
    def interrupted_save(fp, arrays, compress):
        fp.write(b"PK partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "_save_arrays", interrupted_save)
    obs, act = np.zeros((2, 4, 4, 3), np.uint8), np.zeros((2, NUM_KEYS), np.uint8)
    with pytest.raises(KeyboardInterrupt):
        write_episode(tmp_path / "ep_0001.npz", obs, act)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_gives_record_error_and_no_temp_file(tmp_path, monkeypatch):
    def full_disk(fp, arrays, compress):
        fp.write(b"PK partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "_save_arrays", full_disk)
    obs, act = np.zeros((2, 4, 4, 3), np.uint8), np.zeros((2, NUM_KEYS), np.uint8)
    with pytest.raises(RecordError, match=r"ep_0001\.npz.*disk is full"):
        write_episode(tmp_path / "ep_0001.npz", obs, act)
    assert list(tmp_path.iterdir()) == []


def test_numbering_resumes_after_existing_files(doom_env, tmp_path):
    assert next_episode_index(tmp_path / "missing", "take_cover") == 1
    for name in ("take_cover_0001.npz", "take_cover_0007.npz", "other_0042.npz"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".tmp-take_cover_0050.npz").write_bytes(b"")
    assert next_episode_index(tmp_path, "take_cover") == 8
    paths = record_env(
        doom_env, lambda f: np.zeros(NUM_KEYS, np.uint8), tmp_path, episodes=2,
        prefix="take_cover", max_steps=3,
    )  # fmt: skip
    assert [p.name for p in paths] == ["take_cover_0008.npz", "take_cover_0009.npz"]


def test_bad_output_path_gives_record_error(doom_env, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    noop = lambda f: np.zeros(NUM_KEYS, np.uint8)  # noqa: E731
    with pytest.raises(RecordError, match="a_file"):
        record_env(doom_env, noop, blocker, max_steps=2)
    with pytest.raises(RecordError, match="a_file"):
        collect_doom("take_cover", 1, blocker / "sub", max_steps=2, progress=False)
    obs, act = np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, NUM_KEYS), np.uint8)
    with pytest.raises(RecordError, match="does not exist"):
        write_episode(tmp_path / "missing" / "ep_0001.npz", obs, act)
    write_episode(tmp_path / "ep_0001.npz", obs, act)
    with pytest.raises(RecordError, match="already exists"):
        write_episode(tmp_path / "ep_0001.npz", obs, act)
    with pytest.raises(RecordError, match="ep_0001.npz already exists"):
        record_env(doom_env, noop, tmp_path, prefix="ep", index=1, max_steps=2)


def test_write_episode_validates_arrays(tmp_path):
    obs, act = np.zeros((2, 4, 4, 3), np.uint8), np.zeros((2, NUM_KEYS), np.uint8)
    with pytest.raises(ValueError, match="obs"):
        write_episode(tmp_path / "e.npz", obs.astype(np.float32), act)
    with pytest.raises(ValueError, match="act"):
        write_episode(tmp_path / "e.npz", obs, act[:, :5])
    with pytest.raises(ValueError, match="done"):
        write_episode(tmp_path / "e.npz", obs, act, done=np.array([0, 2]))
    assert list(tmp_path.iterdir()) == []


# --- any Gymnasium env -------------------------------------------------------------------


class _TinyImageEnv(gym.Env):
    """48x64 frames whose brightness is the step number; ends after 4 steps."""

    observation_space = gym.spaces.Box(0, 255, (48, 64, 3), np.uint8)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.actions = []
        return np.zeros((48, 64, 3), np.uint8), {}

    def step(self, action):
        self.actions.append(action)
        self.t += 1
        return np.full((48, 64, 3), 40 * self.t, np.uint8), 0.5, self.t == 4, False, {}


def test_record_env_resizes_and_adapts_actions(tmp_path):
    env = _TinyImageEnv()
    paths = record_env(
        env, lambda f: action_from_names(["right"]), tmp_path,
        action_adapter=lambda a: int(a[RIGHT]) * 2, meta={"game": "tiny"},
    )  # fmt: skip
    data = np.load(paths[0])
    assert data["obs"].shape == (4, 192, 256, 3)
    assert [int(data["obs"][t].mean()) for t in range(4)] == [0, 40, 80, 120]
    assert env.actions == [2, 2, 2, 2]
    np.testing.assert_array_equal(data["done"], [0, 0, 0, 1])
    assert json.loads(paths[0].with_suffix(".json").read_text())["game"] == "tiny"


# --- human play ----------------------------------------------------------------------------


@needs_vizdoom
@pytest.mark.parametrize("stop", ["f10", "close"])
def test_human_recorder_headless(tmp_path, monkeypatch, stop):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    import pygame

    def script(step):
        if step == 0:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_RIGHT))
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_z))  # unmapped
        if step == 10:
            pygame.event.post(pygame.event.Event(pygame.KEYUP, key=pygame.K_RIGHT))
            if stop == "f10":
                pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_F10))
            else:
                pygame.event.post(pygame.event.Event(pygame.QUIT))

    paths = record_human_doom(
        "take_cover", tmp_path, episodes=2, fps=0, scale=1, seed=0, step_hook=script
    )
    assert [p.name for p in paths] == ["take_cover_0001.npz"]  # stopped in episode 1
    data = np.load(paths[0])
    assert data["act"].shape == (10, NUM_KEYS)
    assert data["act"][:, RIGHT].tolist() == [1] * 10
    assert data["act"].sum() == 10  # "z" is not a take_cover key: recorded as 0
    assert data["done"].sum() == 0
    meta = json.loads(paths[0].with_suffix(".json").read_text())
    assert meta["policy"] == "human" and meta["ended"] == "stopped"
    assert not _tmp_files(tmp_path)


def test_record_stop_without_save_drops_episode(doom_env, tmp_path):
    def policy(frame):
        raise StopRecording(save=False)

    assert record_env(doom_env, policy, tmp_path, episodes=2) == []
    assert list(tmp_path.iterdir()) == []


# --- CLI ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elworld")
    record_cli.register(parser.add_subparsers(dest="command"))
    return parser


@needs_vizdoom
def test_cli_collect_and_help(tmp_path, capsys):
    parser = _parser()
    args = parser.parse_args(
        ["collect", "doom", "--out", str(tmp_path), "--episodes", "1", "--max-steps", "4",
         "--policy", "random", "--seed", "2"]
    )  # fmt: skip
    assert args.func(args) == 0
    assert np.load(tmp_path / "take_cover_0001.npz")["act"].shape == (4, NUM_KEYS)
    bad = parser.parse_args(["collect", "doom", "--out", str(tmp_path / "take_cover_0001.npz")])
    assert bad.func(bad) == 1  # RecordError -> exit code, no traceback
    with pytest.raises(SystemExit):
        parser.parse_args(["record", "doom", "--help"])
    text = capsys.readouterr().out
    assert "MOVE_LEFT" in text and "F10" in text and "(N,192,256,3)" in text
