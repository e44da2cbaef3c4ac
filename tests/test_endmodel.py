"""The episode-end model: it counts what the last frames cannot show, and the dream draws ends from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from elworld.checkpoint import best_model_dir, save_checkpoint
from elworld.cli import main
from elworld.model.end import EndConfig, EndModel, check_end_model_fits
from elworld.model.memory import MemoryConfig
from elworld.record.writer import write_episode
from elworld.train.end import EndEpisode, end_scores, train_end_model
from elworld.world.dream import DreamWorld
from tests.conftest import TINY_IMAGE, sliding_square_clip

HIT = 3  # the token a "hit" frame is full of


def counting_episodes(count: int, seed: int = 0, hits_to_die: int = 3) -> list[EndEpisode]:
    """Episodes of 6-token frames; a frame full of ``HIT`` is a hit and the third hit ends it.

    A hit frame looks the same whatever came before, so only a model that
    remembers earlier hits can tell the deadly one (as in take_cover, where
    the health the hits took is not on screen).
    """
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(count):
        frames, hits = [], 0
        while hits < hits_to_die and len(frames) < 60:
            frame = rng.integers(4, 8, size=6)
            if rng.random() < 0.25:
                frame[:] = HIT
                hits += 1
            frames.append(frame)
        done = np.zeros(len(frames), np.float32)
        done[-1] = float(hits == hits_to_die)
        actions = rng.integers(0, 2, size=(len(frames), 22)).astype(np.uint8)
        episodes.append(EndEpisode(np.stack(frames), actions, done))
    return episodes


def test_step_by_step_matches_the_whole_episode_pass() -> None:
    torch.manual_seed(0)
    model = EndModel(EndConfig(vocab_size=8, tokens_per_frame=6, hidden=8)).eval()
    episode = counting_episodes(1, seed=3)[0]
    tokens = torch.from_numpy(episode.tokens.astype(np.int64))
    actions = torch.from_numpy(episode.actions.astype(np.float32))
    with torch.no_grad():
        whole = torch.sigmoid(model(tokens[None], actions[None]))[0]
        state, stepped = model.initial_state(1), []
        for t in range(len(tokens)):
            hazard, state = model.step(tokens[t : t + 1], actions[t : t + 1], state)
            stepped.append(hazard)
    assert torch.allclose(torch.cat(stepped), whole, atol=1e-6)


def test_it_learns_to_count_hits_and_is_calibrated(one_torch_thread) -> None:
    config = EndConfig(vocab_size=8, tokens_per_frame=6, n_embd=8, hidden=16)
    train, val = counting_episodes(96, seed=0), counting_episodes(48, seed=1)
    untrained = end_scores(EndModel(config).eval(), val)
    model, info = train_end_model(train, val, config, epochs=80, batch_size=16, lr=1e-2, seed=0)
    scores = end_scores(model, val)
    assert info["val"] == scores and info["epoch"] >= 1
    assert scores["nll"] < 0.5 * scores["constant_nll"] < untrained["nll"]
    # The deadly hit (the third) is told apart from the first two, which look the same.
    hits = [(e, t) for e in val for t in np.flatnonzero((e.tokens == HIT).all(1))]
    with torch.no_grad():
        hazards = [
            torch.sigmoid(model(torch.from_numpy(e.tokens[None].astype(np.int64)),
                                torch.from_numpy(e.actions[None].astype(np.float32))))[0].numpy()
            for e in val
        ]  # fmt: skip
    by_episode = {id(e): h for e, h in zip(val, hazards)}
    deadly = [by_episode[id(e)][t] for e, t in hits if e.done[t] > 0]
    harmless = [by_episode[id(e)][t] for e, t in hits if e.done[t] == 0]
    assert np.mean(deadly) > 0.8 > 0.2 > np.mean(harmless)
    assert scores["expected_ends"] == pytest.approx(scores["ends"], rel=0.25)


def test_a_refit_starts_from_the_model_it_is_given(one_torch_thread) -> None:
    config = EndConfig(vocab_size=8, tokens_per_frame=6, n_embd=8, hidden=16)
    train, val = counting_episodes(32, seed=0), counting_episodes(16, seed=1)
    first, _ = train_end_model(train, val, config, epochs=20, batch_size=16, lr=1e-2, seed=0)
    fresh = end_scores(EndModel(config).eval(), val)["nll"]
    refit, _ = train_end_model(
        train, val, config, epochs=1, batch_size=16, lr=1e-4, seed=5, init=first
    )  # one small step from the trained model: it stays near it, far from a fresh start
    assert end_scores(refit, val)["nll"] < 0.7 * fresh
    assert end_scores(refit, val)["nll"] == pytest.approx(end_scores(first, val)["nll"], rel=0.1)
    with pytest.raises(ValueError, match="config"):
        train_end_model(train, val, EndConfig(vocab_size=8, tokens_per_frame=6, n_embd=8,
                                              hidden=8), init=first)  # fmt: skip


def test_it_refuses_a_memory_model_with_other_tokens() -> None:
    memory = MemoryConfig(vocab_size=16, grid_height=8, grid_width=8)
    check_end_model_fits(EndConfig(vocab_size=16, tokens_per_frame=64), memory, "m")
    with pytest.raises(ValueError, match="train the end model on this world's vision model"):
        check_end_model_fits(EndConfig(vocab_size=512, tokens_per_frame=768), memory, "m")


def _recordings(folder: Path, count: int) -> None:
    clip = sliding_square_clip(12, TINY_IMAGE)
    for i in range(count):
        done = np.zeros(len(clip), np.uint8)
        done[-1] = 1
        act = np.zeros((len(clip), 22), np.uint8)
        act[::2, i % 22] = 1
        write_episode(folder / f"ep_{i:02d}.npz", clip, act, done=done, meta={"frame_skip": 4})


@pytest.fixture(scope="module")
def world_with_end(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world_with_end")
    for kind in ("vision", "memory"):
        shutil.copytree(best_model_dir(tiny_checkpoints, kind), best_model_dir(root, kind))
    shutil.copy(tiny_checkpoints / "start_frames.npz", root / "start_frames.npz")
    data = root.parent / f"{root.name}_data"
    data.mkdir()
    _recordings(data, 4)
    args = ["train", "end", "--data", str(data), "--vision", str(best_model_dir(root, "vision")),
            "--out", str(root), "--epochs", "2", "--hidden", "8", "--val-fraction", "0.25",
            "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    return root


def test_cli_writes_a_checkpoint_the_dream_picks_up(world_with_end: Path) -> None:
    folder = best_model_dir(world_with_end, "end")
    config = json.loads((folder / "config.json").read_text())
    assert config["vocab_size"] == 16 and config["tokens_per_frame"] == 64
    assert config["frame_skip"] == 4 and config["hidden"] == 8
    info = json.loads((folder / "training_info.json").read_text())
    assert info["train_episodes"] == 3 and info["val_episodes"] == 1 and info["val"]["ends"] == 1
    world = DreamWorld.from_checkpoints(world_with_end, num_envs=3, device="cpu")
    assert world.end_model is not None and world.has_end_head
    without = DreamWorld.from_checkpoints(world_with_end, device="cpu", end_model=False)
    assert without.end_model is None


def test_the_dream_draws_its_ends_from_the_hazard(world_with_end: Path) -> None:
    world = DreamWorld.from_checkpoints(world_with_end, num_envs=4, device="cpu", precision="fp32")
    head = world.end_model.head
    keys = np.zeros((4, 22), np.uint8)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(30.0)  # hazard 1: every dream ends
        step = world.step(keys)
        assert step.terminated.all() and np.allclose(step.end_prob, 1.0)
        assert np.array_equal(world.hazard(step.end_prob), step.end_prob)
        head.bias.fill_(-30.0)  # hazard 0: none does
        assert not world.step(keys).terminated.any()
        head.bias.fill_(0.0)  # hazard 1/2: about half of many draws
        ends = np.concatenate([world.step(keys).terminated for _ in range(50)])
    assert 0.35 < ends.mean() < 0.65


def test_reset_forgets_the_episode_so_far(world_with_end: Path) -> None:
    world = DreamWorld.from_checkpoints(world_with_end, num_envs=2, device="cpu", precision="fp32")
    world.step(np.ones((2, 22), np.uint8))
    assert world.end_state.abs().sum() > 0
    world.reset_envs([1], world.start_stacks(np.array([0])))
    assert world.end_state[1].abs().sum() == 0 and world.end_state[0].abs().sum() > 0


def test_a_missing_end_checkpoint_is_one_clear_error(world_with_end: Path, tmp_path: Path) -> None:
    from elworld.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="no episode-end checkpoint at .*elworld train end"):
        DreamWorld.from_checkpoints(world_with_end, end_model=tmp_path / "nowhere")
    # A saved end model that reads other tokens is refused by name.
    other = tmp_path / "other_end"
    model = EndModel(EndConfig(vocab_size=512, tokens_per_frame=768))
    save_checkpoint(other, model=model, config=model.config, training_info={})
    with pytest.raises(ValueError, match="episode-end model reads 768 tokens"):
        DreamWorld.from_checkpoints(world_with_end, end_model=other, device="cpu")


def test_eval_reports_the_end_model_on_recordings(world_with_end: Path, tmp_path: Path) -> None:
    data = world_with_end.parent / f"{world_with_end.name}_data"
    out = tmp_path / "report"
    args = ["eval", "--vision", str(best_model_dir(world_with_end, "vision")), "--data", str(data),
            "--end", str(best_model_dir(world_with_end, "end")), "--out", str(out),
            "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    results = json.loads((out / "eval.json").read_text())
    end = results["end_model"]
    assert end["episodes"] == 4 and end["ends"] == 4 and end["steps"] == 4 * 12
    assert 0 < end["expected_ends"] < end["steps"] and end["nll"] > 0
    assert results["checkpoints"]["end"] == str(best_model_dir(world_with_end, "end"))
    assert "| ends expected (summed hazard) / real |" in (out / "eval.md").read_text()


def test_the_end_models_hazard_ends_episodes_of_every_env(world_with_end: Path) -> None:
    """DreamEnv, the vector env and the SB3 VecEnv end episodes by the end model's own hazard."""
    from elworld_gym.dream_env import DreamEnv
    from elworld_gym.vector_env import DreamVectorEnv

    env = DreamEnv(world_with_end, obs_type="tokens", precision="fp32")
    vec = DreamVectorEnv(3, world_with_end, obs_type="tokens", precision="fp32")
    keys = np.zeros(22, np.uint8)

    def set_hazard(bias: float) -> None:
        for world in (env.world, vec.world):
            assert world.end_model is not None
            with torch.no_grad():
                world.end_model.head.weight.zero_()
                world.end_model.head.bias.fill_(bias)

    set_hazard(30.0)  # the end model says: it ends now
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(keys)
    assert terminated and not truncated and info["end_prob"] == pytest.approx(1.0)
    vec.reset(seed=0)
    _, _, terminated, truncated, info = vec.step(np.zeros((3, 22), np.uint8))
    assert terminated.all() and not truncated.any() and np.allclose(info["end_prob"], 1.0)
    set_hazard(-30.0)  # it never ends
    env.reset(seed=0)
    vec.reset(seed=0)
    for _ in range(4):
        _, _, terminated, _, info = env.step(keys)
        assert not terminated and info["end_prob"] < 1e-6
        _, _, terminated, _, info = vec.step(np.zeros((3, 22), np.uint8))
        assert not terminated.any() and (info["end_prob"] < 1e-6).all()
    pytest.importorskip("stable_baselines3", reason="the optional 'rl' extra is not installed")
    from elworld_gym.sb3 import DreamVecEnv

    sb3 = DreamVecEnv(env=vec)
    sb3.reset()
    set_hazard(30.0)
    sb3.step_async(np.zeros((3, 22), np.uint8))
    _, _, dones, infos = sb3.step_wait()
    assert dones.all() and all(not i["TimeLimit.truncated"] for i in infos)
    assert all(i["end_prob"] == pytest.approx(1.0) for i in infos)
