"""Tests for the single dream env ``ElWorldDream-v0`` (``elworld_gym.dream_env``)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import elworld_gym
from elworld.checkpoint import CheckpointError, best_model_dir, save_checkpoint
from elworld.frames import frames_to_tensor, resize_frames
from elworld.keys import KEY_INDEX, NUM_KEYS
from elworld.model.memory import MemoryModel
from elworld.model.vision import VisionModel
from elworld.world.dream import DreamWorld
from elworld_gym.dream_env import DreamEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
ENV_ID = "elworld_gym:ElWorldDream-v0"


def start_frames(root: Path) -> np.ndarray:
    with np.load(root / "start_frames.npz") as archive:
        return archive["obs"]


def random_actions(seed: int, count: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((count, NUM_KEYS)) < 0.3).astype(np.uint8)


def rollout(env: gym.Env, seed: int, actions: np.ndarray, **reset_kwargs):
    obs, _ = env.reset(seed=seed, **reset_kwargs)
    observations, rewards = [obs], []
    for action in actions:
        obs, reward, _, _, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
    return np.stack(observations), np.array(rewards)


@pytest.mark.parametrize("obs_type", ["rgb", "tokens"])
def test_check_env_passes_without_warnings(tiny_checkpoints: Path, obs_type: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make(ENV_ID, checkpoints=tiny_checkpoints, obs_type=obs_type)
        check_env(env.unwrapped, skip_render_check=True)
        env.reset(seed=1)  # through the passive checker too
        env.step(env.action_space.sample())
        env.close()


def test_spaces_and_metadata_come_from_the_checkpoints(tiny_checkpoints: Path) -> None:
    env = DreamEnv(checkpoints=tiny_checkpoints)
    assert env.observation_space == gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
    assert env.action_space == gym.spaces.MultiBinary(NUM_KEYS)
    assert env.metadata["render_modes"] == ["human", "rgb_array"]
    assert env.metadata["render_fps"] == 20
    tokens = DreamEnv(checkpoints=tiny_checkpoints, obs_type="tokens")
    assert tokens.observation_space == gym.spaces.Box(0, 15, (8, 8), np.int64)
    obs, info = tokens.reset(seed=0)
    assert obs.dtype == np.int64 and obs.shape == (8, 8)
    np.testing.assert_array_equal(obs, info["tokens"])
    assert not np.shares_memory(obs, info["tokens"])
    assert gym.spec("ElWorldDream-v0").max_episode_steps == elworld_gym.MAX_EPISODE_STEPS


def test_same_seed_and_actions_reproduce_the_dream(tiny_checkpoints: Path) -> None:
    actions = random_actions(0, 5)
    first = rollout(DreamEnv(checkpoints=tiny_checkpoints), 7, actions)
    second = rollout(DreamEnv(checkpoints=tiny_checkpoints), 7, actions)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert len(np.unique(first[0].reshape(6, -1), axis=0)) > 1  # the dream moves


def test_different_seeds_give_different_dreams(tiny_checkpoints: Path) -> None:
    env = DreamEnv(checkpoints=tiny_checkpoints, obs_type="tokens", temperature=1.0)
    start = {"options": {"observation": start_frames(tiny_checkpoints)[2]}}
    actions = random_actions(0, 4)
    first, _ = rollout(env, 1, actions, **start)
    second, _ = rollout(env, 2, actions, **start)
    np.testing.assert_array_equal(first[0], second[0])  # same real start frame
    assert not np.array_equal(first[1:], second[1:])


def test_observations_never_share_a_buffer(tiny_checkpoints: Path) -> None:
    env = DreamEnv(checkpoints=tiny_checkpoints, render_mode="rgb_array")
    obs0, _ = env.reset(seed=0)
    obs1, *_ = env.step(np.zeros(NUM_KEYS, np.uint8))
    frame = env.render()
    np.testing.assert_array_equal(frame, obs1)
    for a, b in ((obs0, obs1), (obs1, frame), (obs1, env.render())):
        assert not np.shares_memory(a, b)


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (np.zeros(NUM_KEYS - 1, np.uint8), r"shape \(22,\)"),
        (np.zeros((2, NUM_KEYS), np.uint8), r"shape \(22,\)"),
        (np.full(NUM_KEYS, 2, np.uint8), "only 0 and 1"),
        (np.full(NUM_KEYS, 0.5), "only 0 and 1"),
        (["up"] * NUM_KEYS, "only 0 and 1"),
    ],
)
def test_bad_actions_raise_clear_errors(tiny_checkpoints: Path, action: object, match: str) -> None:
    env = DreamEnv(checkpoints=tiny_checkpoints, obs_type="tokens")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


def test_step_before_reset_raises(tiny_checkpoints: Path) -> None:
    env = DreamEnv(checkpoints=tiny_checkpoints, obs_type="tokens")
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        env.step(np.zeros(NUM_KEYS, np.uint8))


@pytest.mark.parametrize(
    ("observation", "match"),
    [
        (np.zeros((32, 32, 3), np.float32), "dtype float32"),
        (np.zeros((32, 32), np.uint8), r"shape \(32, 32\)"),
        (np.zeros((32, 32, 4), np.uint8), r"shape \(32, 32, 4\)"),
        (np.zeros((3, 32, 32, 3), np.uint8), r"1\.\.2 frames"),
        ([[0, 0, 0]], "got list"),
    ],
)
def test_bad_reset_observations_raise_clear_errors(
    tiny_checkpoints: Path, observation: object, match: str
) -> None:
    env = DreamEnv(checkpoints=tiny_checkpoints, obs_type="tokens")
    with pytest.raises(ValueError, match=match):
        env.reset(options={"observation": observation})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"obsrvation": np.zeros((32, 32, 3), np.uint8)})


def test_reset_observation_of_any_size_is_encoded(tiny_checkpoints: Path) -> None:
    env = DreamEnv(checkpoints=tiny_checkpoints, obs_type="tokens")
    world: DreamWorld = env.unwrapped.world
    frame = start_frames(tiny_checkpoints)[5]
    big = np.repeat(np.repeat(frame, 2, axis=0), 3, axis=1)  # (64, 96, 3)
    obs, info = env.reset(options={"observation": big})
    small = frames_to_tensor(resize_frames(big[None], 32, 32))  # (1, 3, 32, 32)
    np.testing.assert_array_equal(obs, world.vision.encode(small)[0].numpy())
    # A stack for the context model: its last frame is the current one.
    stack = start_frames(tiny_checkpoints)[3:5]
    obs, _ = env.reset(options={"observation": stack})
    np.testing.assert_array_equal(obs, world.vision.encode(frames_to_tensor(stack))[1].numpy())


def test_tokens_observations_never_run_the_decoder(
    tiny_checkpoints: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = DreamEnv(checkpoints=tiny_checkpoints, obs_type="tokens", render_mode="rgb_array")

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("vision.decode ran")

    monkeypatch.setattr(env.world.vision, "decode", forbidden)
    env.reset(seed=0)
    for action in random_actions(1, 3):
        env.step(action)
    with pytest.raises(AssertionError, match="decode ran"):  # the patch is live
        env.render()


def test_rgb_step_and_render_share_one_decode(
    tiny_checkpoints: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = DreamEnv(checkpoints=tiny_checkpoints, render_mode="rgb_array")
    vision = env.world.vision
    calls = []
    decode = vision.decode
    monkeypatch.setattr(vision, "decode", lambda tokens: calls.append(1) or decode(tokens))
    env.reset(seed=0)
    obs, *_ = env.step(np.zeros(NUM_KEYS, np.uint8))
    np.testing.assert_array_equal(env.render(), obs)
    assert len(calls) == 2  # one for reset, one for the step; the render reuses it


def test_reward_and_end_heads_and_truncation(
    tiny_checkpoints: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = DreamEnv(checkpoints=tiny_checkpoints, obs_type="tokens", max_episode_steps=3)
    env.reset(seed=0)
    right = np.zeros(NUM_KEYS, np.uint8)
    right[KEY_INDEX["right"]] = 1
    results = [env.step(right) for _ in range(3)]
    # The tiny model learnt reward 1 per step and a low end probability.
    assert all(0.5 < r[1] < 1.5 for r in results)
    assert [r[3] for r in results] == [False, False, True]
    assert not any(r[2] for r in results)
    assert all(0.0 <= r[4]["end_prob"] < 0.5 for r in results)
    sample = env.world.memory.sample

    def ending(*args: object, **kwargs: object):
        out = sample(*args, **kwargs)
        out.end_prob = torch.full_like(out.end_prob, 0.9)
        return out

    monkeypatch.setattr(env.world.memory, "sample", ending)
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(right)
    assert terminated and not truncated and info["end_prob"] == pytest.approx(0.9)


def test_reward_fn_serves_checkpoints_without_heads(tiny_checkpoints: Path, tmp_path: Path) -> None:
    memory = MemoryModel.from_checkpoint(best_model_dir(tiny_checkpoints, "memory"))
    headless_config = replace(memory.config, reward_head=False, end_head=False)
    headless = MemoryModel(headless_config)
    state = {
        k: v
        for k, v in memory.state_dict().items()
        if "reward_head" not in k and "end_head" not in k
    }
    headless.load_state_dict(state)
    save_checkpoint(tmp_path / "memory", model=headless, config=headless_config, training_info={})
    kwargs = {
        "vision": best_model_dir(tiny_checkpoints, "vision"),
        "memory": tmp_path / "memory",
        "start_observations": start_frames(tiny_checkpoints),
    }
    env = DreamEnv(**kwargs)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(np.zeros(NUM_KEYS, np.uint8))
    assert reward == 0.0 and not terminated and info["end_prob"] == 0.0
    env = DreamEnv(**kwargs, reward_fn=lambda frame: float(frame.mean()))
    env.reset(seed=0)
    obs, reward, *_ = env.step(np.zeros(NUM_KEYS, np.uint8))
    assert reward == pytest.approx(float(obs.mean())) and reward > 0


def test_checkpoint_and_start_bank_resolution(
    tiny_checkpoints: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CheckpointError, match=str(tmp_path / "nowhere")):
        DreamEnv(checkpoints=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no vision checkpoint .*best_model"):
        DreamEnv(checkpoints=tmp_path / "empty")
    monkeypatch.setenv("ELWORLD_CHECKPOINTS", str(tiny_checkpoints))
    assert DreamEnv(obs_type="tokens").world.num_start_frames == 8
    explicit = {
        "vision": best_model_dir(tiny_checkpoints, "vision"),
        "memory": best_model_dir(tiny_checkpoints, "memory"),
    }
    with pytest.raises(FileNotFoundError, match="start_observations"):
        DreamEnv(checkpoints=tmp_path / "empty", **explicit)
    # A recording of another size (obs + act) streams through elworld.data.
    clip = np.repeat(start_frames(tiny_checkpoints), 2, axis=1)  # (8, 64, 32, 3)
    np.savez(tmp_path / "episode.npz", obs=clip[:6], act=np.zeros((6, NUM_KEYS), np.uint8))
    env = DreamEnv(**explicit, start_observations=tmp_path / "episode.npz", obs_type="tokens")
    assert env.world.num_start_frames == 6


def test_mismatched_checkpoints_name_both(tiny_checkpoints: Path, tmp_path: Path) -> None:
    vision = VisionModel.from_checkpoint(best_model_dir(tiny_checkpoints, "vision"))
    config = replace(vision.config, codebook_size=32)
    save_checkpoint(tmp_path / "vision", model=VisionModel(config), config=config, training_info={})
    memory = best_model_dir(tiny_checkpoints, "memory")
    with pytest.raises(ValueError, match="vocab_size 16 != vision codebook_size 32") as error:
        DreamEnv(
            vision=tmp_path / "vision",
            memory=memory,
            start_observations=start_frames(tiny_checkpoints),
        )
    assert str(tmp_path / "vision") in str(error.value) and str(memory) in str(error.value)


def test_bad_construction_arguments(tiny_checkpoints: Path) -> None:
    for kwargs, match in (
        ({"obs_type": "pixels"}, "obs_type"),
        ({"render_mode": "ansi"}, "render_mode"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"max_episode_steps": 0}, "max_episode_steps"),
    ):
        with pytest.raises(ValueError, match=match):
            DreamEnv(checkpoints=tiny_checkpoints, **kwargs)


def test_human_render_opens_a_window_and_closes_twice(
    tiny_checkpoints: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    env = DreamEnv(checkpoints=tiny_checkpoints, render_mode="human", render_scale=2)
    env.reset(seed=0)
    env.step(np.zeros(NUM_KEYS, np.uint8))
    import pygame

    assert pygame.display.get_surface().get_size() == (64, 64)
    env.close()
    env.close()
    assert not pygame.display.get_init()


def test_human_render_without_pygame_names_the_package(
    tiny_checkpoints: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pygame", None)  # makes `import pygame` fail
    env = DreamEnv(checkpoints=tiny_checkpoints, render_mode="human")
    with pytest.raises(ImportError, match="pip install pygame-ce"):
        env.reset(seed=0)
    env.close()


def test_gym_make_without_prior_import(tiny_checkpoints: Path) -> None:
    code = (
        "import sys, gymnasium as gym\n"
        "assert 'elworld_gym' not in sys.modules\n"
        f"env = gym.make('{ENV_ID}', checkpoints=sys.argv[1], obs_type='tokens')\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(type(env.unwrapped).__name__, obs.shape, env.spec.max_episode_steps)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(tiny_checkpoints)],
        capture_output=True,
        text=True,
        cwd=tiny_checkpoints,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["DreamEnv", "(8,", "8)", str(elworld_gym.MAX_EPISODE_STEPS)]


def test_bundled_demo_checkpoint_dreams() -> None:
    """The demo world in the repository loads and dreams take_cover as recorded.

    Argmax decoding from one still start (the bank's first real frame, repeated,
    so nothing is sliding or dying yet): the view stays put with no key and
    moves with left or right (apart), each step pays what take_cover pays at
    frame skip 4 (4 tics survived), and the bundled episode-end model gives a
    small hazard at the start of an episode.
    """
    env = gym.make(ENV_ID, temperature=0.0, precision="fp32")  # the bundled checkpoints/
    world = env.unwrapped.world
    assert world.end_model is not None and world.recordings["frame_skip"] == 4
    frame = np.load(REPO / "checkpoints" / "start_frames.npz")["obs"][0]
    last = {}
    for name in ("left", "right", None):
        obs, _ = env.reset(seed=0, options={"observation": frame})
        start = obs
        assert obs.shape == (192, 256, 3) and obs.dtype == np.uint8
        action = np.zeros(NUM_KEYS, np.uint8)
        if name:
            action[KEY_INDEX[name]] = 1
        for _ in range(4):
            obs, reward, terminated, truncated, info = env.step(action)
            assert 3.0 < reward < 5.0 and 0.0 <= info["end_prob"] < 0.01
            assert not terminated or info["end_prob"] > 0
        assert env.observation_space.contains(obs) and info["tokens"].shape == (24, 32)
        last[name] = (_mad(obs, start), obs)
    assert last[None][0] < 1.5 < last["left"][0] and last["right"][0] > 1.5  # keys move the view
    assert _mad(last["left"][1], last["right"][1]) > 1.5  # and left is not right
    env.close()


def _mad(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.abs(x.astype(np.int16) - y.astype(np.int16)).mean())


def _world_with_recordings(tiny_checkpoints: Path, tmp_path: Path, recordings: dict) -> Path:
    """A copy of the tiny world whose memory checkpoint says where its data came from."""
    import json
    import shutil

    root = tmp_path / "world"
    shutil.copytree(tiny_checkpoints, root)
    info_file = best_model_dir(root, "memory") / "training_info.json"
    info = json.loads(info_file.read_text())
    info_file.write_text(json.dumps({**info, "recordings": recordings}))
    return root


def test_render_fps_follows_the_worlds_recorded_rate(
    tiny_checkpoints: Path, tmp_path: Path
) -> None:
    root = _world_with_recordings(
        tiny_checkpoints, tmp_path, {"source": "vizdoom", "frame_skip": 4, "steps_per_second": 8.75}
    )
    env = DreamEnv(root)
    assert env.metadata["render_fps"] == 8.75
    assert env.world.recordings["frame_skip"] == 4
    assert DreamEnv.metadata["render_fps"] == 20  # the class default is untouched
    assert DreamEnv(tiny_checkpoints).metadata["render_fps"] == 20  # unrecorded: 20 fps
    envs = gym.make_vec("ElWorldDream-v0", num_envs=2, checkpoints=root, obs_type="tokens")
    assert envs.metadata["render_fps"] == 8.75


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_precision_is_an_env_option(tiny_checkpoints: Path, precision: str) -> None:
    env = DreamEnv(tiny_checkpoints, precision=precision, temperature=0.0)
    env.reset(seed=0)
    obs, *_ = env.step(np.zeros(NUM_KEYS, np.uint8))
    assert obs.shape == env.observation_space.shape and env.world.precision == precision
    with pytest.raises(ValueError, match="precision"):
        DreamEnv(tiny_checkpoints, precision="fp8")
    with pytest.raises(ValueError, match="guidance"):
        DreamEnv(tiny_checkpoints, guidance=-1.0)


def test_bf16_dreams_what_fp32_dreams(tiny_checkpoints: Path) -> None:
    """bf16 really runs the memory pass in bfloat16, and its argmax dream stays the fp32 one."""
    right = np.zeros(NUM_KEYS, np.uint8)
    right[KEY_INDEX["right"]] = 1
    tokens, dtypes = {}, {}
    for precision in ("bf16", "fp32"):
        env = DreamEnv(tiny_checkpoints, precision=precision, temperature=0.0, obs_type="tokens")
        seen: set[torch.dtype] = set()
        # The transformer blocks' matmuls (the head stays fp32 on purpose).
        linear = next(
            m for m in env.world.memory.blocks.modules() if isinstance(m, torch.nn.Linear)
        )
        hook = linear.register_forward_hook(lambda m, i, out, seen=seen: seen.add(out.dtype))
        env.reset(seed=0)
        tokens[precision] = np.stack([env.step(right)[0] for _ in range(4)])
        hook.remove()
        dtypes[precision] = seen
    assert dtypes == {"bf16": {torch.bfloat16}, "fp32": {torch.float32}}
    assert (tokens["bf16"] == tokens["fp32"]).mean() >= 0.9


def test_start_context_stays_within_a_bank_clip(tiny_checkpoints: Path, tmp_path: Path) -> None:
    frames = np.load(tiny_checkpoints / "start_frames.npz")["obs"][:6]
    first = np.array([True, False, True, False, True, False])
    bank = tmp_path / "bank.npz"
    np.savez(bank, obs=frames, first=first)
    env = DreamEnv(tiny_checkpoints, start_observations=bank)
    world = env.world
    assert world.bank_clip_start.tolist() == [0, 0, 2, 2, 4, 4]
    starts = world.sample_start_indices(np.random.default_rng(0), 50)
    assert set(starts.tolist()) <= {1, 3, 5}  # only frames with a real previous frame
    stacks = world.start_stacks(np.array([2, 3]))  # (2, K, T)
    K = world.context_frames
    assert torch.equal(stacks[0], world.bank[[2] * K])  # a clip's first frame: still scene
    assert torch.equal(stacks[1, -2:], world.bank[[2, 3]])  # its own previous frame, not frame 1
    one_clip = DreamEnv(tiny_checkpoints, start_observations=frames).world  # an array: one clip
    assert one_clip.bank_clip_start.tolist() == [0] * 6


def test_guidance_defaults_to_the_worlds_recommendation(
    tiny_checkpoints: Path, tmp_path: Path
) -> None:
    import json

    root = _world_with_recordings(tiny_checkpoints, tmp_path, {})
    info_file = best_model_dir(root, "memory") / "training_info.json"
    info_file.write_text(
        json.dumps({**json.loads(info_file.read_text()), "sampling": {"guidance": 2.5}})
    )
    assert DreamEnv(root).world.guidance == 2.5
    assert DreamEnv(root, guidance=1.0).world.guidance == 1.0  # an explicit scale wins
    assert DreamEnv(tiny_checkpoints).world.guidance == 1.0  # no recommendation: off
    env = DreamEnv(root)  # the tiny memory model was trained without action dropout
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action_dropout"):
        env.step(np.zeros(NUM_KEYS, np.uint8))
