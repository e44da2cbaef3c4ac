"""A control policy that reads the world's memory: the episode-end model's GRU state.

The dream keeps that state per dream (``DreamWorld.end_state``); ``Agent`` steps
the same model on the real frames' tokens and its own keys. The test that
matters: the agent replaying a dream's frames takes the dream policy's actions,
step for step, because its state evolves as the world's did.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from elworld import checkpoint
from elworld.control import Agent, ControlConfig, ControlPolicy
from elworld.control.rollout import CandidatesPolicy, agent_policy, still_stacks
from elworld.control.train import ControlTrainConfig, train_control
from elworld.model.end import EndConfig, EndModel
from elworld.model.memory import MemoryModel
from elworld.world.dream import DreamWorld

pytest.importorskip("cmaes", reason="needs the cmaes package (pip install 'elworld[rl]')")


def _save_end(root: Path, seed: int) -> None:
    memory = MemoryModel.from_checkpoint(checkpoint.best_model_dir(root, "memory"))
    c = memory.config
    torch.manual_seed(seed)
    model = EndModel(EndConfig(vocab_size=c.vocab_size, tokens_per_frame=c.grid_height * c.grid_width,
                               n_embd=8, hidden=6))  # fmt: skip
    checkpoint.save_checkpoint(checkpoint.best_model_dir(root, "end"), model=model,
                               config=model.config, training_info={"epoch": 1})  # fmt: skip


@pytest.fixture(scope="module")
def world_with_end(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("memory_state") / "world"
    shutil.copytree(tiny_checkpoints, root)
    _save_end(root, seed=0)
    return root


@pytest.fixture(scope="module")
def trained(world_with_end: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("memory_state_run")
    cfg = ControlTrainConfig(out=out, checkpoints=world_with_end, generations=2, population=4,
                             rollouts=1, max_steps=5, eval_every=2, keys="left,right",
                             device="cpu", precision="fp32", memory_state=True)  # fmt: skip
    train_control(cfg, progress=False)
    return checkpoint.best_model_dir(out, "control")


def test_the_policy_reads_the_state_and_names_a_missing_one() -> None:
    config = ControlConfig(vocab_size=8, grid_height=4, grid_width=4, row_bands=2, col_bands=2,
                           memory_state=5)  # fmt: skip
    assert config.num_features == 2 * 2 * 2 * 2 + 5  # frame + velocity + state
    policy = ControlPolicy(config)
    policy.set_flat(np.random.default_rng(0).normal(size=config.num_params))
    current = torch.zeros(3, config.frame_features)
    state = torch.zeros(3, 5)
    features = policy.features(current, current, state)
    assert features.shape == (3, config.num_features)
    other = policy.features(current, current, state + 1)
    assert not torch.equal(policy.logits(features), policy.logits(other))  # the state counts
    with pytest.raises(ValueError, match="episode-end model's state"):
        policy.features(current, current)
    with pytest.raises(ValueError, match="memory_state"):
        ControlConfig(memory_state=-1)


def test_training_records_the_state_size_and_the_agent_acts_as_in_the_dream(
    trained: Path, world_with_end: Path, one_torch_thread
) -> None:
    agent = Agent.from_checkpoint(trained, checkpoints=world_with_end)
    policy = agent.policy
    assert policy.config.memory_state == 6  # the end model's GRU width
    policy.set_flat(np.random.default_rng(3).normal(size=policy.config.num_params) * 3)
    world = DreamWorld.from_checkpoints(world_with_end, num_envs=1, device="cpu",
                                        precision="fp32")  # fmt: skip
    world.seed(0)
    start = world.bank.view(-1, world.tokens_per_frame)[:1]  # (1, T)
    world.reset_envs([0], still_stacks(world, start))
    dream = agent_policy(policy, 1, world)
    dream.reset(1, seed=0)
    frames, actions, states = [], [], []
    for _ in range(8):
        history = world.history[:1].view(1, -1, *world.grid_shape)
        action = dream.act(history, np.arange(1))
        frames.append(history[0, -1].clone())
        actions.append(action[0])
        states.append(world.end_state[0].clone())
        world.step(action, [0])
    assert not torch.equal(states[0], states[-1])  # the dream's memory moved
    agent.reset()
    for grid, action in zip(frames, actions):
        assert np.array_equal(agent.act_on_tokens(grid[None]), action)
    assert torch.allclose(agent._end_state[0], world.end_state[0], atol=1e-6)  # the same memory


def test_a_world_without_or_with_another_end_model_is_refused(
    trained: Path, world_with_end: Path, tiny_checkpoints: Path, tmp_path: Path
) -> None:
    policy = ControlPolicy.from_checkpoint(trained)
    world = DreamWorld.from_checkpoints(tiny_checkpoints, num_envs=1, device="cpu", precision="fp32")
    with pytest.raises(ValueError, match="episode-end model"):
        CandidatesPolicy(policy, policy.get_flat()[None], world)
    other = tmp_path / "other"
    shutil.copytree(world_with_end, other)
    _save_end(other, seed=1)  # same shape, other weights
    with pytest.raises(checkpoint.CheckpointError, match="episode-end model"):
        Agent.from_checkpoint(trained, checkpoints=other)
    with pytest.raises(ValueError, match="no episode-end model"):
        train_control(ControlTrainConfig(out=tmp_path / "o", checkpoints=tiny_checkpoints,
                                         generations=1, keys="left,right", device="cpu",
                                         memory_state=True), progress=False)  # fmt: skip
    info = json.loads((trained / "training_info.json").read_text())
    assert info["world"]["end_fingerprint"] == checkpoint.checkpoint_fingerprint(
        checkpoint.best_model_dir(world_with_end, "end")
    )
