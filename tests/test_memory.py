"""Tests for the memory model: shapes, sampling, learning toy transitions, input errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from elworld.checkpoint import save_checkpoint
from elworld.model.memory import MemoryConfig, MemoryModel, MemoryOutput, MemorySample

pytestmark = pytest.mark.usefixtures("one_torch_thread")

V = 16  # tiny vocab
GRID = 4  # tiny 4x4 grid
T = GRID * GRID
LEFT, RIGHT, PLUS, END = 3, 4, 5, 0  # action bits used by the toys


def tiny_config(**overrides: object) -> MemoryConfig:
    fields = dict(
        vocab_size=V,
        grid_height=GRID,
        grid_width=GRID,
        context_frames=1,
        n_layer=2,
        n_head=4,
        n_embd=32,
    )
    fields.update(overrides)
    return MemoryConfig(**fields)


def tiny_model(seed: int = 0, **overrides: object) -> MemoryModel:
    torch.manual_seed(seed)
    return MemoryModel(tiny_config(**overrides)).eval()


def random_inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, V, (batch, T), generator=g)
    actions = (torch.rand(batch, 22, generator=g) < 0.2).float()
    return tokens, actions


def shift_toy(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Next grid = current shifted one column left (bit 3) or right (bit 4), +1 mod V if bit 5.

    Reward = 1 while bit 5 is held; the episode ends when bit 0 is held. A
    quarter of the rows has no reward / done label and holds garbage there.
    """
    cur = torch.randint(0, V, (n, GRID, GRID), generator=g)
    right = torch.rand(n, generator=g) < 0.5
    plus = torch.rand(n, generator=g) < 0.5
    end = torch.rand(n, generator=g) < 0.3
    actions = torch.zeros(n, 22)
    actions[right, RIGHT] = 1.0
    actions[~right, LEFT] = 1.0
    actions[plus, PLUS] = 1.0
    actions[end, END] = 1.0
    shifted = torch.where(right[:, None, None], cur.roll(1, dims=2), cur.roll(-1, dims=2))
    target = (shifted + plus.long()[:, None, None]) % V
    has_reward = torch.rand(n, generator=g) < 0.75
    has_done = torch.rand(n, generator=g) < 0.75
    return {
        "context": cur.reshape(n, 1, T),
        "action": actions,
        "target": target.reshape(n, T),
        "has_target": torch.ones(n, dtype=torch.bool),
        "reward": torch.where(has_reward, plus.float(), torch.full((n,), 50.0)),
        "done": torch.where(has_done, end.float(), 1.0 - end.float()),
        "has_reward": has_reward,
        "has_done": has_done,
    }


def motion_toy(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """The scene scrolls one column per frame, left or right; no action tells which way."""
    cur = torch.randint(0, V, (n, GRID, GRID), generator=g)
    right = (torch.rand(n, generator=g) < 0.5)[:, None, None]
    prev = torch.where(right, cur.roll(-1, dims=2), cur.roll(1, dims=2))
    target = torch.where(right, cur.roll(1, dims=2), cur.roll(-1, dims=2))
    return {
        "context": torch.stack([prev, cur], dim=1).reshape(n, 2, T),
        "action": torch.zeros(n, 22),
        "target": target.reshape(n, T),
        "has_target": torch.ones(n, dtype=torch.bool),
    }


def train(model: MemoryModel, make_batch, steps: int, seed: int) -> MemoryModel:
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model.compute_loss(make_batch(64, g)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def shift_model() -> MemoryModel:
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(MemoryModel(tiny_config()), shift_toy, steps=300, seed=1)
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vocab_size", 0),
        ("grid_height", -1),
        ("context_frames", 0),
        ("n_layer", 0),
        ("n_embd", 30),  # not divisible by n_head=4
        ("dropout", 1.5),
        ("mask_schedule", "zigzag"),
        ("head_loss_weight", -0.5),
    ],
)
def test_config_rejects_bad_fields(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        tiny_config(**{field: value})


def test_config_tokens_per_frame_and_json_round_trip() -> None:
    config = tiny_config(grid_height=3, grid_width=5)
    assert config.tokens_per_frame == 15
    assert MemoryConfig(**dataclasses.asdict(config)) == config
    assert MemoryConfig().tokens_per_frame == 768


# ----------------------------------------------------------------- forward


def test_forward_shapes_tiny() -> None:
    model = tiny_model(context_frames=3)
    tokens, actions = random_inputs(3)
    context = torch.randint(0, V, (3, 2, T))
    next_tokens = torch.full((3, T), model.mask_id)
    next_tokens[:, :5] = 7
    out = model(tokens, actions, context, next_tokens)
    assert isinstance(out, MemoryOutput)
    assert out.logits.shape == (3, T, V)
    assert out.reward.shape == (3,)
    assert out.end_logit.shape == (3,)
    assert torch.isfinite(out.logits).all()


def test_forward_default_config_batch_one() -> None:
    torch.manual_seed(0)
    model = MemoryModel(MemoryConfig()).eval()
    tokens = torch.randint(0, 512, (1, 768))
    with torch.no_grad():
        out = model(tokens, torch.zeros(1, 22))
    assert out.logits.shape == (1, 768, 512)
    assert out.reward.shape == (1,)
    assert out.end_logit.shape == (1,)


def test_forward_without_heads_returns_none() -> None:
    model = tiny_model(reward_head=False, end_head=False)
    out = model(*random_inputs(2))
    assert out.reward is None and out.end_logit is None
    sample = model.sample(*random_inputs(2))
    assert torch.equal(sample.reward, torch.zeros(2))
    assert torch.equal(sample.end_prob, torch.zeros(2))


def test_missing_context_means_still_scene() -> None:
    model = tiny_model(context_frames=3)
    tokens, actions = random_inputs(2)
    still = tokens[:, None].expand(2, 2, T)
    with torch.no_grad():
        implicit = model(tokens, actions).logits
        explicit = model(tokens, actions, still).logits
        moved = model(tokens, actions, torch.randint(0, V, (2, 2, T))).logits
    torch.testing.assert_close(implicit, explicit)
    assert not torch.allclose(implicit, moved)


def test_action_reaches_every_cell() -> None:
    model = tiny_model(n_layer=1)
    tokens, _ = random_inputs(1)
    a, b = torch.zeros(1, 22), torch.zeros(1, 22)
    b[0, RIGHT] = 1.0
    with torch.no_grad():
        diff = (model(tokens, a).logits - model(tokens, b).logits).abs().amax(dim=-1)  # (1, T)
    assert (diff > 0).all()


# ---------------------------------------------------------------- sampling


def test_sample_shapes_and_ranges() -> None:
    model = tiny_model(context_frames=2)
    tokens, actions = random_inputs(3)
    sample = model.sample(tokens, actions, torch.randint(0, V, (3, 1, T)), steps=3)
    assert isinstance(sample, MemorySample)
    assert sample.tokens.shape == (3, T) and sample.tokens.dtype == torch.long
    assert sample.tokens.min() >= 0 and sample.tokens.max() < V  # no MASK left
    assert sample.reward.shape == (3,) and sample.end_prob.shape == (3,)
    assert ((sample.end_prob >= 0) & (sample.end_prob <= 1)).all()


def test_temperature_zero_is_deterministic_argmax() -> None:
    model = tiny_model()
    tokens, actions = random_inputs(4)
    first = model.sample(tokens, actions, temperature=0).tokens
    second = model.sample(tokens, actions, temperature=0, generator=torch.Generator()).tokens
    assert torch.equal(first, second)
    with torch.no_grad():
        assert torch.equal(first, model(tokens, actions).logits.argmax(dim=-1))
    top1 = model.sample(tokens, actions, temperature=1.0, top_k=1).tokens
    assert torch.equal(top1, first)


def test_seeded_generator_reproduces_and_seeds_differ() -> None:
    model = tiny_model()
    tokens, actions = random_inputs(4)

    def draw(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return model.sample(tokens, actions, temperature=1.0, steps=3, generator=g).tokens

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


@pytest.mark.parametrize(("steps", "passes"), [(1, 1), (3, 3), (5, 5), (100, T)])
def test_sample_runs_exactly_steps_passes(steps: int, passes: int) -> None:
    model = tiny_model()
    calls: list[int] = []
    blocks: list[int] = []
    model.register_forward_hook(lambda *_: calls.append(1))
    model.blocks[0].register_forward_hook(lambda *_: blocks.append(1))
    model.sample(*random_inputs(2), steps=steps)
    assert len(calls) == passes and len(blocks) == passes


def test_maskgit_commits_more_cells_each_pass_and_keeps_them() -> None:
    model = tiny_model()
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(args[3].clone()))
    g = torch.Generator().manual_seed(0)
    result = model.sample(*random_inputs(2), steps=4, generator=g).tokens
    known = [(inputs != model.mask_id).sum(dim=1) for inputs in seen]  # each (B,)
    assert known[0].eq(0).all()
    for before, after in zip(known, known[1:]):
        assert (after > before).all()
    for inputs in seen:  # a committed cell never changes afterwards
        fixed = inputs != model.mask_id
        assert torch.equal(inputs[fixed], result[fixed])


# -------------------------------------------------------------------- loss


def test_compute_loss_metrics_and_gradients() -> None:
    model = tiny_model()
    model.train()
    batch = shift_toy(8, torch.Generator().manual_seed(0))
    out = model.compute_loss(batch)
    assert set(out.metrics) == {"loss", "token_ce", "token_acc", "reward_mse", "end_bce"}
    assert math.isclose(out.metrics["loss"], out.loss.item(), rel_tol=1e-6)
    out.loss.backward()
    assert model.head.weight.grad.abs().sum() > 0
    assert model.reward_head.weight.grad.abs().sum() > 0


def test_unlabelled_rows_do_not_count() -> None:
    model = tiny_model()
    batch = shift_toy(8, torch.Generator().manual_seed(0))
    garbage = dict(batch)
    no_reward = ~batch["has_reward"]
    garbage["reward"] = torch.where(no_reward, torch.full((8,), -1e3), batch["reward"])
    garbage["done"] = torch.where(~batch["has_done"], 1.0 - batch["done"], batch["done"])
    torch.manual_seed(3)
    reference = model.compute_loss(batch).loss
    torch.manual_seed(3)
    assert torch.allclose(model.compute_loss(garbage).loss, reference)

    none = dict(batch)
    none.update(
        has_target=torch.zeros(8, dtype=torch.bool),
        target=torch.full((8, T), -1),  # filler in rows without a next frame is ignored
        has_reward=torch.zeros(8, dtype=torch.bool),
        has_done=torch.zeros(8, dtype=torch.bool),
    )
    out = model.compute_loss(none)
    assert out.metrics["token_ce"] == 0.0
    assert "reward_mse" not in out.metrics and "end_bce" not in out.metrics


@pytest.mark.parametrize("schedule", ["cosine", "linear", "full"])
def test_training_mask_counts(schedule: str) -> None:
    model = tiny_model(mask_schedule=schedule)
    torch.manual_seed(0)
    counts = model._mask_counts(2000, torch.device("cpu"))
    assert counts.min() >= 1 and counts.max() <= T
    full = (counts == T).float().mean().item()
    if schedule == "full":
        assert full == 1.0
    else:
        assert 0.4 < full < 0.8  # about half fully masked, plus the schedule's own full draws
        assert counts.float().mean() < T


# ---------------------------------------------------------------- learning


def test_learns_action_dependent_shift_and_increment(shift_model: MemoryModel) -> None:
    batch = shift_toy(256, torch.Generator().manual_seed(99))
    tokens, actions = batch["context"][:, -1], batch["action"]
    one_shot = shift_model.sample(tokens, actions, temperature=0).tokens
    refined = shift_model.sample(tokens, actions, temperature=0, steps=4).tokens
    assert (one_shot == batch["target"]).float().mean() >= 0.98
    assert (refined == batch["target"]).float().mean() >= 0.98


def test_heads_learn_reward_and_end_rules(shift_model: MemoryModel) -> None:
    batch = shift_toy(256, torch.Generator().manual_seed(98))
    sample = shift_model.sample(batch["context"][:, -1], batch["action"], temperature=0)
    error = (sample.reward - batch["action"][:, PLUS]).abs()
    assert error.mean() < 0.1
    assert error.max() < 0.5  # the garbage 50.0 labels of unlabelled rows were never learned
    ends = batch["action"][:, END] == 1
    assert torch.equal(sample.end_prob > 0.5, ends)


def test_context_gives_motion() -> None:
    torch.manual_seed(0)
    model = train(MemoryModel(tiny_config(context_frames=2)), motion_toy, steps=200, seed=2)
    batch = motion_toy(256, torch.Generator().manual_seed(99))
    frames = batch["context"]
    predicted = model.sample(frames[:, -1], batch["action"], frames[:, :-1], temperature=0).tokens
    # Without the previous frame the direction is a coin flip: at best ~53% of cells.
    assert (predicted == batch["target"]).float().mean() >= 0.9


# ------------------------------------------------------------------ errors


def test_wrong_action_width_names_action_dim() -> None:
    model = tiny_model()
    tokens, _ = random_inputs(2)
    with pytest.raises(ValueError, match=r"21 keys per row.*action_dim=22"):
        model(tokens, torch.zeros(2, 21))
    with pytest.raises(ValueError, match="action_dim=22"):
        model.sample(tokens, torch.zeros(2, 21))


@pytest.mark.parametrize(
    ("tokens", "match"),
    [
        (torch.zeros(2, T + 1, dtype=torch.long), "tokens must have shape"),
        (torch.zeros(T, dtype=torch.long), "tokens must have shape"),
        (torch.full((2, T), V), r"tokens values must be in \[0, 16\)"),
        (torch.full((2, T), -1), r"tokens values must be in \[0, 16\)"),
    ],
)
def test_bad_tokens_raise(tokens: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_model()(tokens, torch.zeros(len(tokens), 22))


def test_bad_inputs_raise() -> None:
    model = tiny_model(context_frames=2)
    tokens, actions = random_inputs(2)
    with pytest.raises(TypeError, match="integer token ids"):
        model(tokens.float(), actions)
    with pytest.raises(ValueError, match="actions has 3 rows"):
        model(tokens, torch.zeros(3, 22))
    with pytest.raises(ValueError, match="context must have shape"):
        model(tokens, actions, torch.zeros(2, 2, T, dtype=torch.long))
    with pytest.raises(ValueError, match="next_tokens values"):
        model(tokens, actions, None, torch.full((2, T), V + 1))
    with pytest.raises(ValueError, match="temperature"):
        model.sample(tokens, actions, temperature=-1.0)
    with pytest.raises(ValueError, match="steps"):
        model.sample(tokens, actions, steps=0)
    with pytest.raises(ValueError, match="top_k"):
        model.sample(tokens, actions, top_k=0)


def test_bad_batches_raise() -> None:
    model = tiny_model(context_frames=2)
    batch = motion_toy(4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="missing.*target"):
        model.compute_loss({k: v for k, v in batch.items() if k != "target"})
    with pytest.raises(ValueError, match="context_frames=2"):
        model.compute_loss({**batch, "context": batch["context"][:, -1:]})


# -------------------------------------------------------------- checkpoint


def test_from_checkpoint_round_trip(tmp_path) -> None:
    model = tiny_model(context_frames=2)
    folder = tmp_path / "memory" / "best_model"
    save_checkpoint(folder, model=model, config=model.config, training_info={"epoch": 0})
    loaded = MemoryModel.from_checkpoint(folder)
    assert isinstance(loaded, MemoryModel) and not loaded.training
    assert loaded.config == model.config
    tokens, actions = random_inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens, actions).logits, model(tokens, actions).logits)


def test_end_pos_weight_scales_the_loss_of_episode_ends() -> None:
    tokens, actions = random_inputs(4)
    batch = {
        "context": tokens[:, None],
        "action": actions,
        "target": tokens,
        "has_target": torch.zeros(4, dtype=torch.bool),  # heads only
        "reward": torch.zeros(4),
        "done": torch.ones(4),  # every row ends its episode
        "has_reward": torch.zeros(4, dtype=torch.bool),
        "has_done": torch.ones(4, dtype=torch.bool),
    }
    plain = tiny_model(seed=3).compute_loss(batch).metrics["end_bce"]
    weighted = tiny_model(seed=3, end_pos_weight=5.0).compute_loss(batch).metrics["end_bce"]
    assert weighted == pytest.approx(5.0 * plain, rel=1e-4)
    with pytest.raises(ValueError, match="end_pos_weight"):
        tiny_config(end_pos_weight=0.0)


def test_copy_gate_makes_an_untrained_model_keep_the_current_frame() -> None:
    tokens, actions = random_inputs(2)
    with torch.no_grad():
        copying = tiny_model(seed=4).sample(tokens, actions, temperature=0.0).tokens
        plain = tiny_model(seed=4, copy_gate=False).sample(tokens, actions, temperature=0.0).tokens
    assert (copying == tokens).float().mean() > 0.95
    assert (plain == tokens).float().mean() < 0.5


# ------------------------------------------- axial, AdaLN, guidance, context noise

CONTROL = dict(attention="axial", adaln=True, action_dropout=0.2, context_noise=0.2)


@pytest.mark.parametrize(
    ("field", "value"), [("attention", "sparse"), ("action_dropout", 1.0), ("context_noise", -0.1)]
)
def test_config_rejects_bad_control_fields(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        tiny_config(**{field: value})


@pytest.mark.parametrize("attention", ["full", "axial"])
def test_control_options_give_shapes_and_gradients(attention: str) -> None:
    model = tiny_model(**{**CONTROL, "attention": attention, "context_frames": 2}).train()
    batch = shift_toy(8, torch.Generator().manual_seed(0))
    batch["context"] = batch["context"].repeat(1, 2, 1)  # (B, 2, T)
    loss = model.compute_loss(batch).loss
    loss.backward()
    assert math.isfinite(loss.item())
    assert model.null_action.grad is not None and model.null_action.grad.abs().sum() > 0
    assert model.noise_emb.weight.grad is not None
    assert all(block.ada.weight.grad.abs().sum() > 0 for block in model.blocks)
    model.eval()
    tokens, actions = batch["context"][:, -1], batch["action"]
    sample = model.sample(tokens, actions, batch["context"][:, :-1], guidance=3.0)
    assert sample.tokens.shape == (8, T) and sample.end_prob.shape == (8,)


def test_adaln_starts_as_the_plain_block() -> None:
    plain, modulated = tiny_model(seed=3), tiny_model(seed=3, adaln=True)
    tokens, actions = random_inputs(4)
    state = {k: v for k, v in modulated.state_dict().items() if ".ada." not in k}
    plain.load_state_dict(state, strict=True)
    torch.testing.assert_close(modulated(tokens, actions).logits, plain(tokens, actions).logits)


def test_guidance_needs_action_dropout() -> None:
    model = tiny_model()
    tokens, actions = random_inputs(2)
    with pytest.raises(ValueError, match="action_dropout"):
        model.sample(tokens, actions, guidance=2.0)
    with pytest.raises(ValueError, match="action_dropout"):
        model(tokens, actions, drop_action=torch.ones(2, dtype=torch.bool))


def test_guidance_one_is_the_plain_conditional_pass() -> None:
    model = tiny_model(action_dropout=0.5)
    tokens, actions = random_inputs(3)
    plain = model.sample(tokens, actions, temperature=0).tokens
    assert torch.equal(model.sample(tokens, actions, temperature=0, guidance=1.0).tokens, plain)
    assert model.sample(tokens, actions, guidance=4.0, temperature=0).tokens.shape == plain.shape


def test_guided_logits_follow_the_formula() -> None:
    """guidance g: ``uncond + g * (cond - uncond)``, uncond being the pass without the action."""
    model = tiny_model(action_dropout=0.5, seed=1).eval()
    with torch.no_grad():
        model.null_action.normal_()  # a "no action" unlike any real one
    tokens, actions = random_inputs(3)
    masked = torch.full_like(tokens, model.mask_id)
    with torch.no_grad():
        cond = model(tokens, actions, None, masked).logits.float()
        uncond = model(tokens, actions, None, masked, drop_action=torch.ones(3, dtype=torch.bool))
        uncond = uncond.logits.float()
        guided, out = model._logits(tokens, actions, None, masked, 3.0)
    assert (cond - uncond).abs().max() > 1e-3  # the action matters, so g matters
    torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.logits, cond, rtol=1e-4, atol=1e-4)  # heads: conditional
    strong = uncond + 50.0 * (cond - uncond)
    greedy = model.sample(tokens, actions, temperature=0, guidance=50.0, steps=1).tokens
    assert torch.equal(greedy, strong.argmax(-1))
    assert not torch.equal(greedy, cond.argmax(-1))  # guidance changed the frame


def test_axial_adaln_learns_the_action_dependent_shift() -> None:
    torch.manual_seed(0)
    model = train(MemoryModel(tiny_config(**CONTROL)), shift_toy, steps=300, seed=1)
    batch = shift_toy(256, torch.Generator().manual_seed(97))
    predicted = model.sample(batch["context"][:, -1], batch["action"], temperature=0).tokens
    assert (predicted == batch["target"]).float().mean() >= 0.95


def test_bf16_argmax_agrees_with_fp32(shift_model: MemoryModel) -> None:
    batch = shift_toy(64, torch.Generator().manual_seed(96))
    tokens, actions = batch["context"][:, -1], batch["action"]
    full = shift_model.sample(tokens, actions, temperature=0).tokens
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = shift_model.sample(tokens, actions, temperature=0).tokens
    assert (half == full).float().mean() >= 0.99


def test_inference_logits_are_fp32_under_bf16_autocast(shift_model: MemoryModel) -> None:
    batch = shift_toy(4, torch.Generator().manual_seed(95))
    tokens, actions = batch["context"][:, -1], batch["action"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert shift_model.eval()(tokens, actions).logits.dtype == torch.float32
        shift_model.train()
        try:  # training keeps the head under autocast (speed); only inference pays for fp32
            assert shift_model(tokens, actions).logits.dtype == torch.bfloat16
        finally:
            shift_model.eval()


def test_sampler_draws_from_the_softmax() -> None:
    logits = torch.tensor([[[0.0, 1.0, 2.0, -1.0]]]).expand(1, 4000, 4).contiguous()
    g = torch.Generator().manual_seed(0)
    sampled, prob = MemoryModel._draw(logits, 1.0, g)
    expected = logits[0, 0].softmax(-1)
    counts = torch.bincount(sampled.flatten(), minlength=4).float() / sampled.numel()
    assert torch.allclose(counts, expected, atol=0.03)
    torch.testing.assert_close(prob[0], expected[sampled[0]])
    hot, _ = MemoryModel._draw(logits, 0.25, g)  # colder: the top token dominates
    assert (hot == 2).float().mean() > 0.95


def test_old_checkpoint_without_new_fields_loads(tmp_path) -> None:
    import json

    model = tiny_model()
    folder = tmp_path / "memory" / "best_model"
    save_checkpoint(folder, model=model, config=model.config, training_info={})
    config = json.loads((folder / "config.json").read_text())
    for name in ("attention", "adaln", "action_dropout", "context_noise"):
        del config[name]
    (folder / "config.json").write_text(json.dumps(config))
    loaded = MemoryModel.from_checkpoint(folder)
    assert loaded.config == model.config


# ------------------------------------------------------------------ guidance distillation


def _guided_kl(student: MemoryModel, teacher: MemoryModel, batch: dict, guidance: float) -> float:
    """Mean KL from the teacher's guided next-frame distribution to the student's plain one."""
    tokens, actions = batch["context"][:, -1], batch["action"]
    with torch.no_grad():
        cond = teacher(tokens, actions).logits.float()
        uncond = teacher(tokens, actions, drop_action=torch.ones(len(tokens), dtype=torch.bool))
        guided = uncond.logits.float() + guidance * (cond - uncond.logits.float())
        single = student(tokens, actions).logits.float()
    target = torch.log_softmax(guided, dim=-1)
    return float((target.exp() * (target - torch.log_softmax(single, dim=-1))).sum(-1).mean())


def test_teacher_logits_are_the_guided_pair_and_unconditional_on_dropped_rows() -> None:
    teacher = tiny_model(seed=5, **CONTROL)
    student = tiny_model(seed=6, **CONTROL)
    student.distill_guidance(teacher, 2.5)
    tokens, actions = random_inputs(4, seed=3)
    masked = torch.full_like(tokens, student.mask_id)
    dropped = torch.tensor([False, True, False, True])
    rate = torch.tensor([0.0, 0.1, 0.05, 0.0])
    got = student._teacher_logits(tokens, actions, None, masked, dropped, rate)
    with torch.no_grad():
        cond = teacher(tokens, actions, None, masked, noise_rate=rate).logits
        off = torch.ones(4, dtype=torch.bool)
        uncond = teacher(tokens, actions, None, masked, drop_action=off, noise_rate=rate).logits
    guided = uncond + 2.5 * (cond - uncond)
    torch.testing.assert_close(got[~dropped], guided[~dropped])
    torch.testing.assert_close(got[dropped], uncond[dropped])
    assert not torch.allclose(guided, cond)  # the scale does change the distribution


def test_distillation_makes_one_pass_give_the_guided_distribution() -> None:
    torch.manual_seed(0)
    teacher = train(MemoryModel(tiny_config(**CONTROL)), shift_toy, steps=120, seed=1)
    student = MemoryModel(tiny_config(**CONTROL))
    student.load_state_dict(teacher.state_dict())
    student.distill_guidance(teacher, 3.0)
    probe = shift_toy(128, torch.Generator().manual_seed(95))
    before = _guided_kl(student, teacher, probe, 3.0)
    train(student, shift_toy, steps=150, seed=2)
    after = _guided_kl(student, teacher, probe, 3.0)
    assert before > 0.05  # the guided pair differs from the plain pass to begin with
    assert after < 0.5 * before
    assert set(student.state_dict()) == set(teacher.state_dict())  # the teacher is not saved
    metrics = student.train().compute_loss(probe).metrics
    assert "token_kl" in metrics and "token_ce" not in metrics
    student.distill_guidance(None)
    assert "token_ce" in student.compute_loss(probe).metrics


def test_distillation_argmax_weight_adds_the_cross_entropy_to_the_teacher_argmax() -> None:
    teacher = tiny_model(seed=5, **CONTROL)
    student = tiny_model(seed=6, **CONTROL)
    batch = shift_toy(8, torch.Generator().manual_seed(4))
    student.distill_guidance(teacher, 2.0, argmax_weight=0.5, full_mask=True)
    torch.manual_seed(1)
    metrics = student.train().compute_loss(batch).metrics
    assert metrics["argmax_ce"] > 0
    expected = metrics["token_kl"] + 0.5 * metrics["argmax_ce"]
    heads = metrics.get("reward_mse", 0.0) + metrics.get("end_bce", 0.0)
    expected += student.config.head_loss_weight * heads
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
    student.distill_guidance(teacher, 2.0)  # weight 0: the KL alone, no argmax term
    assert "argmax_ce" not in student.compute_loss(batch).metrics


def test_distillation_full_mask_masks_every_cell_of_every_row() -> None:
    teacher = tiny_model(seed=5, **CONTROL)
    student = tiny_model(seed=6, **CONTROL)
    batch = shift_toy(8, torch.Generator().manual_seed(4))
    seen: list[torch.Tensor] = []
    student.register_forward_pre_hook(lambda module, args: seen.append(args[3].clone()))
    for full_mask in (False, True):
        student.distill_guidance(teacher, 2.0, full_mask=full_mask)
        torch.manual_seed(2)
        student.train().compute_loss(batch)
    partial, full = seen
    assert bool((partial != student.mask_id).any())  # random mask counts leave cells known
    assert bool((full == student.mask_id).all())


def test_distillation_refuses_a_teacher_it_cannot_follow() -> None:
    student = tiny_model(**CONTROL)
    with pytest.raises(ValueError, match="action_dropout"):
        student.distill_guidance(tiny_model(), 2.0)
    with pytest.raises(ValueError, match="config"):
        student.distill_guidance(tiny_model(**{**CONTROL, "n_layer": 1}), 2.0)
    with pytest.raises(ValueError, match="guidance"):
        student.distill_guidance(tiny_model(**CONTROL), float("nan"))
    with pytest.raises(ValueError, match="argmax_weight"):
        student.distill_guidance(tiny_model(**CONTROL), 2.0, argmax_weight=-1.0)
