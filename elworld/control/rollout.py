"""Policies played in many dreams at once, on one ``DreamWorld``.

``dream_rollouts`` steps only the dreams still running (``DreamWorld.step``
takes a subset), so a batch gets cheaper as its episodes end: the memory pass is
the whole cost of a dream step. An episode ends as in the dream env: when the
world says so (``DreamStep.terminated``: drawn from the episode-end model's
hazard, or the memory end head above its threshold) or after ``max_steps``
(truncated). A dream starts from a token history ``(K, T)``: a bank frame with
its real previous frames (``DreamWorld.start_stacks``), or one real frame
repeated (``still_stacks``, as ``DreamEnv.reset(options={"observation": frame})``
does and as the agent starts a real episode).

Besides the dream env's return (the reward head summed until the end) each
episode gets an *expected return*: every step's reward weighted by the chance
that the episode has not ended before it, ``sum_t r_t prod_{s<t} (1 - h_s)``.
It scores a dangerous step even when no end is drawn (or the head stays low),
which makes it a far less noisy fitness for CMA-ES than the thresholded length;
``survival_floor`` stops an episode once that chance is below it (its return is
then a lower bound). The hazard ``h`` is ``DreamWorld.hazard``: the episode-end
model's output, or the memory end head's probability with its training's
positive weight taken out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from elworld.keys import NUM_KEYS
from elworld.model.policy import ControlPolicy
from elworld.policy import FIXED_POLICIES, Policy, fixed_policy
from elworld.record.collect import RandomKeysPolicy, StickyKeysPolicy
from elworld.world.dream import DreamWorld


class DreamPolicy(Protocol):
    """Acts in ``n`` dreams.

    ``act`` gets the running dreams' token histories ``(m, K, gh, gw)`` (oldest
    first, last = the frame to act on) and their indices into ``0..n-1``.
    """

    def reset(self, n: int, seed: int) -> None: ...

    def act(self, history: torch.Tensor, index: np.ndarray) -> np.ndarray: ...


@dataclass
class RolloutResult:
    """Per-episode outcomes of ``dream_rollouts``, each ``(n,)``."""

    returns: np.ndarray  # the dream env's return: reward head summed until the end
    lengths: np.ndarray  # steps until the end (int)
    expected_returns: np.ndarray  # rewards weighted by the chance the episode is still running
    terminated: np.ndarray  # bool: the world ended it
    steps: int  # dream steps spent (all episodes)


class CandidatesPolicy:
    """Dream ``i`` is played by the policy with parameter row ``params[i]`` (CMA-ES candidates).

    A policy that reads the world's memory (``memory_state``) gets each dream's
    episode-end state from ``world`` (world slot = dream index, as in ``dream_rollouts``).
    """

    def __init__(
        self, policy: ControlPolicy, params: np.ndarray, world: DreamWorld | None = None
    ) -> None:
        if policy.config.memory_state:
            if world is None or world.end_state is None:
                raise ValueError(
                    "this policy reads the episode-end model's state: play it in a world with "
                    "an episode-end model"
                )
            if world.end_state.shape[1] != policy.config.memory_state:
                raise ValueError(
                    f"the policy reads {policy.config.memory_state} state numbers, the world's "
                    f"episode-end model has {world.end_state.shape[1]}"
                )
        self.policy, self.world = policy, world
        device = policy.token_table.device
        self.params = torch.as_tensor(np.asarray(params), dtype=torch.float32, device=device)
        self.previous: torch.Tensor | None = None
        n = len(self.params)
        self.choice = torch.zeros(n, dtype=torch.long, device=device)  # the decision being held
        self.held = torch.zeros(n, dtype=torch.long, device=device)  # steps it has been held

    def reset(self, n: int, seed: int) -> None:
        assert len(self.params) == n, "one parameter row per dream"
        self.previous = None
        self.held.zero_()

    def act(self, history: torch.Tensor, index: np.ndarray) -> np.ndarray:
        current = self.policy.frame_features(history[:, -1])  # (m, Ff)
        rows = torch.as_tensor(index, device=current.device)
        if self.previous is None:  # the first step: motion from the start's own history
            self.previous = torch.zeros(len(self.params), current.shape[1], device=current.device)
            self.previous[rows] = (
                self.policy.frame_features(history[:, -2]) if history.shape[1] > 1 else current
            )
        state = None
        if self.policy.config.memory_state:  # what the world remembers of each dream so far
            assert self.world is not None and self.world.end_state is not None
            state = self.world.end_state[index].to(current.device)
        features = self.policy.features(current, self.previous[rows], state)
        self.previous[rows] = current
        fresh = self.policy.batched_logits(features, self.params[rows]).argmax(dim=1)
        decide = self.held[rows] % self.policy.config.hold == 0  # hold = 1: every step
        choice = torch.where(decide, fresh, self.choice[rows])
        self.choice[rows] = choice
        self.held[rows] += 1
        return self.policy.actions(choice)


def agent_policy(
    policy: ControlPolicy, n: int, world: DreamWorld | None = None
) -> CandidatesPolicy:
    """The policy's own parameters in all ``n`` dreams (``world``: see ``CandidatesPolicy``)."""
    return CandidatesPolicy(policy, np.tile(policy.get_flat(), (n, 1)), world)


class NoKeyPolicy:
    """Never presses a key."""

    def reset(self, n: int, seed: int) -> None:
        pass

    def act(self, history: torch.Tensor, index: np.ndarray) -> np.ndarray:
        return np.zeros((len(index), NUM_KEYS), dtype=np.uint8)


class ScriptedPolicy:
    """One frame-blind policy per dream, seeded per dream: ``elworld.record.collect``'s
    ``random`` or ``sticky``, or one of ``elworld.policy.FIXED_POLICIES`` (left, right,
    alternate)."""

    def __init__(self, name: str, keys: Sequence[int]) -> None:
        if name not in ("random", "sticky", *FIXED_POLICIES):
            raise ValueError(
                f"scripted policy must be random, sticky or one of {FIXED_POLICIES}, got {name!r}"
            )
        self.name, self.keys = name, list(keys)
        self.players: list[Policy] = []

    def _player(self, seed: int) -> Policy:
        if self.name in FIXED_POLICIES:
            return fixed_policy(self.name, self.keys)
        cls = RandomKeysPolicy if self.name == "random" else StickyKeysPolicy
        return cls(self.keys, seed=seed)

    def reset(self, n: int, seed: int) -> None:
        self.players = [self._player(seed + i) for i in range(n)]

    def act(self, history: torch.Tensor, index: np.ndarray) -> np.ndarray:
        return np.stack([self.players[i](None) for i in index])


def still_stacks(world: DreamWorld, tokens: torch.Tensor) -> torch.Tensor:
    """Histories ``(n, K, T)`` that repeat each frame's tokens ``(n, T)`` K times (a still start)."""
    return tokens[:, None].expand(-1, world.context_frames, -1).contiguous()


@torch.inference_mode()
def dream_rollouts(
    world: DreamWorld,
    start_stacks: torch.Tensor,
    policy: DreamPolicy,
    *,
    max_steps: int,
    seed: int,
    survival_floor: float = 0.0,
    on_step=None,
) -> RolloutResult:
    """Play ``policy`` in ``n = len(start_stacks)`` dreams (world slots ``0..n-1``) until each ends.

    ``start_stacks``: ``(n, K, T)`` token histories to start from. ``seed`` seeds the
    world's sampling and the policy. Rewards are the reward head's (1 per step
    when the memory model has none). ``on_step(running)`` is called after every
    step with the number of dreams stepped.
    """
    n = len(start_stacks)
    if n > world.num_envs:
        raise ValueError(f"{n} dreams do not fit a world of {world.num_envs} envs")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    slots = np.arange(n)
    world.seed(seed)
    world.reset_envs(slots, start_stacks.to(world.device))
    policy.reset(n, seed)
    returns = np.zeros(n)
    expected = np.zeros(n)
    survival = np.ones(n)
    lengths = np.zeros(n, dtype=np.int64)
    terminated = np.zeros(n, dtype=bool)
    running = np.ones(n, dtype=bool)
    steps = 0
    grid = world.grid_shape
    for _ in range(max_steps):
        index = np.flatnonzero(running)
        if not index.size:
            break
        rows = torch.as_tensor(index, device=world.device)
        history = world.history[rows].view(len(index), -1, *grid)  # (m, K, gh, gw)
        actions = policy.act(history, index)
        step = world.step(actions, index)
        reward = step.reward.astype(np.float64) if world.has_reward_head else np.ones(len(index))
        end = step.end_prob.astype(np.float64) if world.has_end_head else np.zeros(len(index))
        returns[index] += reward
        expected[index] += survival[index] * reward
        survival[index] *= 1.0 - world.hazard(end)
        lengths[index] += 1
        ended = step.terminated
        terminated[index[ended]] = True
        running[index[ended]] = False
        if survival_floor > 0:
            running[index[survival[index] < survival_floor]] = False
        steps += len(index)
        if on_step is not None:
            on_step(len(index))
    return RolloutResult(returns, lengths, expected, terminated, steps)
