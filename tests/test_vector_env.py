"""Tests for the batched dream env (``elworld_gym.vector_env.DreamVectorEnv``)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from elworld.keys import NUM_KEYS
from elworld_gym.dream_env import DreamEnv
from elworld_gym.vector_env import DreamVectorEnv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENV_ID = "elworld_gym:ElWorldDream-v0"


def start_frames(root: Path) -> np.ndarray:
    with np.load(root / "start_frames.npz") as archive:
        return archive["obs"]


def random_actions(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return (np.random.default_rng(seed).random((*shape, NUM_KEYS)) < 0.3).astype(np.uint8)


def bank_rows(envs: DreamVectorEnv, tokens: np.ndarray) -> list[int]:
    """Start-bank index whose tokens equal each env's tokens (-1: not a start frame)."""
    bank = envs.world.bank.numpy()  # (S, T)
    matches = [np.flatnonzero((bank == row).all(axis=1)) for row in tokens.reshape(len(tokens), -1)]
    return [int(m[0]) if m.size else -1 for m in matches]


def test_make_vec_uses_the_batched_vector_env(tiny_checkpoints: Path) -> None:
    envs = gym.make_vec(ENV_ID, num_envs=3, checkpoints=tiny_checkpoints)
    assert isinstance(envs, DreamVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.single_observation_space == gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
    assert envs.observation_space.shape == (3, 32, 32, 3)
    assert envs.single_action_space == gym.spaces.MultiBinary(NUM_KEYS)
    assert envs.action_space == batch_space(gym.spaces.MultiBinary(NUM_KEYS), 3)  # (3, 22) 0/1
    assert envs.max_episode_steps == gym.spec("ElWorldDream-v0").max_episode_steps
    obs, info = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    assert info["tokens"].shape == (3, 8, 8) and info["_tokens"].all()
    obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert envs.observation_space.contains(obs)
    assert rewards.shape == terminated.shape == truncated.shape == (3,)
    envs.close()
    envs.close()


def test_temperature_zero_batch_equals_single_envs(tiny_checkpoints: Path) -> None:
    n, steps = 3, 4
    frames = start_frames(tiny_checkpoints)
    stacks = [frames[2 * i : 2 * i + 2] for i in range(n)]  # a different start per env
    actions = random_actions(0, (steps, n))
    envs = DreamVectorEnv(n, tiny_checkpoints, temperature=0.0, device="cpu")
    envs.reset(seed=0, options={"observation": stacks[0]})
    for i in range(1, n):
        obs, _ = envs.reset(options={"observation": stacks[i], "reset_mask": np.arange(n) == i})
    batched = [obs]
    batched_rewards = []
    for t in range(steps):
        obs, rewards, *_ = envs.step(actions[t])
        batched.append(obs)
        batched_rewards.append(rewards)
    assert len({batched[0][i].tobytes() for i in range(n)}) == n  # distinct starts
    for i in range(n):
        env = DreamEnv(checkpoints=tiny_checkpoints, temperature=0.0, device="cpu")
        obs, _ = env.reset(seed=123, options={"observation": stacks[i]})
        np.testing.assert_array_equal(obs, batched[0][i])
        for t in range(steps):
            obs, reward, *_ = env.step(actions[t, i])
            np.testing.assert_array_equal(obs, batched[t + 1][i])
            assert reward == pytest.approx(batched_rewards[t][i], rel=1e-5)


def test_next_step_autoreset(tiny_checkpoints: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    envs = DreamVectorEnv(2, tiny_checkpoints, obs_type="tokens", max_episode_steps=2)
    sample = envs.world.memory.sample
    ends = []  # the end probabilities the patched model reports, one call at a time

    def scripted(*args: object, **kwargs: object):
        out = sample(*args, **kwargs)
        out.end_prob = torch.tensor(ends.pop(0), dtype=out.end_prob.dtype)
        return out

    monkeypatch.setattr(envs.world.memory, "sample", scripted)
    envs.reset(seed=0)
    act = np.zeros((2, NUM_KEYS), np.uint8)
    ends.append([0.9, 0.1])  # env 0 terminates at step 1
    _, rewards, terminated, truncated, _ = envs.step(act)
    assert terminated.tolist() == [True, False] and truncated.tolist() == [False, False]
    assert (rewards != 0).all()
    ends.append([0.1])  # step 2: env 0 resets, only env 1 runs the model (and truncates)
    obs, rewards, terminated, truncated, info = envs.step(act)
    assert rewards[0] == 0.0 and rewards[1] != 0.0
    assert terminated.tolist() == [False, False] and truncated.tolist() == [False, True]
    assert info["end_prob"][0] == 0.0
    assert bank_rows(envs, obs[:1]) != [-1]  # env 0 is back on a real start frame
    ends.append([0.1])  # step 3: env 1 resets; env 0 runs its first step again
    obs, rewards, terminated, truncated, _ = envs.step(act)
    assert rewards[1] == 0.0 and rewards[0] != 0.0
    assert truncated.tolist() == [False, False] and terminated.tolist() == [False, False]
    assert bank_rows(envs, obs[1:]) != [-1]
    ends.append([0.1, 0.1])  # step 4: env 0 hits max_episode_steps=2 since its reset
    _, _, terminated, truncated, _ = envs.step(act)
    assert truncated.tolist() == [True, False] and not terminated.any()
    assert not ends


def test_seeding_and_per_env_start_frames(tiny_checkpoints: Path) -> None:
    actions = random_actions(3, (3, 6))

    def run(seed: int) -> np.ndarray:
        envs = DreamVectorEnv(6, tiny_checkpoints, obs_type="tokens")
        obs, _ = envs.reset(seed=seed)
        starts = bank_rows(envs, obs)
        return np.stack([obs] + [envs.step(a)[0] for a in actions]), starts

    (first, starts), (second, _), (other, _) = run(5), run(5), run(6)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)
    assert len(set(starts)) > 1  # each env drew its own start frame
    assert min(starts) >= 1  # room for the context model's previous frame


def test_render_returns_a_tuple_of_frames(tiny_checkpoints: Path) -> None:
    envs = DreamVectorEnv(2, tiny_checkpoints, render_mode="rgb_array")
    obs, _ = envs.reset(seed=0)
    frames = envs.render()
    assert isinstance(frames, tuple) and len(frames) == 2
    for frame, ob in zip(frames, obs):
        np.testing.assert_array_equal(frame, ob)
        assert not np.shares_memory(frame, obs)


@pytest.mark.parametrize("step_chunk, passes", [(None, [2, 2]), (4, [4]), (3, [3, 1])])
def test_memory_passes_in_chunks_and_no_decode_for_tokens(
    tiny_checkpoints: Path, monkeypatch: pytest.MonkeyPatch, step_chunk: int | None, passes: list
) -> None:
    envs = DreamVectorEnv(4, tiny_checkpoints, obs_type="tokens", step_chunk=step_chunk)
    calls = []
    sample = envs.world.memory.sample

    def counted(tokens: torch.Tensor, *args: object, **kwargs: object):
        calls.append(len(tokens))
        return sample(tokens, *args, **kwargs)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("vision.decode ran")

    monkeypatch.setattr(envs.world.memory, "sample", counted)
    monkeypatch.setattr(envs.world.vision, "decode", forbidden)
    envs.reset(seed=0)
    for actions in random_actions(4, (3, 4)):
        envs.step(actions)
    assert calls == passes * 3


def test_chunked_steps_dream_what_one_pass_dreams(tiny_checkpoints: Path) -> None:
    grids = []
    for step_chunk in (1, 4):
        envs = DreamVectorEnv(
            4, tiny_checkpoints, obs_type="tokens", temperature=0.0, precision="fp32",
            step_chunk=step_chunk,
        )  # fmt: skip
        obs, _ = envs.reset(seed=3)
        for actions in random_actions(4, (5, 4)):
            obs, *_ = envs.step(actions)
        grids.append(obs)
    np.testing.assert_array_equal(grids[0], grids[1])
    with pytest.raises(ValueError, match="step_chunk must be a positive int"):
        DreamVectorEnv(2, tiny_checkpoints, step_chunk=0)


def test_bad_vector_actions_raise(tiny_checkpoints: Path) -> None:
    envs = DreamVectorEnv(2, tiny_checkpoints, obs_type="tokens")
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2, 22\)"):
        envs.step(np.zeros(NUM_KEYS, np.uint8))
    bad = np.zeros((2, NUM_KEYS), np.uint8)
    bad[1, 3] = 2
    with pytest.raises(ValueError, match=r"actions\[1\] must contain only 0 and 1"):
        envs.step(bad)
    with pytest.raises(ValueError, match="reset_mask"):
        envs.reset(options={"reset_mask": np.ones(3, bool)})


def test_compiled_dream_steps_like_the_eager_one(tiny_checkpoints) -> None:
    """compile=True changes speed, not the dream: the same tokens at temperature 0."""
    runs = []
    for compile_memory in (False, True):
        envs = DreamVectorEnv(
            2, tiny_checkpoints, obs_type="tokens", temperature=0.0, precision="fp32",
            compile=compile_memory,
        )  # fmt: skip
        obs, _ = envs.reset(seed=0)
        frames = [obs]
        for step in range(3):
            action = np.zeros((2, 22), np.uint8)
            action[:, 3 + step % 2] = 1
            frames.append(envs.step(action)[0])
        runs.append(np.stack(frames))
    assert np.array_equal(runs[0], runs[1])
