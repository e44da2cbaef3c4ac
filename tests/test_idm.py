"""The inverse-dynamics model: F1, windows, training on momentum episodes, checkpoints, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from elworld.checkpoint import best_model_dir
from elworld.cli import main
from elworld.keys import KEY_INDEX, KEY_NAMES
from elworld.model.idm import (
    MIRROR_PAIRS,
    OPPOSING_KEYS,
    IDMConfig,
    InverseDynamicsModel,
    check_frame_skip,
    effective_keys,
    frames_to_bands,
    idm_config_for,
    idm_windows,
    macro_f1,
    predict_keys,
    window_labels,
)
from elworld.train.idm import _load_windows, _mirror_columns, save_idm, train_idm

HEIGHT, WIDTH = 8, 48
SYNTH = dict(image_height=HEIGHT, image_width=WIDTH, bands=2, cols=WIDTH, width=16, dropout=0.0)


def momentum_episodes(
    directory: Path,
    count: int,
    frames: int = 40,
    seed: int = 0,
    frame_skip: int = 4,
    both: bool = False,
) -> list[Path]:
    """Episodes of a scrolling texture: 'right'/'left' push its velocity, which then coasts.

    The velocity decays by 0.6 per step, so a released key keeps the picture
    sliding for a few steps: one frame pair cannot name the key, a window can.
    With ``both``, some steps hold left and right together, which cancel (as in
    Doom): the picture only coasts, as when no key is held.
    Each ``.npz`` gets a JSON sidecar like the recorders write.
    """
    rng = np.random.default_rng(seed)
    period = 4 * WIDTH
    grid = np.arange(period)
    freqs = np.arange(1, 13)
    phases = rng.uniform(0, 2 * np.pi, len(freqs))
    pattern = np.sum(
        np.sin(2 * np.pi * freqs[:, None] * grid / period + phases[:, None]) / freqs[:, None], 0
    )
    pattern = 40 + 180 * (pattern - pattern.min()) / np.ptp(pattern)  # (period,) grey levels
    shade = np.linspace(0.7, 1.0, HEIGHT)[:, None]  # (H, 1)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for episode in range(count):
        obs = np.zeros((frames, HEIGHT, WIDTH, 3), np.uint8)
        act = np.zeros((frames, 22), np.uint8)
        pos, vel, key, hold = rng.uniform(0, period), 0.0, 0, 0
        for t in range(frames):
            row = np.interp((np.arange(WIDTH) + pos) % period, grid, pattern, period=period)
            obs[t] = (shade * row)[..., None].astype(np.uint8)
            if hold == 0:
                key, hold = int(rng.integers(0, 4 if both else 3)), int(rng.integers(2, 6))
            hold -= 1
            act[t, KEY_INDEX["left"]], act[t, KEY_INDEX["right"]] = key in (1, 3), key in (2, 3)
            vel = 0.6 * vel + 2.0 * ((key == 2) - (key == 1))  # step t: obs[t] -> obs[t + 1]
            pos += vel
        path = directory / f"synth_{seed}_{episode:03d}.npz"
        np.savez(path, obs=obs, act=act)
        sidecar = {"frame_skip": frame_skip, "scenario": "synthetic", "frames": frames}
        path.with_suffix(".json").write_text(json.dumps(sidecar))
        paths.append(path)
    return paths


def test_macro_f1_on_hand_made_cases() -> None:
    true = np.array([[1, 0], [1, 0], [0, 1], [0, 0]], bool)
    assert macro_f1(true, true, ["left", "right"])["macro_f1"] == 1.0
    pred = np.array([[1, 0], [0, 0], [0, 1], [0, 1]], bool)
    result = macro_f1(pred, true, ["left", "right"])
    # left: tp 1, fn 1 -> 2/3; right: tp 1, fp 1 -> 2/3.
    assert result["per_key"] == pytest.approx({"left": 2 / 3, "right": 2 / 3})
    assert result["macro_f1"] == pytest.approx(2 / 3)
    assert result["support"] == {"left": 2, "right": 1} and result["windows"] == 4
    # A key neither pressed nor predicted has no F1 and does not pull the mean down.
    never = macro_f1(np.array([[1, 0]], bool), np.array([[1, 0]], bool), ["left", "right"])
    assert math.isnan(never["per_key"]["right"]) and never["macro_f1"] == 1.0
    # Predicting a key that is never pressed scores 0 for it.
    assert (
        macro_f1(np.array([[0, 1]], bool), np.array([[1, 0]], bool), ["a", "d"])["macro_f1"] == 0.0
    )
    with pytest.raises(ValueError, match="pred and true"):
        macro_f1(pred, true[:3], ["left", "right"])


def test_bands_and_windows_line_up_with_key_steps() -> None:
    frames = np.zeros((6, 16, 32, 3), np.uint8)
    frames[:, :, :16] = 255  # left half white
    bands = frames_to_bands(frames, 4, 8)
    assert bands.shape == (6, 4, 8)
    assert (
        torch.allclose(bands[0, :, :4], torch.ones(4, 4), atol=1e-3) and bands[0, :, 4:].max() == 0
    )
    marked = torch.arange(6.0).view(6, 1, 1).expand(6, 2, 3)  # frame i holds value i
    windows = idm_windows(marked, before=1, after=2)
    assert windows.shape == (3, 4, 2, 3)
    assert windows[:, :, 0, 0].tolist() == [[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5]]
    assert idm_windows(marked[:3], 1, 2).shape == (0, 4, 2, 3)
    act = np.zeros((6, 22), np.uint8)
    act[:, KEY_INDEX["right"]] = np.arange(6) % 2
    labels = window_labels(act, IDMConfig(keys=("right",), **SYNTH))
    assert labels[:, 0].tolist() == [True, False, True]  # key steps 1, 2, 3


def test_effective_keys_cancel_opposing_pairs() -> None:
    def keys(*names: str) -> np.ndarray:
        row = np.zeros(len(KEY_NAMES), np.uint8)
        row[[KEY_INDEX[n] for n in names]] = 1
        return row

    act = np.stack([
        keys("left", "right"), keys("left"), keys("right"), keys(),
        keys("left", "right", "z"), keys("up", "down", "a"), keys("a", "d", "up"),
        keys("left", "d"),  # a turn and a strafe: different buttons, no cancelling
    ])  # fmt: skip
    expected = np.stack([
        keys(), keys("left"), keys("right"), keys(),
        keys("z"), keys("a"), keys("up"), keys("left", "d"),
    ])  # fmt: skip
    before = act.copy()
    out = effective_keys(act)
    assert out.dtype == np.uint8 and np.array_equal(out, expected)
    assert np.array_equal(act, before)  # the recorded keys are left alone
    assert np.array_equal(effective_keys(act.reshape(2, 4, 22)), expected.reshape(2, 4, 22))
    assert {frozenset(p) for p in OPPOSING_KEYS} == {
        frozenset(p) for p in (("left", "right"), ("up", "down"), ("a", "d"))
    }
    with pytest.raises(ValueError, match="actions must be"):
        effective_keys(np.zeros((3, 5), np.uint8))


def test_effective_labels_and_mirroring_commute(tmp_path: Path) -> None:
    """Mirroring swaps left/right and a/d: effective labels swap along, both-held stays neither."""
    rng = np.random.default_rng(0)
    act = (rng.random((500, 22)) < 0.5).astype(np.uint8)
    swap = np.arange(22)
    for a, b in MIRROR_PAIRS:
        swap[KEY_INDEX[a]], swap[KEY_INDEX[b]] = KEY_INDEX[b], KEY_INDEX[a]
    assert np.array_equal(effective_keys(act[:, swap]), effective_keys(act)[:, swap])
    config = IDMConfig(keys=("up", "left", "right", "a", "d"), **SYNTH)
    labels = window_labels(act, config)
    mirror = _mirror_columns(config.keys)
    mirrored = window_labels(act[:, swap], config)
    assert np.array_equal(labels[:, mirror], mirrored)

    # The training windows carry effective labels: a left+right step is labelled neither.
    [path] = momentum_episodes(tmp_path, 1, frames=60, both=True)
    raw = np.load(path)["act"]
    both = (raw[:, KEY_INDEX["left"]] & raw[:, KEY_INDEX["right"]]).astype(bool)
    assert both.any() and (raw[:, KEY_INDEX["left"]] > both).any()
    config = IDMConfig(keys=("left", "right"), **SYNTH)
    data = _load_windows([path], config, "test")
    assert not data.labels[both].any()
    assert np.array_equal(data.labels, effective_keys(raw)[:, [3, 4]])
    assert np.array_equal(window_labels(raw, config), data.labels[data.steps] > 0.5)


def test_config_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="keys must be"):
        IDMConfig(keys=("jump",))
    with pytest.raises(ValueError, match="after must be >= 1"):
        IDMConfig(after=0)


def test_idm_learns_momentum_keys_and_round_trips(tmp_path: Path, one_torch_thread) -> None:
    # A quarter of the steps hold left and right together: the IDM learns to call them neither.
    train = momentum_episodes(tmp_path / "train", 20, seed=1, both=True)
    heldout = momentum_episodes(tmp_path / "heldout", 6, seed=2, both=True)
    config = idm_config_for(train[:16], **SYNTH)
    assert config.keys == ("left", "right") and config.frame_skip == 4
    assert config.scenario == "synthetic"
    torch.manual_seed(0)
    model, info = train_idm(train[:16], train[16:], config, epochs=8, batch_size=32, lr=3e-3)
    assert 0.0 <= info["val_macro_f1"] <= 1.0 and set(info["val_f1"]) == {"left", "right"}

    pred, true = [], []
    for path in heldout:
        data = np.load(path)
        pred.append(predict_keys(model, data["obs"]))
        true.append(window_labels(data["act"], config))
    score = macro_f1(np.concatenate(pred), np.concatenate(true), config.keys)
    # Each key is effectively held a quarter of the time: always pressing it scores F1 0.4.
    assert score["macro_f1"] > 0.8, score
    assert info["labels"].startswith("effective keys")

    folder = save_idm(model, tmp_path / "idm" / "best_model", info)
    loaded = InverseDynamicsModel.from_checkpoint(folder)
    assert loaded.config == config
    frames = np.load(heldout[0])["obs"]
    assert np.array_equal(predict_keys(loaded, frames), predict_keys(model, frames))
    saved = json.loads((folder / "training_info.json").read_text())
    assert saved["val_macro_f1"] == pytest.approx(info["val_macro_f1"])
    assert json.loads((folder / "config.json").read_text())["kind"] == "idm"


def test_frame_skip_must_match(tmp_path: Path) -> None:
    episodes = momentum_episodes(tmp_path / "skip2", 1, frames=6, frame_skip=2)
    check_frame_skip(IDMConfig(frame_skip=2, **SYNTH), episodes)
    with pytest.raises(ValueError, match="trained on frame skip 4, but .* frame skip 2"):
        check_frame_skip(IDMConfig(frame_skip=4, **SYNTH), episodes)


def test_train_idm_cli_writes_best_model(tmp_path: Path, one_torch_thread) -> None:
    data = tmp_path / "data"
    momentum_episodes(data, 4, frames=12)
    out = tmp_path / "ckpt"
    args = ["train", "idm", "--data", str(data), "--out", str(out), "--epochs", "1",
            "--width", "8", "--max-episodes", "3", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    folder = best_model_dir(out, "idm")
    config = json.loads((folder / "config.json").read_text())
    assert config["frame_skip"] == 4 and config["keys"] == ["left", "right"]
    info = json.loads((folder / "training_info.json").read_text())
    assert info["train_episodes"] + info["val_episodes"] == 3 and "val_f1" in info
    assert info["data"] == str(data)
    assert InverseDynamicsModel.from_checkpoint(folder).config.width == 8
