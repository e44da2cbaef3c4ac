"""``elworld rollout`` / ``elworld demo``: headless dreams written to MP4 and GIF files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from PIL import Image

from elworld.cli import main
from elworld.keys import KEY_INDEX, NUM_KEYS
from elworld.play.dream import make_dream_env
from elworld.play.policies import KeySequencePolicy, load_key_sequence, make_policy
from elworld.play.rollout import dream_frames
from elworld.play.video import VideoRecorder, write_video

FRAME = 32  # the tiny checkpoints' frame size


def read_mp4(path: Path) -> list[np.ndarray]:
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return list(reader.iter_data())


def gif_info(path: Path) -> tuple[int, int, tuple[int, int]]:
    """(frames, total duration in ms, (width, height)) of a GIF."""
    with Image.open(path) as image:
        durations = []
        for index in range(image.n_frames):
            image.seek(index)
            durations.append(image.info["duration"])
        return image.n_frames, sum(durations), image.size


@pytest.fixture
def episode(tmp_path: Path) -> Path:
    """A recorded episode of 9 frames at 40x40 (resized to the dream's 32x32)."""
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, size=(9, 40, 40, 3), dtype=np.uint8)
    act = np.zeros((9, NUM_KEYS), dtype=np.uint8)
    act[:, KEY_INDEX["right"]] = 1
    path = tmp_path / "episode.npz"
    np.savez(path, obs=obs, act=act)
    return path


def test_rollout_writes_an_mp4_of_the_requested_length(
    tiny_checkpoints: Path, tmp_path: Path
) -> None:
    out = tmp_path / "videos" / "dream.mp4"
    argv = ["rollout", "--checkpoints", str(tiny_checkpoints), "--steps", "6", "--out", str(out)]
    assert main([*argv, "--scale", "3", "--policy", "random"]) == 0
    frames = read_mp4(out)
    assert len(frames) == 6 + 1
    assert frames[0].shape == (3 * FRAME, 3 * FRAME, 3)
    assert [p.name for p in out.parent.iterdir()] == ["dream.mp4"]  # no temporary file left


def test_rollout_writes_a_gif(tiny_checkpoints: Path, tmp_path: Path) -> None:
    out = tmp_path / "dream.gif"
    argv = ["rollout", "--checkpoints", str(tiny_checkpoints), "--steps", "5", "--out", str(out)]
    assert main([*argv, "--scale", "2", "--fps", "10"]) == 0
    count, duration_ms, size = gif_info(out)
    # GIF merges identical consecutive frames into longer ones: the duration counts them all.
    assert duration_ms == (5 + 1) * 100 and 1 <= count <= 6
    assert size == (2 * FRAME, 2 * FRAME)


def test_compare_writes_real_dream_and_difference_panes(
    tiny_checkpoints: Path, tmp_path: Path, episode: Path
) -> None:
    out = tmp_path / "compare.mp4"
    argv = ["rollout", "--checkpoints", str(tiny_checkpoints), "--compare", str(episode)]
    assert main([*argv, "--out", str(out), "--scale", "2", "--steps", "5"]) == 0
    frames = read_mp4(out)
    assert len(frames) == 5 + 1
    assert frames[0].shape == (2 * FRAME, 3 * 2 * FRAME, 3)
    # The right pane is |real - dream|: not all black for a random real episode.
    assert frames[0][:, 2 * 2 * FRAME :].mean() > 5

    whole = tmp_path / "whole.gif"
    assert main([*argv, "--out", str(whole), "--scale", "1"]) == 0
    _, duration_ms, size = gif_info(whole)
    assert duration_ms == 9 * 50  # the whole 9-frame episode at 20 fps
    assert size == (3 * FRAME, FRAME)


def test_keys_policy_replays_a_file_in_the_dream(tiny_checkpoints: Path, tmp_path: Path) -> None:
    keys = tmp_path / "moves.txt"
    keys.write_text("# warm up\nright\nright z\n-\nleft+x\n")
    actions = load_key_sequence(keys)
    assert actions.shape == (4, NUM_KEYS)
    assert [set(np.flatnonzero(a)) for a in actions] == [
        {KEY_INDEX["right"]},
        {KEY_INDEX["right"], KEY_INDEX["z"]},
        set(),
        {KEY_INDEX["left"], KEY_INDEX["x"]},
    ]
    as_json = tmp_path / "moves.json"
    as_json.write_text(json.dumps([["right"], ["right", "z"], [], ["left", "x"]]))
    np.testing.assert_array_equal(load_key_sequence(as_json), actions)
    as_npz = tmp_path / "moves.npz"
    np.savez(as_npz, act=actions)
    np.testing.assert_array_equal(load_key_sequence(as_npz), actions)

    stepped = []
    env = make_dream_env(tiny_checkpoints)
    original_step = env.step
    env.step = lambda action: stepped.append(action) or original_step(action)  # type: ignore[method-assign]
    frames = list(dream_frames(env, KeySequencePolicy(actions), steps=6, seed=0))
    env.close()
    assert len(frames) == 7
    np.testing.assert_array_equal(np.stack(stepped), actions[[0, 1, 2, 3, 0, 1]])  # it repeats


def test_bad_keys_files_and_policies_raise_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("right\njump\n")
    with pytest.raises(ValueError, match="line 2.*unknown key 'jump'"):
        load_key_sequence(bad)
    with pytest.raises(ValueError, match="needs a keys FILE"):
        make_policy("keys")
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("greedy")
    sticky = make_policy("sticky", seed=3, keys=("left", "right"))
    held = np.stack([sticky(np.zeros((FRAME, FRAME, 3), np.uint8)) for _ in range(50)])
    assert set(np.flatnonzero(held.any(axis=0))) <= {KEY_INDEX["left"], KEY_INDEX["right"]}
    assert main(["rollout", "--policy", "keys", "--out", str(tmp_path / "x.mp4")]) == 1


def test_write_video_checks_suffix_and_is_atomic(tmp_path: Path) -> None:
    frame = np.zeros((6, 10, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="unknown suffix '.avi'"):
        write_video(tmp_path / "x.avi", [frame])
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"old")

    def frames_then_failure():
        yield frame
        yield frame[:, :5]  # a different size: write_video must refuse it

    with pytest.raises(ValueError, match="same shape"):
        write_video(target, frames_then_failure())
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]

    odd = np.full((7, 9, 3), 200, dtype=np.uint8)  # odd sizes are padded for H.264
    with VideoRecorder(tmp_path / "odd.mp4", fps=5) as recorder:
        for _ in range(3):
            recorder.add(odd)
    frames = read_mp4(tmp_path / "odd.mp4")
    assert len(frames) == 3 and frames[0].shape == (8, 10, 3)


def test_demo_without_a_display_writes_a_video(
    tiny_checkpoints: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--checkpoints", str(tiny_checkpoints), "--steps", "4"]) == 0
    out = Path("outputs") / "dream.mp4"
    assert capsys.readouterr().out.strip() == str(out)
    frames = read_mp4(tmp_path / out)
    assert len(frames) == 4 + 1 and frames[0].shape == (2 * FRAME, 2 * FRAME, 3)


def test_demo_and_rollout_pass_guidance_and_precision_to_the_dream(
    tiny_checkpoints: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import elworld.play.cli as play_cli

    worlds = []

    def recording_env(*args, **kwargs):
        env = make_dream_env(*args, **kwargs)
        worlds.append(env.unwrapped.world)
        return env

    monkeypatch.setattr(play_cli, "make_dream_env", recording_env)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    out = tmp_path / "one_pass.mp4"
    demo = ["demo", "--checkpoints", str(tiny_checkpoints), "--steps", "2", "--out", str(out)]
    assert main([*demo, "--guidance", "1", "--precision", "fp32"]) == 0
    roll = ["rollout", "--checkpoints", str(tiny_checkpoints), "--steps", "2"]
    assert main([*roll, "--out", str(out), "--precision", "bf16"]) == 0
    assert [(w.guidance, w.precision) for w in worlds][0] == (1.0, "fp32")
    assert worlds[1].precision == "bf16"
    assert len(read_mp4(out)) == 2 + 1
    # The tiny world has no unconditional pass (no action dropout), so a guided dream is refused
    assert main([*roll, "--out", str(out), "--guidance", "2"]) == 1
    assert (
        "guidance=2.0 needs a memory model trained with action_dropout" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main([*roll, "--guidance", "0"])
    with pytest.raises(SystemExit):
        main([*roll, "--precision", "fp16"])
