"""A world of another game: take_cover's facts are data, not code.

A tiny Gymnasium game with image observations, pressed with ``z`` and ``x``
(no arrows) at 12 steps per second, is recorded with ``record_env`` and
trained into a world with the CLI. The dream plays at the recorded rate
(unless told another), knows no frame skip it was not told, and rollout's
random policy presses only the game's keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from elworld import checkpoint
from elworld.cli import main
from elworld.data import recording_provenance
from elworld.keys import KEY_INDEX, KEY_NAMES, NUM_KEYS
from elworld.record import record_env
from elworld_gym.dream_env import DreamEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 12.0
KEYS = {"z": "JUMP", "x": "FIRE"}
TINY_VISION = ["--image-size", "32x32", "--width", "8", "--res-blocks", "1", "--code-dim", "8",
               "--codebook-size", "16", "--downsamples", "2"]  # fmt: skip
TINY_RUN = ["--batch-size", "4", "--steps-per-epoch", "3", "--warmup-steps", "2", "--device", "cpu"]


class BlockGame(gym.Env):
    """A block that z moves up and x moves right, on 48x64 frames; 12 steps per second."""

    metadata = {"render_fps": RATE}
    observation_space = gym.spaces.Box(0, 255, (48, 64, 3), np.uint8)
    action_space = gym.spaces.MultiBinary(NUM_KEYS)

    def _frame(self) -> np.ndarray:
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[self.y : self.y + 8, self.x : self.x + 8] = (250, 120, 30)
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.y, self.x, self.t = 40, 0, 0
        return self._frame(), {}

    def step(self, action):
        self.t += 1
        self.y = max(0, self.y - 4 * int(action[KEY_INDEX["z"]]))
        self.x = min(56, self.x + 4 * int(action[KEY_INDEX["x"]]))
        return self._frame(), 1.0, self.x >= 56, self.t >= 16, {}


class ZXPolicy:
    def reset(self, seed):
        self.rng = np.random.default_rng(seed)

    def __call__(self, frame):
        action = np.zeros(NUM_KEYS, np.uint8)
        action[[KEY_INDEX["z"], KEY_INDEX["x"]]] = self.rng.integers(0, 2, 2)
        return action


@pytest.fixture(scope="module")
def block_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("block_data")
    paths = record_env(BlockGame(), ZXPolicy(), data, episodes=6, seed=0,
                       meta={"source": "blockgame", "keys": KEYS})  # fmt: skip
    assert json.loads(paths[0].with_suffix(".json").read_text())["steps_per_second"] == RATE
    root = tmp_path_factory.mktemp("block_world")
    vision = checkpoint.best_model_dir(root, "vision")
    args = ["--data", str(data), "--out", str(root), "--epochs", "1", *TINY_RUN]
    assert main(["train", "vision", *args, *TINY_VISION]) == 0
    memory = ["--vision", str(vision), "--n-layer", "1", "--n-head", "2", "--n-embd", "16"]
    assert main(["train", "memory", *args, *memory]) == 0
    assert main(["data", "start-frames", str(data), "--out", str(root / "start_frames.npz")]) == 0
    return root


def test_the_recordings_rate_and_keys_reach_the_world(block_world: Path) -> None:
    info = json.loads(
        (checkpoint.best_model_dir(block_world, "memory") / "training_info.json").read_text()
    )
    assert info["recordings"]["steps_per_second"] == RATE
    assert info["recordings"]["keys"] == KEYS and info["recordings"]["source"] == "blockgame"
    data = Path(info["data"])
    assert recording_provenance(sorted(data.glob("*.npz")))["steps_per_second"] == RATE


def test_the_dream_plays_at_the_recorded_rate(block_world: Path) -> None:
    env = DreamEnv(block_world, obs_type="tokens")
    assert env.metadata["render_fps"] == RATE
    assert env.world.frame_skip is None  # never recorded: not take_cover's 2
    assert DreamEnv(block_world, steps_per_second=30).metadata["render_fps"] == 30.0
    with pytest.raises(ValueError, match="steps_per_second"):
        DreamEnv(block_world, steps_per_second=0)
    vec = gym.make_vec("ElWorldDream-v0", num_envs=2, checkpoints=block_world, obs_type="tokens")
    assert vec.metadata["render_fps"] == RATE


@pytest.mark.parametrize("policy", ["random", "sticky"])
def test_rollout_policies_press_only_the_games_keys(
    block_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    from elworld.play.cli import rollout

    pressed = []
    step = DreamEnv.step

    def spy(self, action):
        pressed.append(np.asarray(action).copy())
        return step(self, action)

    monkeypatch.setattr(DreamEnv, "step", spy)
    out = rollout(tmp_path / "dream.gif", str(block_world), steps=40, policy=policy, seed=0)
    assert out.stat().st_size > 0 and len(pressed) == 40
    held = {KEY_NAMES[k] for k in np.flatnonzero(np.stack(pressed).any(axis=0))}
    assert held == {"z", "x"}  # both of the game's keys, and no arrow


def test_the_idm_follows_the_games_keys(block_world: Path, tmp_path: Path) -> None:
    """No mirror augmentation without a left/right pair; no cancelling outside ViZDoom."""
    from elworld.model.idm import effective_keys, idm_config_for, labels_text, opposing_pairs

    info = json.loads(
        (checkpoint.best_model_dir(block_world, "memory") / "training_info.json").read_text()
    )
    block = idm_config_for(sorted(Path(info["data"]).glob("*.npz")))
    assert block.keys == ("z", "x") and not block.mirror and not block.cancel_opposing
    assert labels_text(block).startswith("keys as recorded")
    both = np.zeros((1, NUM_KEYS), np.uint8)
    both[0, [KEY_INDEX["left"], KEY_INDEX["right"]]] = 1
    assert effective_keys(both, opposing_pairs(block)).sum() == 2  # held as recorded
    assert effective_keys(both).sum() == 0  # ViZDoom: they cancel
    # A ViZDoom left/right recording keeps both (the bundled IDM's way).
    from elworld.record import write_episode

    act = np.zeros((8, NUM_KEYS), np.uint8)
    act[::2, KEY_INDEX["left"]], act[1::2, KEY_INDEX["right"]] = 1, 1
    path = write_episode(tmp_path / "doom.npz", np.zeros((8, 8, 8, 3), np.uint8), act,
                         meta={"source": "vizdoom", "frame_skip": 4})  # fmt: skip
    doom = idm_config_for([path])
    assert doom.keys == ("left", "right") and doom.mirror and doom.cancel_opposing
