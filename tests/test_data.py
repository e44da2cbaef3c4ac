"""Tests for elworld.data: episode files, streaming, splits, caches, datasets and CLI."""

from __future__ import annotations

import json
import logging
import pickle
import random
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from elworld.cli import main
from elworld.data import (
    DataError,
    FrameDataset,
    TransitionDataset,
    build_token_cache,
    find_episodes,
    inspect_episode,
    iter_frames,
    load_tokens,
    prepare_frames,
    read_labels,
    read_manifest,
    shard_episodes,
    split_episodes,
)
from elworld.frames import resize_frames
from elworld.keys import KEY_NAMES, NUM_KEYS


def write_episode(
    path: Path,
    n: int,
    height: int = 48,
    width: int = 64,
    compressed: bool = False,
    labels: bool = True,
    constant_frames: bool = False,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write a fabricated episode; frame t is filled with t when ``constant_frames``."""
    rng = np.random.default_rng(seed)
    if constant_frames:
        obs = np.broadcast_to(
            np.arange(n, dtype=np.uint8)[:, None, None, None], (n, height, width, 3)
        )
        obs = np.ascontiguousarray(obs)
    else:
        obs = rng.integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)
    arrays = {"obs": obs, "act": rng.integers(0, 2, size=(n, NUM_KEYS), dtype=np.uint8)}
    if labels:
        arrays["rew"] = rng.normal(size=n).astype(np.float32)
        arrays["done"] = np.zeros(n, dtype=bool)
        arrays["done"][-1] = True
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return arrays


class StandInEncoder(nn.Module):
    """Tokens = mean pixel value (0..255) of each 8x8 cell; counts encode calls."""

    def __init__(
        self, codebook_size: int = 512, image_height: int = 192, image_width: int = 256
    ) -> None:
        super().__init__()
        self.config = SimpleNamespace(
            image_height=image_height,
            image_width=image_width,
            grid_height=image_height // 8,
            grid_width=image_width // 8,
            codebook_size=codebook_size,
        )
        self.calls = 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        cells = F.avg_pool2d(images.mean(dim=1, keepdim=True), 8)  # (B, 1, 24, 32)
        return (cells[:, 0] * 255).round().long()  # (B, 24, 32)


@pytest.fixture
def episode_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "episodes"
    (directory / "sub").mkdir(parents=True)
    write_episode(directory / "ep_a.npz", 7, seed=1)
    write_episode(directory / "ep_b.npz", 5, compressed=True, seed=2)
    write_episode(directory / "sub" / "ep_c.npz", 4, labels=False, seed=3)
    write_episode(directory / "big.npz", 3, height=600, width=800, compressed=True, seed=4)
    return directory


# --- episodes -------------------------------------------------------------------------------


def test_find_episodes_is_recursive_and_sorted(episode_dir: Path, tmp_path: Path) -> None:
    paths = find_episodes(episode_dir)
    assert paths == sorted(paths)
    assert {p.name for p in paths} == {"ep_a.npz", "ep_b.npz", "ep_c.npz", "big.npz"}
    with pytest.raises(DataError, match="does not exist"):
        find_episodes(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .npz"):
        find_episodes(tmp_path / "empty")


def test_inspect_episode(episode_dir: Path) -> None:
    info = inspect_episode(episode_dir / "ep_b.npz")
    assert (info.num_frames, info.height, info.width, info.num_keys) == (5, 48, 64, NUM_KEYS)
    assert info.has_reward and info.has_done
    info = inspect_episode(episode_dir / "sub" / "ep_c.npz")
    assert not info.has_reward and not info.has_done
    assert inspect_episode(episode_dir / "big.npz").height == 600


@pytest.mark.parametrize("compressed", [False, True])
def test_iter_frames_chunks_and_native_size(tmp_path: Path, compressed: bool) -> None:
    arrays = write_episode(tmp_path / "ep.npz", 7, compressed=compressed)
    chunks = list(iter_frames(tmp_path / "ep.npz", chunk=3, height=48, width=64))
    assert [len(c) for c in chunks] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate(chunks), arrays["obs"])


def test_iter_frames_resizes(episode_dir: Path) -> None:
    for name in ("ep_a.npz", "big.npz"):
        frames = np.concatenate(list(iter_frames(episode_dir / name, chunk=2)))
        n = inspect_episode(episode_dir / name).num_frames
        assert frames.shape == (n, 192, 256, 3) and frames.dtype == np.uint8
    original = np.load(episode_dir / "big.npz")["obs"]
    np.testing.assert_array_equal(frames, resize_frames(original))


def test_read_labels(episode_dir: Path) -> None:
    labels = read_labels(episode_dir / "ep_a.npz")
    with np.load(episode_dir / "ep_a.npz") as archive:
        np.testing.assert_array_equal(labels["act"], archive["act"])
        np.testing.assert_allclose(labels["rew"], archive["rew"])
    assert labels["done"].dtype == bool and labels["done"][-1] and not labels["done"][:-1].any()
    assert set(read_labels(episode_dir / "sub" / "ep_c.npz")) == {"act"}


def _bad_episodes(tmp_path: Path) -> list[tuple[Path, str]]:
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    act = np.zeros((4, NUM_KEYS), dtype=np.uint8)
    cases = []

    def save(name: str, pattern: str, **arrays: np.ndarray) -> None:
        np.savez(tmp_path / name, **arrays)
        cases.append((tmp_path / name, pattern))

    save("no_act.npz", "no 'act'", obs=obs)
    save("no_obs.npz", "no 'obs'", act=act)
    save("float_obs.npz", "uint8", obs=obs.astype(np.float32), act=act)
    save("gray_obs.npz", r"\(N, H, W, 3\)", obs=obs[..., 0], act=act)
    save("wide_act.npz", "20 keys.*expected 22", obs=obs, act=np.zeros((4, 20), np.uint8))
    save("int_act.npz", "uint8", obs=obs, act=act.astype(np.int64))
    save("short_act.npz", "4 frames but act has 3", obs=obs, act=act[:3])
    save("bad_rew.npz", r"rew must have shape \(4,\)", obs=obs, act=act, rew=np.zeros(3))
    save("bad_done.npz", "done must be", obs=obs, act=act, done=np.array(["x"] * 4))
    (tmp_path / "garbage.npz").write_bytes(b"not a zip at all" * 10)
    cases.append((tmp_path / "garbage.npz", "not a readable .npz"))
    np.savez_compressed(tmp_path / "full.npz", obs=obs, act=act)
    data = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    cases.append((tmp_path / "truncated.npz", r"not a readable .npz \(truncated or corrupt\?\)"))
    return cases


def test_inspect_episode_errors_name_the_file(tmp_path: Path) -> None:
    for path, pattern in _bad_episodes(tmp_path):
        with pytest.raises(DataError, match=pattern) as error:
            inspect_episode(path)
        assert str(path) in str(error.value), path.name


def test_corrupt_frame_data_is_a_data_error(tmp_path: Path) -> None:
    """Damage inside the compressed obs stream (headers intact) surfaces as DataError."""
    path = tmp_path / "ep.npz"
    write_episode(path, 6, compressed=True)
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="ep.npz"):
        for _ in iter_frames(path, chunk=2, height=48, width=64):
            pass


def test_iter_frames_streams_with_bounded_memory(tmp_path: Path) -> None:
    n, height, width = 240, 192, 256
    obs = np.empty((n, height, width, 3), dtype=np.uint8)
    pattern = np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    obs[:] = pattern
    obs[:, 0, 0, 0] = np.arange(n)  # every frame differs
    np.savez_compressed(tmp_path / "long.npz", obs=obs, act=np.zeros((n, NUM_KEYS), np.uint8))
    episode_bytes = obs.nbytes
    del obs
    tracemalloc.start()
    try:
        seen = []
        for frames in iter_frames(tmp_path / "long.npz", chunk=4):
            seen.extend(frames[:, 0, 0, 0].tolist())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == list(range(n))
    assert peak < episode_bytes / 8, f"peak {peak} bytes for a {episode_bytes}-byte episode"


# --- split and shard ------------------------------------------------------------------------


def test_split_is_deterministic_by_name() -> None:
    paths = [Path(f"data/run_{i:02d}.npz") for i in range(20)]
    train, val = split_episodes(paths, val_fraction=0.2, seed=3)
    shuffled = paths[:]
    random.Random(1).shuffle(shuffled)
    assert split_episodes(shuffled, val_fraction=0.2, seed=3) == (train, val)
    assert len(val) == 4 and not set(train) & set(val) and set(train) | set(val) == set(paths)
    # The same file names elsewhere split the same way.
    moved = [Path("/elsewhere") / p.name for p in paths]
    assert [p.name for p in split_episodes(moved, 0.2, seed=3)[1]] == [p.name for p in val]
    # The seed matters (some seed differs from seed 3).
    assert any(split_episodes(paths, 0.2, seed=s)[1] != val for s in range(4, 10))


def test_split_edge_cases() -> None:
    two = [Path("a.npz"), Path("b.npz")]
    train, val = split_episodes(two, val_fraction=0.01)
    assert len(train) == 1 and len(val) == 1
    assert split_episodes([Path("a.npz")], val_fraction=0.5) == ([Path("a.npz")], [])
    many = [Path(f"{i}.npz") for i in range(5)]
    assert len(split_episodes(many, val_fraction=0.95)[0]) == 1  # train never empty
    with pytest.raises(ValueError, match="val_fraction"):
        split_episodes(many, val_fraction=1.0)
    with pytest.raises(DataError):
        split_episodes([])


def test_shard_episodes_disjoint_cover() -> None:
    paths = [Path(f"ep_{i}.npz") for i in range(7)]
    shards = [shard_episodes(reversed(paths), rank, 3) for rank in range(3)]
    flat = [p for shard in shards for p in shard]
    assert sorted(flat) == sorted(paths) and len(flat) == len(set(flat))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="rank"):
        shard_episodes(paths, 3, 3)


# --- caches and datasets --------------------------------------------------------------------


def test_prepare_frames_and_frame_dataset(episode_dir: Path, tmp_path: Path) -> None:
    paths = [episode_dir / "ep_a.npz", episode_dir / "big.npz"]
    cache = tmp_path / "cache"
    files = prepare_frames(paths, cache)
    assert all(
        f.name.endswith(".frames.npy") and f.name.startswith(p.stem) for f, p in zip(files, paths)
    )
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert prepare_frames(paths, cache) == files
    assert [f.stat().st_mtime_ns for f in files] == mtimes  # reused, not rewritten
    assert not list(cache.glob("*.tmp"))

    dataset = FrameDataset(files)
    assert len(dataset) == 7 + 3
    item = dataset[8]  # second frame of big.npz
    assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (192, 256, 3)
    original = np.load(episode_dir / "big.npz")["obs"][1]
    np.testing.assert_array_equal(item["frames"].numpy(), resize_frames(original))
    clone = pickle.loads(pickle.dumps(dataset))  # what a DataLoader worker receives
    assert clone.files._arrays is None
    assert torch.equal(clone[-1]["frames"], dataset[9]["frames"])
    with pytest.raises(IndexError):
        dataset[10]


def test_token_cache_reuse_and_invalidation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = [tmp_path / "e1.npz", tmp_path / "e2.npz"]
    write_episode(paths[0], 5, height=24, width=32, constant_frames=True)
    write_episode(paths[1], 3, compressed=True, constant_frames=True)
    cache = tmp_path / "tokens"
    encoder = StandInEncoder()
    files = build_token_cache(paths, encoder, "fp-1", cache, batch_size=2)
    assert encoder.calls == 3 + 2
    tokens = load_tokens(files[0])
    assert tokens.dtype == np.uint16 and tokens.shape == (5, 24, 32)
    np.testing.assert_array_equal(tokens[:, 3, 4], np.arange(5))  # frame t is all t
    assert read_manifest(cache)["fingerprint"] == "fp-1"

    mtimes = [f.stat().st_mtime_ns for f in files]
    encoder.calls = 0
    assert build_token_cache(paths, encoder, "fp-1", cache) == files
    assert encoder.calls == 0 and [f.stat().st_mtime_ns for f in files] == mtimes

    stale = cache / "gone-0123456789ab.tokens.npy"
    np.save(stale, np.zeros((1, 24, 32), np.uint16))
    with caplog.at_level(logging.INFO, logger="elworld.data.tokens"):
        rebuilt = build_token_cache(paths, encoder, "fp-2", cache)
    assert encoder.calls > 0 and not stale.exists()
    assert read_manifest(cache)["fingerprint"] == "fp-2"
    assert "fp-1" in caplog.text and "fp-2" in caplog.text
    np.testing.assert_array_equal(load_tokens(rebuilt[1])[:, 0, 0], np.arange(3))

    # A model with another input size re-encodes at that size (and invalidates again).
    small = build_token_cache(
        paths, StandInEncoder(image_height=96, image_width=128), "fp-3", cache
    )
    assert load_tokens(small[0]).shape == (5, 12, 16)
    assert read_manifest(cache)["image_height"] == 96


def test_token_cache_rejects_huge_codebook(tmp_path: Path) -> None:
    write_episode(tmp_path / "e.npz", 2)
    with pytest.raises(ValueError, match="65536"):
        build_token_cache([tmp_path / "e.npz"], StandInEncoder(70000), "fp", tmp_path / "c")


def test_transition_dataset(tmp_path: Path) -> None:
    with_labels = write_episode(tmp_path / "a.npz", 5, height=24, width=32, constant_frames=True)
    write_episode(tmp_path / "b.npz", 2, height=24, width=32, labels=False, constant_frames=True)
    paths = [tmp_path / "a.npz", tmp_path / "b.npz"]
    files = build_token_cache(paths, StandInEncoder(), "fp", tmp_path / "tokens")
    dataset = TransitionDataset(paths, files, context_frames=3)
    assert len(dataset) == 5 + 2

    first = dataset[0]
    assert first["context"].shape == (3, 768) and first["context"].dtype == torch.int64
    assert first["context"][:, 0].tolist() == [0, 0, 0]  # clamped: frame 0 repeated
    assert dataset[1]["context"][:, 0].tolist() == [0, 0, 1]
    middle = dataset[3]
    assert middle["context"][:, 0].tolist() == [1, 2, 3]
    assert middle["target"].shape == (768,) and middle["target"].dtype == torch.int64
    assert middle["target"].eq(4).all() and middle["has_target"].item()
    assert middle["action"].dtype == torch.float32
    assert middle["action"].tolist() == with_labels["act"][3].astype(np.float32).tolist()
    assert middle["reward"].item() == pytest.approx(float(with_labels["rew"][3]))
    assert (
        middle["has_reward"].item() and middle["has_done"].item() and middle["done"].item() == 0.0
    )

    last = dataset[4]
    assert not last["has_target"].item() and last["target"].eq(0).all()
    assert last["done"].item() == 1.0  # labels still present on the last step

    unlabeled = dataset[6]  # second step of b.npz
    assert unlabeled["context"][:, 0].tolist() == [0, 0, 1]
    assert not unlabeled["has_reward"].item() and not unlabeled["has_done"].item()
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=7)))
    assert batch["context"].shape == (7, 3, 768) and batch["has_target"].dtype == torch.bool
    assert batch["has_target"].tolist() == [True] * 4 + [False, True, False]

    with pytest.raises(DataError, match="token cache"):
        TransitionDataset(paths[::-1], files, context_frames=1)


# --- CLI ------------------------------------------------------------------------------------


def test_cli_data_info(episode_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", str(episode_dir)]) == 0
    out = capsys.readouterr().out
    for name in KEY_NAMES:
        assert f"\n{name} " in out
    assert "19" in out and "600x800" in out and "48x64" in out  # 7+5+4+3 frames

    assert main(["data", "info", str(episode_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["episodes"] == 4 and summary["frames"] == 19
    assert summary["episode_length"] == {"min": 3.0, "mean": 19 / 4, "max": 7.0}
    acts = np.concatenate([read_labels(p)["act"] for p in find_episodes(episode_dir)])
    assert summary["key_share"]["z"] == pytest.approx(acts[:, KEY_NAMES.index("z")].mean())
    assert summary["episodes_with_reward"] == 3
    assert summary["split"]["train"] + summary["split"]["val"] == 4 and summary["split"]["val"] >= 1


def test_cli_data_split_and_errors(
    episode_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "split", str(episode_dir), "--val-fraction", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split("\t")[1] for line in lines) == sorted(
        map(str, find_episodes(episode_dir))
    )
    assert [line.split("\t")[0] for line in lines].count("val") == 2
    assert main(["data", "info", str(tmp_path / "missing")]) == 1
    assert "missing" in capsys.readouterr().err


def test_start_frames_bank_is_real_frames_from_the_training_split(tmp_path: Path) -> None:
    from elworld.cli import main
    from elworld.data.cli import sample_start_frames

    rng = np.random.default_rng(0)
    for i in range(4):  # every frame of episode i is filled with the value 10*i + t
        obs = np.stack([np.full((48, 64, 3), 10 * i + t, np.uint8) for t in range(6)])
        np.savez(tmp_path / f"ep_{i}.npz", obs=obs, act=rng.integers(0, 2, (6, 22), dtype=np.uint8))
    paths = sorted(tmp_path.glob("*.npz"))
    bank, first = sample_start_frames(paths, 10, seed=1)
    assert bank.shape == (10, 192, 256, 3) and bank.dtype == np.uint8 and first.all()
    values = {int(frame[0, 0, 0]) for frame in bank}
    assert values <= {10 * i + t for i in range(4) for t in range(6)}
    assert len(values) > 1  # spread over episodes / time, not one frame repeated
    assert np.array_equal(bank, sample_start_frames(paths, 10, seed=1)[0])
    clips, first = sample_start_frames(paths, 5, seed=2, clip=3)
    assert clips.shape[0] == 15 and first.tolist() == [True, False, False] * 5
    steps = clips[:, 0, 0, 0].astype(int).reshape(5, 3)
    assert (np.diff(steps, axis=1) == 1).all()  # each clip: consecutive frames of one episode
    out = tmp_path / "bank.npz"
    assert main(["data", "start-frames", str(tmp_path), "--out", str(out), "--count", "5"]) == 0
    with np.load(out) as saved:
        assert saved["obs"].shape == (10, 192, 256, 3)  # 5 clips of 2 frames
        assert saved["first"].tolist() == [True, False] * 5


def test_recording_provenance_from_sidecars(tmp_path: Path) -> None:
    import json

    from elworld.data import recording_provenance

    paths = []
    for i, skip in enumerate((4, 4)):
        path = tmp_path / f"ep_{i}.npz"
        path.write_bytes(b"")
        sidecar = {"source": "vizdoom", "scenario": "take_cover", "frame_skip": skip}
        sidecar["policy"] = ["sticky", "random"][i]
        path.with_suffix(".json").write_text(json.dumps(sidecar))
        paths.append(path)
    info = recording_provenance(paths)
    assert info["frame_skip"] == 4 and info["steps_per_second"] == 8.75
    assert info["policy"] == ["random", "sticky"]  # several values: all of them, sorted
    assert "keys" not in info  # no sidecar had it
    assert recording_provenance([tmp_path / "none.npz"]) == {}
