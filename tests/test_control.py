"""Control agents: CMA-ES training in a tiny dream, the checkpoint, the world check, the eval report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from elworld import checkpoint
from elworld.cli import main
from elworld.control import Agent, ControlConfig, ControlPolicy
from elworld.control.cli import _frame_skip
from elworld.control.evaluate import (
    DreamSettings,
    build_report,
    markdown_report,
    play_dream,
    play_real,
)
from elworld.control.rollout import CandidatesPolicy
from elworld.control.train import ControlTrainConfig, split_bank, train_control, training_frames
from elworld.control.world_info import describe_world, resolve_keys
from elworld.keys import KEY_INDEX, NUM_KEYS
from elworld.model.memory import MemoryModel
from elworld.world.dream import DreamWorld
from elworld.world.loading import CHECKPOINTS_ENV_VAR, resolve_checkpoints

from conftest import torch_threads

# Only training (CMA-ES) needs the cmaes package: the tests that train or use a trained
# checkpoint skip without it, the others (world facts, baselines, reports) run.
CMAES_REASON = "needs the cmaes package (pip install 'elworld[rl]')"

TINY_RUN = dict(
    keys="left,right", population=4, rollouts=2, max_steps=6, eval_every=2, device="cpu"
)


def _train(out: Path, root: Path, generations: int, resume: bool = False) -> dict:
    pytest.importorskip("cmaes", reason=CMAES_REASON)
    cfg = ControlTrainConfig(
        out=out, checkpoints=root, generations=generations, resume=resume, **TINY_RUN
    )
    return train_control(cfg, progress=False)


@pytest.fixture(scope="module")
def trained(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A control checkpoint root trained for 4 generations in the tiny dream."""
    pytest.importorskip("cmaes", reason=CMAES_REASON)
    out = tmp_path_factory.mktemp("control")
    with torch_threads(1):
        _train(out, tiny_checkpoints, generations=4)
    return out


def _world_copy(
    root: Path, dest: Path, *, perturb_memory: bool, recordings: dict | None = None
) -> Path:
    """A copy of the tiny world; its memory weights changed, or its recordings described."""
    shutil.copytree(root, dest)
    memory_dir = checkpoint.best_model_dir(dest, "memory")
    if perturb_memory:
        memory = MemoryModel.from_checkpoint(memory_dir)
        with torch.no_grad():
            next(memory.parameters()).add_(0.01)
        checkpoint.save_checkpoint(
            memory_dir, model=memory, config=memory.config, training_info={"epoch": 1}
        )
    if recordings is not None:
        info_file = memory_dir / checkpoint.TRAINING_INFO_FILE
        info = json.loads(info_file.read_text())
        info_file.write_text(json.dumps({**info, "recordings": recordings}))
    return dest


def test_cli_trains_saves_and_the_agent_acts_on_a_real_size_frame(
    tiny_checkpoints: Path, tmp_path: Path, one_torch_thread
) -> None:
    pytest.importorskip("cmaes", reason=CMAES_REASON)
    out = tmp_path / "runs"
    args = ["train", "control", "--checkpoints", str(tiny_checkpoints), "--out", str(out)]
    args += ["--keys", "left,right", "--generations", "3", "--population", "4"]
    args += ["--rollouts", "2", "--max-steps", "6", "--eval-every", "2", "--device", "cpu"]
    assert main(args) == 0
    best = checkpoint.best_model_dir(out, "control")
    for name in ("model.safetensors", "config.json", "training_info.json", "README.md"):
        assert (best / name).is_file(), name
    assert [g for g, _ in checkpoint.list_epoch_checkpoints(out, "control")] == [2, 3]
    info = json.loads((best / "training_info.json").read_text())
    paths = resolve_checkpoints(tiny_checkpoints)
    assert info["world"]["vision_fingerprint"] == checkpoint.checkpoint_fingerprint(paths.vision)
    assert info["world"]["memory_fingerprint"] == checkpoint.checkpoint_fingerprint(paths.memory)
    assert info["choices"] == ["none", "left", "right"]
    assert info["cma"]["population"] == 4 and info["generation"] in (2, 3)
    assert "Agent.from_checkpoint" in (best / "README.md").read_text()

    agent = Agent.from_checkpoint(best, checkpoints=tiny_checkpoints)
    agent.reset()
    rng = np.random.default_rng(0)
    for _ in range(3):
        action = agent.act(rng.integers(0, 256, (192, 256, 3), dtype=np.uint8))
        assert action.shape == (NUM_KEYS,) and action.dtype == np.uint8
        assert action.sum() <= 1
        assert set(np.flatnonzero(action)) <= {KEY_INDEX["left"], KEY_INDEX["right"]}
    with pytest.raises(ValueError, match="uint8"):
        agent.act(np.zeros((192, 256, 3), dtype=np.float32))


def test_the_checkpoint_refuses_a_different_world(
    trained: Path, tiny_checkpoints: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    best = checkpoint.best_model_dir(trained, "control")
    other = _world_copy(tiny_checkpoints, tmp_path / "other", perturb_memory=True)
    with pytest.raises(checkpoint.CheckpointError) as error:
        Agent.from_checkpoint(best, checkpoints=other)
    message = str(error.value)
    assert str(checkpoint.best_model_dir(other, "memory")) in message
    assert str(checkpoint.best_model_dir(tiny_checkpoints, "memory")) in message
    assert "is not the vision" not in message  # the vision model is the same
    # The root comes from $ELWORLD_CHECKPOINTS when no argument names one, as in the dream env.
    monkeypatch.setenv(CHECKPOINTS_ENV_VAR, str(other))
    with pytest.raises(checkpoint.CheckpointError, match="another world"):
        Agent.from_checkpoint(best)
    monkeypatch.setenv(CHECKPOINTS_ENV_VAR, str(tiny_checkpoints))
    assert Agent.from_checkpoint(best).choices == ("none", "left", "right")


def test_resume_continues_exactly_where_the_run_stopped(
    tiny_checkpoints: Path, trained: Path, tmp_path: Path, one_torch_thread
) -> None:
    _train(tmp_path, tiny_checkpoints, generations=2)
    summary = _train(tmp_path, tiny_checkpoints, generations=4, resume=True)
    assert summary["generation"] == 4
    resumed = checkpoint.load_state_dict(checkpoint.epoch_checkpoint_dir(tmp_path, "control", 4))
    straight = checkpoint.load_state_dict(checkpoint.epoch_checkpoint_dir(trained, "control", 4))
    assert set(resumed) == set(straight)
    for name in straight:
        assert torch.equal(resumed[name], straight[name]), name
    state = checkpoint.load_training_state(checkpoint.epoch_checkpoint_dir(tmp_path, "control", 4))
    assert [h["generation"] for h in state["trainer_state"]["history"]] == [1, 2, 3, 4]


def test_init_from_starts_cma_es_at_the_previous_agent_in_another_world(
    tiny_checkpoints: Path, trained: Path, tmp_path: Path, one_torch_thread
) -> None:
    from elworld.control.train import _Run

    source = checkpoint.best_model_dir(trained, "control")
    other = _world_copy(tiny_checkpoints, tmp_path / "world", perturb_memory=True)
    cfg = ControlTrainConfig(
        out=tmp_path / "out", checkpoints=other, generations=1, init_from=source,
        sigma=0.05, **{k: v for k, v in TINY_RUN.items() if k != "keys"},
    )  # fmt: skip
    run = _Run(cfg)  # a world the agent was not trained in: allowed for a warm start
    previous = ControlPolicy.from_checkpoint(source)
    np.testing.assert_array_equal(run.cma.mean, previous.get_flat())
    for name, value in previous.state_dict().items():  # features as fitted before, not refitted
        assert torch.equal(run.policy.state_dict()[name], value), name
    assert run.policy.config == previous.config
    assert run.started_from == {"flag": "--init-from", "checkpoint": str(source),
                                "fingerprint": checkpoint.checkpoint_fingerprint(source)}  # fmt: skip
    with pytest.raises(ValueError, match="not both"):
        ControlTrainConfig(out=tmp_path, resume=True, init_from=source)


@pytest.mark.parametrize("hold", [1, 3])
def test_dream_candidates_act_as_the_agent_does(
    trained: Path, tiny_checkpoints: Path, hold: int
) -> None:
    agent = Agent.from_checkpoint(
        checkpoint.best_model_dir(trained, "control"), checkpoints=tiny_checkpoints
    )
    policy = agent.policy
    policy.config.hold = hold
    rng = np.random.default_rng(1)
    policy.set_flat(rng.normal(size=policy.config.num_params))  # a policy that does act
    frames = np.load(tiny_checkpoints / "start_frames.npz")["obs"]
    tokens = [agent.tokens(frame) for frame in frames]  # (1, gh, gw) each
    other = rng.normal(size=policy.config.num_params)
    dream = CandidatesPolicy(policy, np.stack([policy.get_flat(), other]))
    dream.reset(2, seed=0)
    agent.reset()
    chosen = []
    for t, grid in enumerate(tokens):
        history = torch.stack([tokens[max(t - 1, 0)][0], grid[0]])  # (K=2, gh, gw): a still start
        actions = dream.act(torch.stack([history, history]), np.arange(2))
        assert np.array_equal(actions[0], agent.act_on_tokens(grid))
        chosen.append(actions[0])
    assert len({a.tobytes() for a in chosen}) > 1, "a random policy should not be constant"
    # A decision is kept for `hold` steps: actions change only at multiples of it.
    changes = [t for t in range(1, len(chosen)) if not np.array_equal(chosen[t], chosen[t - 1])]
    assert all(t % hold == 0 for t in changes)


def test_dream_baselines_do_not_depend_on_the_other_policies(
    trained: Path, tiny_checkpoints: Path, one_torch_thread
) -> None:
    agent = Agent.from_checkpoint(
        checkpoint.best_model_dir(trained, "control"), checkpoints=tiny_checkpoints
    )
    frames = list(np.load(tiny_checkpoints / "start_frames.npz")["obs"][:3])
    paths = resolve_checkpoints(tiny_checkpoints)
    common = dict(keys=[3, 4], settings=DreamSettings(episodes=3), seed=5, max_steps=6)
    common.update(vision=paths.vision, memory=paths.memory)
    alone = play_dream(agent, ["sticky"], frames, **common)
    together = play_dream(agent, ["agent", "none", "left", "alternate", "sticky"], frames, **common)
    assert alone["sticky"] == together["sticky"]
    assert set(together) == {"agent", "none", "left", "alternate", "sticky"}
    assert all(e["episodes"] == 3 and max(e["lengths"]) <= 6 for e in together.values())


def test_bank_split_keeps_clips_whole_and_starts_with_real_history() -> None:
    first = np.zeros(40, dtype=bool)
    first[::4] = True  # ten clips of four frames
    clip_start = np.repeat(np.arange(0, 40, 4), 4)
    train, held = split_bank(clip_start, context_frames=2, fraction=0.3, seed=0)
    assert held.size == 3 * 3 and train.size == 7 * 3  # three whole clips, frames 1..3 of each
    assert not set(clip_start[train]) & set(clip_start[held])
    assert (np.concatenate([train, held]) - clip_start[np.concatenate([train, held])] >= 1).all()
    frames = training_frames(clip_start, held)
    assert frames.size == 28 and not set(clip_start[frames]) & set(clip_start[held])
    _, capped = split_bank(clip_start, context_frames=2, fraction=0.9, seed=0, max_heldout=5)
    assert capped.size == 5
    train, held = split_bank(np.zeros(8, dtype=np.int64), context_frames=2, fraction=0.25, seed=0)
    assert held.size == 2 and train.size == 5 and 0 not in set(train) | set(held)


def test_config_counts_parameters_and_rejects_bad_choices() -> None:
    config = ControlConfig(vocab_size=16, grid_height=8, grid_width=8)
    assert config.num_features == 2 * 2 * 8 * 2
    assert config.num_params == ControlPolicy(config).get_flat().size == (64 + 1) * 3
    mlp = ControlConfig(vocab_size=16, grid_height=8, grid_width=8, hidden=5, velocity=False)
    assert mlp.num_params == ControlPolicy(mlp).get_flat().size == 33 * 5 + 6 * 3
    with pytest.raises(ValueError, match="choice"):
        ControlConfig(choices=("none", "jump"))
    with pytest.raises(ValueError, match="fit the token grid"):
        ControlConfig(grid_height=8, grid_width=8, col_bands=9)


def test_end_hazard_takes_the_positive_weight_out(tiny_checkpoints: Path) -> None:
    world = DreamWorld.from_checkpoints(tiny_checkpoints, device="cpu")
    assert world.end_model is None
    p = np.array([0.0, 0.5, 5 / 6, 1.0])
    world.memory.config.end_pos_weight = 1.0
    assert np.allclose(world.hazard(p), p)
    # BCE with pos_weight 5 learns 5x the odds: odds 5 (p = 5/6) are even odds, odds 1 are 1/5.
    world.memory.config.end_pos_weight = 5.0
    assert np.allclose(world.hazard(p), [0.0, 1 / 6, 0.5, 1.0])


def test_keys_and_frame_skip_come_from_the_recordings(
    tiny_checkpoints: Path, tmp_path: Path
) -> None:
    bare = describe_world(resolve_checkpoints(tiny_checkpoints))
    assert bare.keys is None and bare.frame_skip is None
    with pytest.raises(ValueError, match="--keys"):
        resolve_keys(bare, None)
    assert resolve_keys(bare, "right,left") == ("left", "right")
    recordings = {"keys": {"left": "MOVE_LEFT", "right": "MOVE_RIGHT"}, "frame_skip": 4}
    described = _world_copy(
        tiny_checkpoints, tmp_path / "w", perturb_memory=False, recordings=recordings
    )
    world = describe_world(resolve_checkpoints(described))
    assert world.keys == ("left", "right") and world.frame_skip == 4
    assert world.memory_fingerprint == bare.memory_fingerprint  # training info is not the model
    assert _frame_skip(None, 4, "m") == 4
    with pytest.raises(ValueError, match="does not match"):
        _frame_skip(2, 4, "m")
    with pytest.raises(ValueError, match="--frame-skip"):
        _frame_skip(None, None, "m")


class StubGame(gym.Env):
    """Dies after ``lives`` steps, reward 2 per step; frames carry the seed; records its seeds."""

    observation_space = gym.spaces.Box(0, 255, (12, 16, 3), np.uint8)
    action_space = gym.spaces.MultiBinary(NUM_KEYS)

    def __init__(self, lives: int) -> None:
        self.lives, self.seeds, self.closed = lives, [], False

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.seeds.append(seed)
        self.t = 0
        return np.full((12, 16, 3), seed % 256, dtype=np.uint8), {}

    def step(self, action):
        self.t += 1
        return np.zeros((12, 16, 3), np.uint8), 2.0, self.t >= self.lives, False, {}

    def close(self):
        self.closed = True


def test_real_play_statistics_and_report_with_a_stub_game() -> None:
    game = StubGame(lives=3)
    real, first = play_real(
        lambda: game, ["none", "sticky"], agent=None, keys=[3, 4], episodes=4, seed=10,
        max_steps=5, progress=False,
    )  # fmt: skip
    assert game.seeds == [10, 11, 12, 13] * 2 and game.closed  # the same seeds for every policy
    assert [int(f[0, 0, 0]) for f in first] == [10, 11, 12, 13]
    assert real["none"]["return_mean"] == 6.0 and real["none"]["return_std"] == 0.0
    assert real["none"]["lengths"] == [3, 3, 3, 3] and real["none"]["capped"] == 0
    long_game = StubGame(lives=100)
    capped, _ = play_real(
        lambda: long_game, ["random"], agent=None, keys=[3, 4], episodes=2, seed=0, max_steps=5,
        progress=False,
    )  # fmt: skip
    assert capped["random"]["lengths"] == [5, 5] and capped["random"]["capped"] == 2

    facts = dict(agent="a", real_env="doom:stub", frame_skip=2, max_steps=5, episodes=4, seed=10)
    facts["dream_episodes"] = 2
    dream_same = {"none": {**real["none"], "length_mean": 1.0}, "sticky": {**real["sticky"]}}
    dream_same["sticky"]["length_mean"] = real["none"]["length_mean"] + 1
    real_ranked = {"none": real["none"], "sticky": {**real["sticky"], "length_mean": 4.0}}
    report = build_report(real_ranked, dream_same, facts)
    assert report["ranking"]["same_order"] and report["ranking"]["kendall_tau"] == 1.0
    # real lengths 3 (none) and 4 (sticky); dream 1 and 4: a third, then equal
    assert report["length_ratio"] == pytest.approx({"none": 1 / 3, "sticky": 1.0})
    assert report["lengths_within_25pct"] == {"none": False, "sticky": True}
    reversed_dream = {"none": {**real["none"], "length_mean": 9.0}, "sticky": dream_same["sticky"]}
    report = build_report(real_ranked, reversed_dream, facts)
    assert not report["ranking"]["same_order"] and report["ranking"]["kendall_tau"] == -1.0
    text = markdown_report(report)
    assert "| none | 6.0 +/- 0.0 | 3.0 +/- 0.0 | 0 |" in text and "a different order" in text
    # take_cover's World Models reference is printed for take_cover only
    assert "Reference:" not in text
    assert "Reference: World Models" in markdown_report({**report, "real_env": "doom:take_cover"})
    assert "| 3.00 |" in text  # dream 9 steps against real 3


def test_eval_control_cli_plays_vizdoom_and_the_dream(
    trained: Path, tiny_checkpoints: Path, tmp_path: Path, one_torch_thread
) -> None:
    pytest.importorskip("vizdoom")
    out = tmp_path / "report"
    args = ["eval", "control", "--agent", str(checkpoint.best_model_dir(trained, "control"))]
    args += ["--checkpoints", str(tiny_checkpoints), "--real", "doom:take_cover"]
    args += ["--frame-skip", "4", "--episodes", "2", "--dream-episodes", "2", "--max-steps", "8"]
    args += ["--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "eval.json").read_text())
    every = {"agent", "none", "left", "right", "random", "sticky", "alternate"}
    assert set(report["real"]) == set(report["dream"]) == every
    for entry in report["real"].values():
        assert entry["episodes"] == 2 and all(1 <= n <= 8 for n in entry["lengths"])
        assert entry["return_mean"] > 0  # take_cover pays a point per tic alive
    assert all(e["episodes"] == 2 for e in report["dream"].values())
    assert report["frame_skip"] == 4 and report["max_steps"] == 8
    assert "kendall_tau" in report["ranking"] and "spearman" in report["ranking"]
    assert set(report["lengths_within_25pct"]) == every
    assert "| agent |" in (out / "eval.md").read_text()


class _ScriptedWorld:
    """A stand-in world: reward 1 per step, 2 while right is held; hazard 0.2 every step."""

    num_envs, device, grid_shape = 4, torch.device("cpu"), (1, 2)
    has_reward_head = has_end_head = True

    def __init__(self) -> None:
        self.history = torch.zeros(self.num_envs, 1, 2, dtype=torch.long)

    def seed(self, seed: int) -> None:
        pass

    def reset_envs(self, slots, stacks) -> None:
        pass

    def hazard(self, end_prob: np.ndarray) -> np.ndarray:
        return end_prob  # as with an episode-end model: its output is the hazard

    def step(self, actions: np.ndarray, index: np.ndarray):
        from types import SimpleNamespace

        n = len(index)
        return SimpleNamespace(
            reward=1.0 + actions[:, KEY_INDEX["right"]].astype(np.float32),
            end_prob=np.full(n, 0.2, np.float32),
            terminated=np.zeros(n, dtype=bool),
        )


class _RightOnEven:
    def reset(self, n: int, seed: int) -> None:
        pass

    def act(self, history: torch.Tensor, index: np.ndarray) -> np.ndarray:
        actions = np.zeros((len(index), NUM_KEYS), np.uint8)
        actions[index % 2 == 0, KEY_INDEX["right"]] = 1
        return actions


def test_the_fitness_is_the_reward_weighted_by_the_chance_of_still_running() -> None:
    """Expected return = sum_t r_t prod_{s<t} (1 - h_s); the survival floor stops an episode."""
    from elworld.control.rollout import dream_rollouts

    stacks = torch.zeros(4, 1, 2, dtype=torch.long)
    result = dream_rollouts(_ScriptedWorld(), stacks, _RightOnEven(), max_steps=5, seed=0)
    alive = 0.8 ** np.arange(5)  # the chance of reaching step t
    np.testing.assert_allclose(result.expected_returns, np.array([2, 1, 2, 1]) * alive.sum())
    np.testing.assert_array_equal(result.returns, [10, 5, 10, 5])
    assert result.lengths.tolist() == [5] * 4 and result.steps == 20
    floored = dream_rollouts(
        _ScriptedWorld(), stacks, _RightOnEven(), max_steps=5, seed=0, survival_floor=0.5
    )
    assert floored.lengths.tolist() == [4] * 4  # 0.8^4 = 0.41 < 0.5 after step 4
    np.testing.assert_allclose(floored.expected_returns, np.array([2, 1, 2, 1]) * alive[:4].sum())


def test_eval_control_judges_a_world_with_fixed_policies_and_no_agent(
    tiny_checkpoints: Path, tmp_path: Path, one_torch_thread
) -> None:
    pytest.importorskip("vizdoom")
    out = tmp_path / "judge"
    args = ["eval", "control", "--agent", str(tmp_path / "no-such-agent"), "--policies",
            "none,left,alternate", "--checkpoints", str(tiny_checkpoints), "--real",
            "doom:take_cover", "--frame-skip", "4", "--episodes", "2", "--dream-episodes", "2",
            "--max-steps", "6", "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["agent"] is None
    assert set(report["real"]) == set(report["dream"]) == {"none", "left", "alternate"}
    assert "No agent (fixed policies only)." in (out / "eval.md").read_text()
