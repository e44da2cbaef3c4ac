"""The dream step's speed paths keep its numbers: the bf16 weight copy, the untouched fp32 path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from elworld.model.memory import MemoryConfig, MemoryModel
from elworld.model.vision import VisionModel
from elworld.world.dream import DreamWorld, sample_next
from elworld.world.settings import SamplingSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The bundled design (axial, AdaLN, guidance, context noise), tiny.
AXIAL = MemoryConfig(
    vocab_size=32, grid_height=6, grid_width=8, n_layer=2, n_head=2, n_embd=32,
    attention="axial", adaln=True, action_dropout=0.1, context_noise=0.1, end_pos_weight=5.0,
)  # fmt: skip


def trained_looking(config: MemoryConfig, seed: int = 0) -> MemoryModel:
    """A model whose weights are all away from their init (AdaLN, gates and heads included)."""
    torch.manual_seed(seed)
    model = MemoryModel(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


def inputs(config: MemoryConfig, batch: int = 4, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    T, V = config.tokens_per_frame, config.vocab_size
    tokens = torch.randint(0, V, (batch, T), generator=g)
    context = torch.randint(0, V, (batch, config.context_frames - 1, T), generator=g)
    actions = (torch.rand(batch, config.action_dim, generator=g) < 0.3).float()
    return tokens, actions, context


@pytest.mark.parametrize("config", [AXIAL, MemoryConfig(**{**vars(AXIAL), "attention": "full"})])
def test_bf16_copy_gives_the_autocast_logits(config: MemoryConfig) -> None:
    model = trained_looking(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = model.inference_copy(torch.bfloat16)
    tokens, actions, context = inputs(config)
    with torch.inference_mode():
        exact = model(tokens, actions, context).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(tokens, actions, context).logits
        fast = copy(tokens, actions, context)
    assert copy.weight_dtype == torch.bfloat16 and model.weight_dtype == torch.float32
    assert copy.head.weight.dtype == torch.float32  # the argmax-deciding head stays fp32
    assert fast.logits.dtype == torch.float32
    assert not any(p.requires_grad for p in copy.parameters()) and not copy.training
    for key, value in model.state_dict().items():  # the original is left as it was
        assert value.dtype == torch.float32 and torch.equal(value, before[key]), key
    autocast_error = (autocast - exact).abs().max().item()
    copy_error = (fast.logits - exact).abs().max().item()
    scale = exact.abs().max().item()
    assert 0 < copy_error < 0.05 * scale, (copy_error, scale)  # bf16, not fp32, and close
    assert copy_error < 4 * autocast_error + 1e-3, (copy_error, autocast_error)
    agree = (fast.logits.argmax(-1) == exact.argmax(-1)).float().mean().item()
    assert agree >= 0.95
    assert torch.allclose(fast.reward.float(), model(tokens, actions, context).reward, atol=0.05)


def test_bf16_copy_samples_with_guidance_and_leaves_the_teacher() -> None:
    model = trained_looking(AXIAL)
    model.distill_guidance(trained_looking(AXIAL, seed=3), guidance=2.0)
    copy = model.inference_copy(torch.bfloat16)
    assert copy._distill is None
    tokens, actions, context = inputs(AXIAL)
    draws = [
        copy.sample(
            tokens, actions, context, guidance=2.0, generator=torch.Generator().manual_seed(5)
        )
        for _ in range(2)
    ]
    assert torch.equal(draws[0].tokens, draws[1].tokens)  # seeded: deterministic
    assert draws[0].tokens.shape == tokens.shape and draws[0].end_prob.dtype == torch.float32


def world(checkpoints: Path, precision: str, num_envs: int = 3, **kwargs: object) -> DreamWorld:
    vision = VisionModel.from_checkpoint(checkpoints / "vision" / "best_model")
    memory = MemoryModel.from_checkpoint(checkpoints / "memory" / "best_model")
    frames = np.load(checkpoints / "start_frames.npz")["obs"]
    settings = SamplingSettings(precision=precision, step_chunk=2, **kwargs)
    return DreamWorld(vision, memory, [frames], num_envs=num_envs, settings=settings)


def rollout(world: DreamWorld, steps: int = 4, seed: int = 7) -> torch.Tensor:
    world.seed(seed)
    actions = np.zeros((world.num_envs, world.action_dim), np.uint8)
    actions[:, 0] = 1
    return torch.stack([world.step(actions).tokens for _ in range(steps)])  # (steps, N, T)


def test_fp32_world_runs_the_given_model_as_it_was(tiny_checkpoints: Path) -> None:
    """fp32: no copy, no autocast; a step is exactly the chunked ``memory.sample`` calls."""
    dream = world(tiny_checkpoints, "fp32")
    memory = MemoryModel.from_checkpoint(tiny_checkpoints / "memory" / "best_model")
    history = dream.history.clone()
    actions = np.ones((3, dream.action_dim), np.uint8)
    dream.seed(11)
    got = dream.step(actions).tokens
    generator = torch.Generator().manual_seed(11)
    action = torch.as_tensor(actions).float()
    with torch.inference_mode():
        parts = [
            memory.sample(history[s, -1], action[s], history[s, :-1], generator=generator)
            for s in (slice(0, 2), slice(2, 3))
        ]
    assert dream.memory.weight_dtype == torch.float32
    assert torch.equal(got, torch.cat([p.tokens for p in parts]))


def test_bf16_world_is_seeded_and_close_to_autocast(tiny_checkpoints: Path) -> None:
    fast = world(tiny_checkpoints, "bf16", temperature=0.0)
    assert fast.memory.weight_dtype == torch.bfloat16
    again = world(tiny_checkpoints, "bf16")
    once = world(tiny_checkpoints, "bf16")
    assert torch.equal(rollout(again), rollout(once))  # a seeded dream stays deterministic
    # The landed path: the fp32 model under bf16 autocast, the same argmax dream.
    memory = MemoryModel.from_checkpoint(tiny_checkpoints / "memory" / "best_model")
    settings = fast.settings
    history = fast.history.clone()
    action = torch.zeros(3, fast.action_dim)
    with torch.inference_mode():
        landed = sample_next(memory, history, action, settings, torch.Generator()).tokens
        ours = sample_next(fast.memory, history, action, settings, torch.Generator()).tokens
    assert (landed == ours).float().mean().item() >= 0.9
