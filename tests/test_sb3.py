"""Tests for the SB3 ``VecEnv`` over the batched dream (``elworld_gym.sb3.DreamVecEnv``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from elworld.keys import NUM_KEYS

pytest.importorskip("stable_baselines3", reason="the optional 'rl' extra is not installed")
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor  # noqa: E402

from elworld_gym.sb3 import DreamVecEnv  # noqa: E402
from elworld_gym.vector_env import DreamVectorEnv  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_actions(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return (np.random.default_rng(seed).random((*shape, NUM_KEYS)) < 0.3).astype(np.float32)


def is_start_frame(envs: DreamVecEnv, tokens: np.ndarray) -> bool:
    """Whether the token grid ``(gh, gw)`` is a frame of the start bank."""
    bank = envs.env.world.bank.numpy()  # (S, T)
    return bool((bank == tokens.reshape(1, -1)).all(axis=1).any())


def scripted_ends(envs: DreamVecEnv, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list]:
    """Make the memory model report scripted end probabilities; record what it sampled."""
    sample = envs.env.world.memory.sample
    ends: list[list[float]] = []  # appended by the test, one list per model call
    sampled: list[torch.Tensor] = []  # the tokens (n, T) of each call

    def scripted(*args: object, **kwargs: object):
        out = sample(*args, **kwargs)
        out.end_prob = torch.tensor(ends.pop(0), dtype=out.end_prob.dtype)
        sampled.append(out.tokens.clone())
        return out

    monkeypatch.setattr(envs.env.world.memory, "sample", scripted)
    return ends, sampled


def test_spaces_reset_and_attributes(tiny_checkpoints: Path) -> None:
    envs = DreamVecEnv(3, checkpoints=tiny_checkpoints, obs_type="tokens")
    assert isinstance(envs.env, DreamVectorEnv) and envs.num_envs == 3
    assert envs.observation_space == gym.spaces.Box(0, 15, (8, 8), np.int64)
    assert envs.action_space == gym.spaces.MultiBinary(NUM_KEYS)
    assert envs.get_attr("max_episode_steps") == [gym.spec("ElWorldDream-v0").max_episode_steps] * 3
    assert envs.get_attr("render_mode", indices=[1]) == [None]
    assert envs.env_is_wrapped(gym.Wrapper) == [False] * 3
    obs = envs.reset()
    assert obs.shape == (3, 8, 8) and obs.dtype == np.int64
    assert all(is_start_frame(envs, grid) for grid in obs)
    assert [sorted(info) for info in envs.reset_infos] == [["end_prob", "tokens"]] * 3
    obs, rewards, dones, infos = envs.step(random_actions(0, (3,)))
    assert obs.shape == (3, 8, 8) and obs.dtype == np.int64
    assert rewards.dtype == np.float32 and dones.dtype == np.bool_ and rewards.shape == (3,)
    assert len(infos) == 3 and infos[0]["tokens"].shape == (8, 8)
    envs.set_attr("temperature_note", 0.5)
    assert envs.get_attr("temperature_note") == [0.5] * 3
    with pytest.raises(ValueError, match="all 3 dreams"):
        envs.set_attr("max_episode_steps", 4, indices=[0])
    with pytest.raises(ValueError, match="all 3 dreams"):
        envs.env_method("render", indices=1)
    envs.close()


def test_wraps_a_vector_env_and_checks_arguments(tiny_checkpoints: Path) -> None:
    vector = DreamVectorEnv(2, tiny_checkpoints, obs_type="tokens")
    assert DreamVecEnv(env=vector).num_envs == 2
    with pytest.raises(ValueError, match="not both"):
        DreamVecEnv(env=vector, obs_type="rgb")
    with pytest.raises(ValueError, match="num_envs=3"):
        DreamVecEnv(3, env=vector)
    with pytest.raises(TypeError, match="DreamVectorEnv"):
        DreamVecEnv(env=gym.make_vec("CartPole-v1", num_envs=2))


def test_same_step_autoreset(tiny_checkpoints: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    envs = DreamVecEnv(2, checkpoints=tiny_checkpoints, obs_type="tokens", max_episode_steps=3)
    ends, sampled = scripted_ends(envs, monkeypatch)
    envs.seed(0)
    envs.reset()
    act = np.zeros((2, NUM_KEYS), np.float32)

    ends.append([0.9, 0.1])  # step 1: env 0 terminates
    obs, rewards, dones, infos = envs.step(act)
    assert dones.tolist() == [True, False] and (rewards != 0).all()
    assert not infos[0]["TimeLimit.truncated"] and not infos[1]["TimeLimit.truncated"]
    assert "terminal_observation" not in infos[1]
    last = infos[0]["terminal_observation"]  # the dreamed frame, not the reset one
    np.testing.assert_array_equal(last.reshape(-1), sampled[0][0].numpy())
    np.testing.assert_array_equal(infos[0]["tokens"], last)
    assert is_start_frame(envs, obs[0])  # the returned obs is env 0's new start
    np.testing.assert_array_equal(obs[1].reshape(-1), sampled[0][1].numpy())
    assert envs.reset_infos[0]["end_prob"] == 0.0

    ends.append([0.1, 0.1])  # step 2: both envs run the model (no wasted reset step)
    obs, rewards, dones, infos = envs.step(act)
    assert len(sampled[1]) == 2 and (rewards != 0).all() and not dones.any()

    ends.append([0.1, 0.1])  # step 3: env 1 reaches max_episode_steps; env 0 is at 2
    obs, rewards, dones, infos = envs.step(act)
    assert dones.tolist() == [False, True]
    assert infos[1]["TimeLimit.truncated"] and not infos[0]["TimeLimit.truncated"]
    np.testing.assert_array_equal(
        infos[1]["terminal_observation"].reshape(-1), sampled[2][1].numpy()
    )
    assert is_start_frame(envs, obs[1])

    ends.append([0.1, 0.1])  # step 4: env 0 truncates (3 steps since its reset)
    _, _, dones, infos = envs.step(act)
    assert dones.tolist() == [True, False] and infos[0]["TimeLimit.truncated"]
    assert not ends


def test_matches_dummy_vec_env_over_single_envs(tiny_checkpoints: Path) -> None:
    # One start frame and argmax sampling: both vector envs are deterministic and must agree.
    with np.load(tiny_checkpoints / "start_frames.npz") as archive:
        start = archive["obs"][3:4]
    kwargs = {
        "checkpoints": tiny_checkpoints,
        "obs_type": "tokens",
        "temperature": 0.0,
        "start_observations": start,
        "max_episode_steps": 3,
        "device": "cpu",
    }
    n, steps = 3, 10
    batched = DreamVecEnv(n, **kwargs)
    single = DummyVecEnv([lambda: gym.make("elworld_gym:ElWorldDream-v0", **kwargs)] * n)
    actions = random_actions(1, (steps, n))
    np.testing.assert_array_equal(batched.reset(), single.reset())
    ended = 0
    for t in range(steps):
        obs_b, rew_b, done_b, info_b = batched.step(actions[t])
        obs_s, rew_s, done_s, info_s = single.step(actions[t])
        np.testing.assert_array_equal(obs_b, obs_s)
        np.testing.assert_allclose(rew_b, rew_s, rtol=1e-5)
        np.testing.assert_array_equal(done_b, done_s)
        for b, s in zip(info_b, info_s):
            assert b["TimeLimit.truncated"] == s["TimeLimit.truncated"]
            assert ("terminal_observation" in b) == ("terminal_observation" in s)
            if "terminal_observation" in b:
                np.testing.assert_array_equal(b["terminal_observation"], s["terminal_observation"])
                ended += 1
    assert ended >= n * (steps // 3)  # every env ended at least every third step


def test_few_hundred_steps_episode_accounting(tiny_checkpoints: Path) -> None:
    n, steps, limit = 4, 80, 10  # 320 env steps
    envs = VecMonitor(DreamVecEnv(n, checkpoints=tiny_checkpoints, obs_type="tokens",
                                  max_episode_steps=limit))  # fmt: skip
    envs.seed(3)
    obs = envs.reset()
    lengths = np.zeros(n, dtype=int)
    finished = []
    for actions in random_actions(2, (steps, n)):
        obs, rewards, dones, infos = envs.step(actions)
        assert envs.observation_space.contains(obs[0]) and np.isfinite(rewards).all()
        lengths += 1
        for i in np.flatnonzero(dones):
            info = infos[i]
            assert info["episode"]["l"] == lengths[i] <= limit
            if info["TimeLimit.truncated"]:
                assert lengths[i] == limit
            if lengths[i] < limit:
                assert not info["TimeLimit.truncated"]
            assert info["terminal_observation"].shape == (8, 8)
            assert is_start_frame(envs.venv, obs[i])
            finished.append(lengths[i])
            lengths[i] = 0
    assert sum(finished) + lengths.sum() == n * steps
    assert len(finished) >= n * (steps // limit)


def test_seed_reproduces_the_dreams(tiny_checkpoints: Path) -> None:
    actions = random_actions(4, (40, 3))

    def run(seed: int) -> tuple[np.ndarray, np.ndarray]:
        envs = DreamVecEnv(3, checkpoints=tiny_checkpoints, obs_type="tokens", max_episode_steps=7)
        envs.seed(seed)
        observations, dones = [envs.reset()], []
        for a in actions:
            obs, _, done, _ = envs.step(a)
            observations.append(obs)
            dones.append(done)
        return np.stack(observations), np.stack(dones)

    (first, first_dones), (second, second_dones), (other, _) = run(5), run(5), run(6)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first_dones, second_dones)
    assert first_dones.sum() >= 3 * 5  # the replay crossed several auto-resets
    assert not np.array_equal(first, other)


def test_reset_options_per_env(tiny_checkpoints: Path) -> None:
    with np.load(tiny_checkpoints / "start_frames.npz") as archive:
        frames = archive["obs"]
    envs = DreamVecEnv(3, checkpoints=tiny_checkpoints, obs_type="tokens")
    world = envs.env.world
    grid = (8, 8)
    envs.set_options({"observation": frames[5]})  # the same frame for every env
    obs = envs.reset()
    expected = world.encode_observation(frames[5])[-1].numpy().reshape(grid)
    assert all(np.array_equal(grid_obs, expected) for grid_obs in obs)
    envs.set_options([{}, {"observation": frames[2]}, {}])  # env 1 alone gets a frame
    obs = envs.reset()
    np.testing.assert_array_equal(
        obs[1], world.encode_observation(frames[2])[-1].numpy().reshape(grid)
    )
    assert is_start_frame(envs, obs[0]) and is_start_frame(envs, obs[2])


def test_rgb_observations_and_images(tiny_checkpoints: Path) -> None:
    envs = DreamVecEnv(
        2, checkpoints=tiny_checkpoints, render_mode="rgb_array", max_episode_steps=2
    )
    assert envs.observation_space == gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
    obs = envs.reset()
    images = envs.get_images()
    assert len(images) == 2
    np.testing.assert_array_equal(np.stack(images), obs)
    assert envs.render().shape == (64, 32, 3)  # SB3 tiles the two frames
    ended = 0
    for actions in random_actions(5, (2, 2)):  # every episode ends within 2 steps
        obs, _, dones, infos = envs.step(actions)
        assert obs.shape == (2, 32, 32, 3) and obs.dtype == np.uint8
        for i in np.flatnonzero(dones):
            last = infos[i]["terminal_observation"]
            assert last.shape == (32, 32, 3) and last.dtype == np.uint8
            assert not np.shares_memory(last, obs)
            ended += 1
    assert ended >= 2


def test_ppo_learns_a_few_hundred_steps(tiny_checkpoints: Path) -> None:
    envs = VecMonitor(DreamVecEnv(4, checkpoints=tiny_checkpoints, obs_type="tokens",
                                  max_episode_steps=16))  # fmt: skip
    model = PPO("MlpPolicy", envs, n_steps=32, batch_size=64, n_epochs=2, seed=0, device="cpu")
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256
    assert len(model.ep_info_buffer) >= 4 * (256 // 4 // 16)  # episodes seen through VecMonitor
    assert all(info["l"] <= 16 for info in model.ep_info_buffer)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters()))
    action, _ = model.predict(envs.reset(), deterministic=True)
    assert action.shape == (4, NUM_KEYS) and set(np.unique(action)) <= {0, 1}


def test_missing_sb3_names_the_rl_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "elworld_gym.sb3")
    for name in [m for m in sys.modules if m.startswith("stable_baselines3")]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it now fails
    with pytest.raises(ImportError, match=r"pip install 'elworld\[rl\]'"):
        importlib.import_module("elworld_gym.sb3")
