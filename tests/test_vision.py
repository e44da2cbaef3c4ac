"""Tests for the VQ-VAE vision model (elworld.model.vision), on tiny configs."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from elworld.frames import frames_to_tensor
from elworld.model.common import LossOutput
from elworld.model.vision import VisionConfig, VisionModel, VisionOutput


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared CPU run faster, and more predictably, on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_config(**overrides: object) -> VisionConfig:
    """32x32 images, 8x8 token grid, 32 codes."""
    kwargs: dict[str, object] = dict(
        image_height=32,
        image_width=32,
        width=16,
        downsamples=2,
        res_blocks=1,
        code_dim=16,
        codebook_size=32,
    )
    kwargs.update(overrides)
    return VisionConfig(**kwargs)  # type: ignore[arg-type]


def rectangle_frames(n: int = 4, size: int = 32, seed: int = 0) -> np.ndarray:
    """``n`` uint8 frames ``(n, size, size, 3)``: a background and two colored rectangles."""
    rng = np.random.default_rng(seed)
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        frames[i] = rng.integers(0, 256, size=3)
        for _ in range(2):
            y0, x0 = rng.integers(0, size - 8, size=2)
            h, w = rng.integers(6, 16, size=2)
            frames[i, y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, size=3)
    return frames


def test_default_config_matches_original_layout() -> None:
    config = VisionConfig()
    assert (config.grid_height, config.grid_width) == (24, 32)
    assert config.tokens_per_frame == 768
    assert config.codebook_size == 512


def test_default_model_encode_decode_shapes() -> None:
    torch.manual_seed(0)
    model = VisionModel(VisionConfig()).eval()
    images = torch.rand(1, 3, 192, 256)
    tokens = model.encode(images)
    assert tokens.shape == (1, 24, 32)
    assert tokens.dtype == torch.int64
    assert int(tokens.min()) >= 0 and int(tokens.max()) < 512
    with torch.no_grad():
        recon = model.decode(tokens)
    assert recon.shape == (1, 3, 192, 256)
    assert recon.dtype == torch.float32
    assert float(recon.min()) >= 0.0 and float(recon.max()) <= 1.0


def test_forward_output_fields() -> None:
    torch.manual_seed(0)
    model = VisionModel(tiny_config())
    out = model(frames_to_tensor(rectangle_frames()))
    assert isinstance(out, VisionOutput)
    assert out.reconstruction.shape == (4, 3, 32, 32)
    assert out.tokens.shape == (4, 8, 8)
    assert out.tokens.dtype == torch.int64
    assert out.loss.ndim == 0 and out.loss.requires_grad
    expected = out.recon_loss + model.config.commitment_weight * out.commit_loss
    assert torch.allclose(out.loss, expected)
    assert 1.0 <= float(out.perplexity) <= 32.0
    assert 0.0 < float(out.usage) <= 1.0


def test_encode_matches_forward_tokens_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = VisionModel(tiny_config())
    images = frames_to_tensor(rectangle_frames())
    model(images)  # training step: initialises the codebook from these images
    model.eval()
    assert torch.equal(model.encode(images), model(images).tokens)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"image_height": 30}, "image_height"),  # not divisible by 2**2
        ({"image_width": 36, "downsamples": 3}, "image_width"),
        ({"downsamples": 0}, "downsamples"),
        ({"width": 0}, "width"),
        ({"code_dim": -1}, "code_dim"),
        ({"codebook_size": 1}, "codebook_size"),
        ({"res_blocks": -1}, "res_blocks"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"commitment_weight": -0.1}, "commitment_weight"),
        ({"dead_code_threshold": -1.0}, "dead_code_threshold"),
    ],
)
def test_config_validation(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


@pytest.mark.parametrize(
    ("tokens", "match"),
    [
        (torch.full((1, 8, 8), 32), r"\[0, 32\)"),
        (torch.full((1, 8, 8), -1), r"\[0, 32\)"),
        (torch.zeros(1, 8, 9, dtype=torch.long), r"\(B, 8, 8\)"),
        (torch.zeros(64, dtype=torch.long), r"\(B, 8, 8\)"),
        (torch.zeros(1, 8, 8), "integer"),
    ],
)
def test_decode_rejects_bad_tokens(tokens: torch.Tensor, match: str) -> None:
    model = VisionModel(tiny_config()).eval()
    with pytest.raises(ValueError, match=match):
        model.decode(tokens)


@pytest.mark.parametrize(
    "images", [torch.rand(1, 3, 32, 48), torch.rand(3, 32, 32), torch.zeros(1, 3, 32, 32).long()]
)
def test_encode_rejects_bad_images(images: torch.Tensor) -> None:
    model = VisionModel(tiny_config()).eval()
    with pytest.raises(ValueError, match="images"):
        model.encode(images)


def test_compute_loss_metrics() -> None:
    torch.manual_seed(0)
    model = VisionModel(tiny_config())
    result = model.compute_loss({"frames": torch.from_numpy(rectangle_frames())})
    assert isinstance(result, LossOutput)
    assert set(result.metrics) == {"loss", "recon_mse", "psnr", "commit", "perplexity", "usage"}
    assert result.metrics["loss"] == pytest.approx(float(result.loss.detach()))
    mse = result.metrics["recon_mse"]
    assert result.metrics["psnr"] == pytest.approx(10 * math.log10(1 / mse))
    result.loss.backward()
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # The codebook is trained by EMA, never by the optimizer.
    names = {name for name, _ in model.named_parameters()}
    assert not any(name.startswith("quantizer.") for name in names)


def test_overfits_four_frames() -> None:
    torch.manual_seed(0)
    model = VisionModel(tiny_config())
    batch = {"frames": torch.from_numpy(rectangle_frames())}
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        result = model.compute_loss(batch)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        losses.append(result.metrics["loss"])
    # Loss falls below a fifth of its starting value.
    assert min(losses[-10:]) < 0.2 * losses[0], (losses[0], losses[-10:])


def _collapse_codebook(model: VisionModel) -> None:
    """Make every code the same far-away vector, used by nobody but code 0."""
    q = model.quantizer
    with torch.no_grad():
        q.embedding.fill_(50.0)
        q.ema_embed_sum.fill_(50.0)
        q.ema_cluster_size.zero_()
        q.ema_cluster_size[0] = 100.0
        q.ema_embed_sum[0] *= 100.0
        q.initialized.fill_(1)


def _train_steps(model: VisionModel, steps: int) -> None:
    images = frames_to_tensor(rectangle_frames(seed=1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        loss = model(images).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("threshold", [1.0, 0.0])
def test_dead_code_restart_revives_codes(threshold: float) -> None:
    torch.manual_seed(0)
    model = VisionModel(tiny_config(dead_code_threshold=threshold))
    _collapse_codebook(model)
    active_before = model.codebook_usage()["active_share"]
    assert active_before == pytest.approx(1 / 32)
    _train_steps(model, 5)
    model.eval()
    used = model.encode(frames_to_tensor(rectangle_frames(seed=1))).unique().numel()
    active_after = model.codebook_usage()["active_share"]
    if threshold > 0:
        assert active_after > active_before
        assert used > 4
    else:  # restarts disabled: the collapsed codebook stays collapsed
        assert active_after == pytest.approx(active_before)
        assert used == 1


def test_eval_mode_leaves_codebook_alone() -> None:
    torch.manual_seed(0)
    model = VisionModel(tiny_config()).eval()
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("quantizer.")}
    with torch.no_grad():
        model(frames_to_tensor(rectangle_frames()))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert int(model.quantizer.initialized) == 0


def test_first_training_batch_initialises_codebook() -> None:
    torch.manual_seed(0)
    model = VisionModel(tiny_config())
    assert model.codebook_usage() == {"perplexity": 0.0, "active_share": 0.0}
    model(frames_to_tensor(rectangle_frames()))
    assert int(model.quantizer.initialized) == 1
    stats = model.codebook_usage()
    assert stats["perplexity"] > 1.0
    assert 0.0 < stats["active_share"] <= 1.0


def test_state_dict_saves_with_safetensors(tmp_path) -> None:
    torch.manual_seed(0)
    model = VisionModel(tiny_config())
    images = frames_to_tensor(rectangle_frames())
    model(images)  # fill the EMA buffers
    state = model.state_dict()
    for key in ("ema_cluster_size", "ema_embed_sum", "embedding", "initialized"):
        assert f"quantizer.{key}" in state
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))  # refuses tensors that share memory
    restored = VisionModel(tiny_config())
    restored.load_state_dict(load_file(str(path)), strict=True)
    assert torch.equal(restored.eval().encode(images), model.eval().encode(images))


def test_distributed_single_rank_matches_local(tmp_path) -> None:
    """With torch.distributed initialised, the all-reduce/broadcast paths keep results."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    dist = torch.distributed
    images = frames_to_tensor(rectangle_frames())

    def run() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = VisionModel(tiny_config())
        model(images)
        model(images)
        return {k: v for k, v in model.state_dict().items() if k.startswith("quantizer.")}

    local = run()
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        distributed = run()
    finally:
        dist.destroy_process_group()
    assert all(torch.allclose(local[k].float(), distributed[k].float()) for k in local)


def _two_rank_worker(rank: int, store: str, out_dir: str) -> None:
    """One of two gloo ranks: same model, different frames, forward passes in train mode."""
    dist = torch.distributed
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # identical weights on both ranks, as DDP would make them
        model = VisionModel(tiny_config(dead_code_threshold=2.0))
        images = frames_to_tensor(rectangle_frames(seed=10 + rank))
        for _ in range(3):
            model(images)
        state = {k: v for k, v in model.state_dict().items() if k.startswith("quantizer.")}
        save_file(state, f"{out_dir}/rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def test_two_ranks_keep_identical_codebooks(tmp_path) -> None:
    """EMA statistics are all-reduced and restart vectors broadcast from rank 0."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    import torch.multiprocessing as mp

    mp.spawn(_two_rank_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    rank0 = load_file(str(tmp_path / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
