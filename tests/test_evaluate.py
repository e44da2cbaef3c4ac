"""``elworld eval``: the metrics' definitions and the report it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from elworld.cli import main
from elworld.data import find_episodes
from elworld.eval.metrics import PSNR_CAP, precision_recall, psnr, ssim
from elworld.keys import KEY_INDEX
from elworld.model.idm import IDMConfig, InverseDynamicsModel
from elworld.train.idm import save_idm

from conftest import sliding_square_clip, torch_threads


def test_psnr_is_capped_and_ordered() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    noisy = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(a.astype(int) + rng.integers(-60, 61, a.shape), 0, 255).astype(np.uint8)
    assert np.all(psnr(a, a) == PSNR_CAP)
    assert np.all(psnr(a, noisy) > psnr(a, noisier))
    one = np.zeros((1, 4, 4, 3), np.uint8)
    assert psnr(one, one + 1)[0] == pytest.approx(20 * math.log10(255), abs=1e-9)  # MSE 1


def test_ssim_is_one_for_identical_frames_and_lower_for_noise() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    noisy = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(a.astype(int) + rng.integers(-80, 81, a.shape), 0, 255).astype(np.uint8)
    assert np.allclose(ssim(a, a), 1.0)
    assert np.all(ssim(a, noisier) < ssim(a, noisy)) and np.all(ssim(a, noisy) < 1.0)


def test_precision_recall_counts() -> None:
    predicted = np.array([1, 1, 0, 0, 1], bool)
    actual = np.array([1, 0, 0, 1, 1], bool)
    result = precision_recall(predicted, actual)
    assert result["precision"] == pytest.approx(2 / 3) and result["recall"] == pytest.approx(2 / 3)
    assert math.isnan(precision_recall(np.zeros(3, bool), np.zeros(3, bool))["precision"])


def _episodes(
    directory: Path,
    count: int = 2,
    frames: int = 40,
    frame_skip: int | None = None,
    keys: tuple[str, ...] = ("right",),
) -> Path:
    directory.mkdir()
    clip = sliding_square_clip(frames)
    for i in range(count):
        act = np.zeros((frames, 22), np.uint8)
        act[:, [KEY_INDEX[k] for k in keys]] = 1  # default: right held, the square slides
        done = np.zeros(frames, np.uint8)
        done[-1] = 1
        np.savez(
            directory / f"ep_{i}.npz", obs=clip, act=act, rew=np.ones(frames, np.float32), done=done
        )
        if frame_skip is not None:  # a sidecar like the recorders write
            (directory / f"ep_{i}.json").write_text(json.dumps({"frame_skip": frame_skip}))
    return directory


def test_eval_writes_json_markdown_and_plot(tiny_checkpoints: Path, tmp_path: Path) -> None:
    data = _episodes(tmp_path / "heldout")
    out = tmp_path / "report"
    args = ["eval", "--vision", str(tiny_checkpoints / "vision/best_model"), "--memory",
            str(tiny_checkpoints / "memory/best_model"), "--data", str(data), "--out", str(out),
            "--horizons", "1,4,16", "--start-stride", "4", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    results = json.loads((out / "eval.json").read_text())
    assert results["episodes"] == 2 and results["vision"]["frames"] == 80
    rollout = results["memory"]["rollout_psnr"]
    assert set(rollout) == {"1", "4", "16"}
    # The clip moves every frame, so the copy-last baseline falls with the horizon.
    assert rollout["1"]["copy_last"] > rollout["16"]["copy_last"]
    assert all(0 < row["dream"] <= PSNR_CAP and row["starts"] > 0 for row in rollout.values())
    for row in rollout.values():  # one gain per episode; their mean weighs episodes equally
        per_episode = row["gain_by_episode"]
        assert len(per_episode) == 2 and row["gain_se"] == pytest.approx(
            np.std(per_episode, ddof=1) / np.sqrt(2)
        )
    control = results["memory"]["controllability"]
    assert control["delta_psnr"] == pytest.approx(
        control["true_actions_psnr"] - control["random_actions_psnr"]
    )
    assert {"precision", "recall"} <= set(results["memory"]["end_head"])
    assert 0.0 <= results["memory"]["next_token_acc"] <= 1.0
    report = (out / "eval.md").read_text()
    assert "| horizon | dream PSNR | copy-last PSNR" in report
    gain = rollout["4"]["dream"] - rollout["4"]["copy_last"]
    assert f"| {gain:.2f} +/- {rollout['4']['gain_se']:.2f} |" in report
    # Every step pays 1 (as take_cover pays ~4): a constant scores precision / recall 1.00, so
    # the report shows the reward error against the best constant's (here 0) instead.
    reward = results["memory"]["reward_head"]
    assert reward["constant_mse"] == 0.0 and reward["steps"] == reward["actual"] > 0
    assert f"| reward head MSE (best constant) | {reward['mse']:.4g} (0) |" in report
    assert "reward head precision / recall" not in report
    assert "end head precision / recall" in report
    assert (out / "psnr_vs_horizon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_rejects_a_memory_model_that_does_not_fit(
    tiny_checkpoints: Path, tmp_path: Path, capsys
) -> None:
    from elworld.checkpoint import save_checkpoint
    from elworld.model.memory import MemoryConfig, MemoryModel

    config = MemoryConfig(
        vocab_size=32, grid_height=8, grid_width=8, n_layer=1, n_head=2, n_embd=16
    )
    other = save_checkpoint(
        tmp_path / "memory" / "best_model",
        model=MemoryModel(config),
        config=config,
        training_info={},
    )
    args = ["eval", "--vision", str(tiny_checkpoints / "vision/best_model"), "--memory", str(other),
            "--data", str(_episodes(tmp_path / "d")), "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(args) == 1
    assert "do not fit: memory vocab_size 32 != vision codebook_size 16" in capsys.readouterr().err


def _tiny_idm(folder: Path, frame_skip: int = 4, keys: tuple[str, ...] = ("left", "right")) -> Path:
    """An untrained IDM for the 32x32 test frames, scoring ``keys`` (default left and right)."""
    config = IDMConfig(
        keys=keys, image_height=32, image_width=32, bands=4, cols=32, width=8,
        frame_skip=frame_skip,
    )  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = InverseDynamicsModel(config)
    return save_idm(model, folder, {"val_macro_f1": 0.5, "val_f1": {}})


def _eval_args(checkpoints: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "--vision", str(checkpoints / "vision/best_model"), "--memory",
            str(checkpoints / "memory/best_model"), "--data", str(data), "--out", str(out),
            "--horizons", "1,4", "--start-stride", "4", "--device", "cpu", *extra]  # fmt: skip


@pytest.mark.usefixtures("one_torch_thread")
def test_eval_with_an_idm_reports_its_scores(tiny_checkpoints: Path, tmp_path: Path) -> None:
    idm = _tiny_idm(tmp_path / "idm" / "best_model")
    data = _episodes(tmp_path / "heldout", frame_skip=4)
    out = tmp_path / "report"
    assert (
        main(_eval_args(tiny_checkpoints, data, out, "--idm", str(idm), "--idm-horizon", "8")) == 0
    )
    results = json.loads((out / "eval.json").read_text())
    scores = results["memory"]["idm"]
    assert scores["scored_keys"] == ["right"]  # the episodes only ever hold right
    assert scores["left_out_keys"] == {"never_pressed": ["left"], "not_scored_by_idm": []}
    assert scores["horizon"] == 8 and scores["temperature"] == 1.0 and scores["frame_skip"] == 4
    names = ("real", "reconstructed", "dream", "dream_shuffled", "dream_shuffled_vs_recorded")
    for name in names:
        assert 0.0 <= scores[name]["macro_f1"] <= 1.0, (name, scores[name])
        assert set(scores[name]["per_key"]) == {"right"}
    # Windows t-1..t+2 of 40 frames: 37 per episode; dreams: starts 1, 5, .., 29, 7 windows each.
    assert scores["real"]["windows"] == scores["reconstructed"]["windows"] == 2 * 37
    assert scores["dream"]["windows"] == scores["dream_shuffled"]["windows"] == 2 * 8 * 7
    assert results["checkpoints"]["idm"] == str(idm)
    report = (out / "eval.md").read_text()
    assert "| IDM controllability | macro-F1 | F1 right | windows |" in report
    assert (
        "| dream driven by shuffled keys, scored against the recorded keys (floor) |" in report
        and "| real held-out transitions (ceiling) |" in report
    )
    assert "left out: left (never pressed in the evaluated episodes); 20 other keys" in report
    assert (
        "IDM labels: effective keys; opposing keys held together (left+right) cancel "
        "and count as neither." in report
    )


def test_eval_idm_scores_follow_its_predictions(tiny_checkpoints: Path, tmp_path: Path) -> None:
    """An IDM that always answers 'right' scores F1 1 wherever right is the only key held."""
    from elworld.checkpoint import load_model
    from elworld.eval.evaluate import EvalConfig, evaluate
    from elworld.model.memory import MemoryModel
    from elworld.model.vision import VisionModel

    idm = InverseDynamicsModel.from_checkpoint(_tiny_idm(tmp_path / "idm"))
    with torch.no_grad():
        for p in idm.parameters():
            p.zero_()
        idm.head.bias.copy_(torch.tensor([-5.0, 5.0]))  # left never, right always
    vision = load_model(tiny_checkpoints / "vision/best_model", VisionModel)
    memory = load_model(tiny_checkpoints / "memory/best_model", MemoryModel)
    config = EvalConfig(horizons=(1,), start_stride=8, idm_horizon=4)
    data = find_episodes(_episodes(tmp_path / "heldout", frame_skip=4))
    with torch_threads(1):
        scores = evaluate(vision, memory, data, config, idm=idm)["memory"]["idm"]
    assert all(scores[name]["macro_f1"] == 1.0 for name in ("real", "reconstructed", "dream"))
    assert scores["dream_shuffled"]["windows"] == scores["dream"]["windows"] > 0


def test_eval_idm_scores_effective_keys(
    tiny_checkpoints: Path, tmp_path: Path, monkeypatch
) -> None:
    """Left+right held together count as neither in every IDM score; the dream still gets them."""
    import elworld.eval.evaluate as evaluate_module
    from elworld.checkpoint import load_model
    from elworld.eval.evaluate import EvalConfig, evaluate
    from elworld.model.memory import MemoryModel
    from elworld.model.vision import VisionModel

    idm = InverseDynamicsModel.from_checkpoint(
        _tiny_idm(tmp_path / "idm", keys=("left", "right", "up"))
    )
    with torch.no_grad():
        for p in idm.parameters():
            p.zero_()
        idm.head.bias.copy_(torch.tensor([-5.0, -5.0, 5.0]))  # up always, left and right never
    driven = []
    rollout = evaluate_module._rollout

    def recording_rollout(memory, context, actions, *args, **kwargs):
        driven.append(actions.cpu().numpy())
        return rollout(memory, context, actions, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "_rollout", recording_rollout)
    vision = load_model(tiny_checkpoints / "vision/best_model", VisionModel)
    memory = load_model(tiny_checkpoints / "memory/best_model", MemoryModel)
    config = EvalConfig(horizons=(1,), start_stride=8, idm_horizon=4)
    data = _episodes(tmp_path / "heldout", frame_skip=4, keys=("left", "right", "up"))
    with torch_threads(1):
        scores = evaluate(vision, memory, find_episodes(data), config, idm=idm)["memory"]["idm"]
    # Raw labels would score left and right too (F1 0: never predicted, always held).
    assert scores["scored_keys"] == ["up"]
    assert scores["left_out_keys"]["never_pressed"] == ["left", "right"]
    for name in ("real", "reconstructed", "dream", "dream_shuffled", "dream_shuffled_vs_recorded"):
        assert scores[name]["macro_f1"] == 1.0 and scores[name]["windows"] > 0, name
    assert scores["labels"].startswith("effective keys")
    assert ["left", "right"] in scores["opposing_keys"]
    # The memory model is driven by the raw recorded keys: left and right both held.
    held = [KEY_INDEX["left"], KEY_INDEX["right"], KEY_INDEX["up"]]
    assert driven and all((a[..., held] == 1).all() for a in driven)


def test_eval_rejects_an_idm_of_another_frame_skip(
    tiny_checkpoints: Path, tmp_path: Path, capsys
) -> None:
    idm = _tiny_idm(tmp_path / "idm" / "best_model", frame_skip=4)
    data = _episodes(tmp_path / "heldout", frame_skip=2)
    assert main(_eval_args(tiny_checkpoints, data, tmp_path / "r", "--idm", str(idm))) == 1
    err = capsys.readouterr().err
    assert "frame skips must match" in err and "frame skip 4" in err and "frame skip 2" in err
    assert main(["eval", "--vision", str(tiny_checkpoints / "vision/best_model"), "--data", str(data),
                 "--idm", str(idm)]) == 1  # fmt: skip
    assert "--idm needs --memory" in capsys.readouterr().err


def test_eval_refuses_recordings_at_another_frame_skip() -> None:
    from elworld.eval.cli import check_world_rate

    check_world_rate({"frame_skip": 4}, {"frame_skip": 4}, Path("m"), Path("d"))
    check_world_rate({}, {"frame_skip": 2}, Path("m"), Path("d"))  # older world: unknown
    with pytest.raises(ValueError, match=r"--data d was recorded at frame skip 2.*frame skip 4"):
        check_world_rate({"frame_skip": 4}, {"frame_skip": 2}, Path("m"), Path("d"))


def test_idm_scores_read_the_dream_and_the_shuffle_shuffles(
    tiny_checkpoints: Path, tmp_path: Path, monkeypatch
) -> None:
    """A dream that shows its keys and an IDM that reads them: 1.0 on dreams, chance on the floor.

    The memory model is replaced by a perfectly controllable one (frame ``t+1``
    is all token 1 when right was held at ``t``, all token 2 when left was) and
    the IDM by one that reads those frames exactly (real frames read as no key).
    A dream row scored on real frames would score 0; a shuffle that does not
    shuffle (or a floor scored against the driving keys) would score 1.0 on
    the floor.
    """
    import elworld.eval.evaluate as evaluate_module
    import elworld.eval.idm_scores as idm_scores_module
    from elworld.checkpoint import load_model
    from elworld.eval.evaluate import EvalConfig, evaluate
    from elworld.model.memory import MemoryModel
    from elworld.model.vision import VisionModel

    left, right = KEY_INDEX["left"], KEY_INDEX["right"]
    vision = load_model(tiny_checkpoints / "vision/best_model", VisionModel)
    memory = load_model(tiny_checkpoints / "memory/best_model", MemoryModel)
    grid = (vision.config.grid_height, vision.config.grid_width)
    tokens_per_frame = grid[0] * grid[1]
    showing = {
        key: evaluate_module._decode(vision, torch.full((1, tokens_per_frame), token), grid, 1)[0]
        for key, token in (("right", 1), ("left", 2))
    }
    assert not np.array_equal(showing["right"], showing["left"])

    def controllable_rollout(memory, context, actions, *args, **kwargs):
        token = torch.where(actions[..., right] > 0, 1, 2).long()  # (S, H)
        return token[..., None].expand(*token.shape, tokens_per_frame).to(context.device)

    def reading_idm(idm, frames):
        before, after = idm.config.before, idm.config.after
        rows = []
        for j in range(len(frames) - before - after):
            shown = frames[before + j + 1]  # obs[t+1] shows the keys of step t
            rows.append([np.array_equal(shown, showing[k]) for k in idm.config.keys])
        return np.array(rows, dtype=bool).reshape(-1, len(idm.config.keys))

    monkeypatch.setattr(evaluate_module, "_rollout", controllable_rollout)
    monkeypatch.setattr(idm_scores_module, "predict_keys", reading_idm)
    data = tmp_path / "heldout"
    data.mkdir()
    rng = np.random.default_rng(0)
    clip = sliding_square_clip(40)
    for i in range(3):  # left or right, one at a time, changing every few steps
        right_held = np.repeat(rng.integers(0, 2, 10), 4).astype(bool)
        act = np.zeros((40, 22), np.uint8)
        act[right_held, right], act[~right_held, left] = 1, 1
        np.savez(data / f"ep_{i}.npz", obs=clip, act=act)
        (data / f"ep_{i}.json").write_text(json.dumps({"frame_skip": 4}))
    idm = InverseDynamicsModel.from_checkpoint(_tiny_idm(tmp_path / "idm"))
    config = EvalConfig(horizons=(4,), start_stride=2, idm_horizon=6)
    with torch_threads(1):
        scores = evaluate(vision, memory, find_episodes(data), config, idm=idm)["memory"]["idm"]
    assert scores["scored_keys"] == ["left", "right"]
    assert scores["dream"]["macro_f1"] == 1.0 and scores["dream_shuffled"]["macro_f1"] == 1.0
    assert scores["real"]["macro_f1"] == 0.0  # real frames show no key to this IDM
    floor = scores["dream_shuffled_vs_recorded"]
    assert floor["windows"] == scores["dream"]["windows"] > 100
    assert 0.2 < floor["macro_f1"] < 0.8  # the keys of another start: about chance


def test_reward_precision_recall_is_reported_only_when_a_constant_cannot_score_it() -> None:
    from elworld.eval.report import _head_lines

    two_sided = {"mse": 0.5, "constant_mse": 2.0, "steps": 10, "actual": 4, "predicted": 5,
                 "precision": 0.8, "recall": 1.0}  # fmt: skip
    lines = _head_lines("reward_head", two_sided)
    assert lines == [
        "| reward head MSE (best constant) | 0.5 (2) |",
        "| reward head precision / recall | 0.80 / 1.00 (5 predicted, 4 actual) |",
    ]
    assert _head_lines("reward_head", {**two_sided, "actual": 10}) == lines[:1]
    assert _head_lines("reward_head", {**two_sided, "actual": 0}) == lines[:1]


def test_gain_by_episode_averages_each_episode_then_takes_the_standard_error() -> None:
    from elworld.eval.evaluate import _gain_by_episode

    gain = np.array([1.0, 3.0, 5.0, 0.0])  # episode 7: starts 1, 3 (mean 2); episode 9: 5, 0
    got = _gain_by_episode(gain, np.array([7, 7, 9, 9]))
    assert got["gain_by_episode"] == [2.0, 2.5]
    assert got["gain_se"] == pytest.approx(np.std([2.0, 2.5], ddof=1) / np.sqrt(2))  # 0.25
    assert math.isnan(_gain_by_episode(gain, np.zeros(4))["gain_se"])  # one episode: unknown


def test_gain_by_episode_names_the_episodes_it_averaged() -> None:
    from elworld.eval.evaluate import _gain_by_episode

    got = _gain_by_episode(np.array([1.0, 3.0, 5.0]), np.array([2, 2, 0]), ["a", "b", "c"])
    assert got["gain_by_episode"] == [5.0, 2.0] and got["gain_episodes"] == ["a", "c"]


def _rollouts(gains: dict[str, float], stride: int = 8) -> dict:
    row = {"gain_episodes": list(gains), "gain_by_episode": list(gains.values())}
    return {"config": {"start_stride": stride}, "memory": {"rollout_psnr": {"4": row}}}


def test_paired_difference_pairs_episodes_by_name_on_known_gains() -> None:
    from elworld.eval.evaluate import paired_gain_difference

    ours = _rollouts({"a": 1.0, "b": 2.0, "c": 4.0})
    base = _rollouts({"d": 9.0, "c": 1.0, "b": 1.5})  # another order; "a" and "d" unpaired
    got = paired_gain_difference(ours, base)["4"]
    assert got["episodes"] == 2 and got["difference"] == pytest.approx((0.5 + 3.0) / 2)
    assert got["se"] == pytest.approx(np.std([0.5, 3.0], ddof=1) / np.sqrt(2))
    with pytest.raises(ValueError, match="none of these episodes"):
        paired_gain_difference(ours, _rollouts({"z": 0.0}))
    with pytest.raises(ValueError, match="--start-stride 4"):
        paired_gain_difference(ours, _rollouts({"a": 0.0}, stride=4))
    old = _rollouts({"a": 0.0})
    del old["memory"]["rollout_psnr"]["4"]["gain_episodes"]
    with pytest.raises(ValueError, match="gain_episodes"):
        paired_gain_difference(ours, old)


def test_eval_against_a_baseline_reports_the_paired_difference(
    tiny_checkpoints: Path, tmp_path: Path, capsys
) -> None:
    data = _episodes(tmp_path / "heldout")
    first = _eval_args(tiny_checkpoints, data, tmp_path / "first")
    assert main(first) == 0
    baseline = tmp_path / "first" / "eval.json"
    rollout = json.loads(baseline.read_text())["memory"]["rollout_psnr"]
    assert all(row["gain_episodes"] == ["ep_0", "ep_1"] for row in rollout.values())
    # The same world again (argmax rollouts, the same seed): every paired difference is 0.
    assert (
        main(_eval_args(tiny_checkpoints, data, tmp_path / "again", "--baseline", str(baseline)))
        == 0
    )
    against = json.loads((tmp_path / "again" / "eval.json").read_text())["memory"][
        "against_baseline"
    ]
    assert against["baseline"] == str(baseline) and set(against["horizons"]) == set(rollout)
    assert all(
        row["difference"] == pytest.approx(0.0, abs=1e-9) and row["episodes"] == 2
        for row in against["horizons"].values()
    )
    assert "| 4 | +0.00 | 0.00 | 2 |" in (tmp_path / "again" / "eval.md").read_text()
    capsys.readouterr()
    vision_only = tmp_path / "vision_only.json"
    vision_only.write_text(json.dumps({"episodes": 2, "vision": {}}))
    assert (
        main(_eval_args(tiny_checkpoints, data, tmp_path / "r", "--baseline", str(vision_only)))
        == 1
    )
    assert f"--baseline {vision_only}: expected an eval.json of `elworld eval` with --memory" in (
        capsys.readouterr().err
    )
