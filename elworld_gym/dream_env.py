"""``ElWorldDream-v0``: one Gymnasium env running inside the learned world model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from elworld.keys import check_action
from elworld.world.dream import DreamWorld
from elworld_gym.common import (
    RENDER_FPS,
    RENDER_MODES,
    RewardFn,
    check_env_args,
    check_rate,
    reset_option,
    step_outcomes,
)

logger = logging.getLogger(__name__)


class DreamEnv(gym.Env[np.ndarray, np.ndarray]):
    """A dream: the memory model imagines each next frame from the keys you hold.

    ## Description
    The vision model (a VQ-VAE) turns a real frame into a grid of tokens; at
    every step the memory model (a transformer) samples the next frame's tokens
    from the current (and, for context models, recent) tokens and the action.
    Nothing is simulated: everything you see is the learned model's dream.

    ## Action Space
    ``MultiBinary(22)``: entry ``i`` is 1 while key ``i`` is held, in the
    original recordings' key order (``elworld.keys.KEY_NAMES``)::

        0 f8     1 up     2 down   3 left   4 right  5 z      6 x      7 1
        8 3      9 q     10 w     11 e     12 r     13 t     14 a     15 s
       16 d     17 c     18 f     19 enter 20 ctrl  21 esc

    Several keys may be held at once. Anything but a ``(22,)`` array of 0/1
    raises ``ValueError``.

    ## Observation Space
    - ``obs_type="rgb"`` (default): the decoded frame,
      ``Box(0, 255, (192, 256, 3), uint8)`` (the vision checkpoint's size).
    - ``obs_type="tokens"``: the token grid, ``Box(0, 511, (24, 32), int64)``
      (bounds and grid from the checkpoint). Nothing is decoded in this mode
      unless you render, so it is the fast one for training agents.

    ## Rewards
    ``reward_fn(observation)`` when given (it receives this env's observation:
    a frame or a token grid); else the memory checkpoint's reward head; else 0.

    ## Starting State
    ``reset`` encodes a real frame: ``options["observation"]`` (a uint8 frame
    ``(H, W, 3)`` of any size, or for context models a stack ``(k, H, W, 3)``
    of up to ``context_frames`` frames, oldest first), else a frame drawn with
    ``self.np_random`` from the start bank (``start_observations``).

    ## Episode End
    - Termination: with an episode-end model (``<checkpoints>/end/best_model``,
      ``elworld train end``), a draw from its hazard, the chance the real game
      ends at this step given the episode so far; without one, the memory
      checkpoint's end head above 0.5 (never for checkpoints without one).
    - Truncation: after ``max_episode_steps`` steps when set (``gym.make``
      applies the registered limit with its ``TimeLimit`` wrapper instead).

    ``info`` holds ``"tokens"`` (the current ``(gh, gw)`` grid, a copy) and
    ``"end_prob"`` (the hazard, or the end head's probability).

    ## Arguments
    ```python
    gym.make("elworld_gym:ElWorldDream-v0", checkpoints=None, obs_type="rgb",
             render_mode=None, temperature=1.0, top_k=None)
    ```
    - ``checkpoints``: root folder holding ``vision/best_model`` and
      ``memory/best_model``; default ``$ELWORLD_CHECKPOINTS``, else the
      bundled demo ``checkpoints/``.
    - ``vision`` / ``memory``: explicit checkpoint folders (override the root).
    - ``start_observations``: an ``.npz`` recording (its ``obs``) or a uint8
      array ``(N, H, W, 3)`` of real frames, treated as one consecutive clip;
      default ``<checkpoints>/start_frames.npz``.
    - ``obs_type``: ``"rgb"`` or ``"tokens"``.
    - ``render_mode``: ``None``, ``"rgb_array"`` or ``"human"`` (a pygame
      window, ``render_scale`` times the frame size, at ``metadata["render_fps"]``:
      the world's recorded steps per second, e.g. 8.75 for ViZDoom at frame
      skip 4, or 20 for worlds that do not record it; ``steps_per_second``
      sets it).
    - ``temperature`` (0 = argmax, deterministic), ``top_k``,
      ``sampling_steps`` (MaskGIT refinement passes per frame), ``guidance``
      (classifier-free guidance scale on the keys, 1 = off; needs a memory
      model trained with ``--action-dropout``; ``None``, the default, takes
      the world's recommended scale from its memory checkpoint): sampling.
    - ``precision``: ``"auto"`` (default) runs the memory model under bfloat16
      autocast where the device has native bf16 (a CPU with AVX-512 BF16 or
      AMX, a CUDA device with bf16) and in fp32 elsewhere, where bf16 would be
      emulated (7x slower on an AVX2-only CPU); ``"bf16"`` or ``"fp32"``
      choose it yourself. The choice is logged once and kept in
      ``env.unwrapped.world.precision``. The output head runs in fp32
      either way; on the bundled world the argmax tokens agree on 99.2% of
      held-out cells and open-loop PSNR is within 0.03 dB up to 4 steps
      (0.4 dB at 32, where argmax rollouts fork at a flipped token);
      ``benchmarks/dream_step.py`` measures the speed.
    - ``compile``: ``torch.compile`` the memory model (faster batched steps
      after a one-off compile of about a minute and a half on a CPU; for
      agents' long runs).
    - ``end_model``: an episode-end checkpoint folder, ``False`` to end
      episodes by the memory's end head, default the root's ``end/best_model``
      when it has one.
    - ``max_episode_steps``: truncate after this many steps (None: never).
    - ``device``: torch device (default CUDA when available, else CPU).
    - ``reward_fn``: callable ``observation -> float``.

    Seeding: ``reset(seed=s)`` seeds the start draw and the torch generator
    the dream samples from, so a seed and an action sequence reproduce a dream
    exactly.

    ## Version History
    - v0: initial version (one-shot / MaskGIT memory model, VQ-VAE vision).
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": RENDER_FPS}

    def __init__(
        self,
        checkpoints: str | Path | None = None,
        *,
        vision: str | Path | None = None,
        memory: str | Path | None = None,
        start_observations: str | Path | np.ndarray | None = None,
        obs_type: str = "rgb",
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        sampling_steps: int = 1,
        guidance: float | None = None,
        precision: str = "auto",
        compile: bool = False,
        end_model: str | Path | bool | None = None,
        device: str | torch.device | None = None,
        reward_fn: RewardFn | None = None,
        render_scale: int = 3,
        steps_per_second: float | None = None,
    ) -> None:
        check_env_args(obs_type, render_mode, max_episode_steps, reward_fn, render_scale)
        self.world = DreamWorld.from_checkpoints(
            checkpoints,
            vision=vision,
            memory=memory,
            start_observations=start_observations,
            num_envs=1,
            device=device,
            temperature=temperature,
            top_k=top_k,
            sampling_steps=sampling_steps,
            guidance=guidance,
            precision=precision,
            compile=compile,
            end_model=end_model,
        )
        # The world plays at its recordings' rate (35 / frame skip for ViZDoom) when known.
        rate = check_rate(steps_per_second) or self.world.steps_per_second
        self.metadata = {**type(self).metadata, "render_fps": rate or RENDER_FPS}
        self.obs_type = obs_type
        self.render_mode = render_mode
        self.max_episode_steps = max_episode_steps
        self.reward_fn = reward_fn
        self.render_scale = render_scale
        self.observation_space = self.world.observation_space(obs_type)
        self.action_space = self.world.action_space()
        self._elapsed_steps: int | None = None  # None until the first reset
        self._window = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a dream from a real frame (``options["observation"]`` or the start bank)."""
        super().reset(seed=seed)
        options = reset_option(options, ("observation",))
        self.world.seed(int(self.np_random.integers(2**63 - 1)))
        if options.get("observation") is not None:
            stacks = self.world.encode_observation(options["observation"])[None]  # (1, K, T)
        else:
            stacks = self.world.start_stacks(self.world.sample_start_indices(self.np_random, 1))
        self.world.reset_envs([0], stacks)
        self._elapsed_steps = 0
        observation = self.world.observations(self.obs_type)[0]
        if self.render_mode == "human":
            self.render()
        return observation, {"tokens": self.world.tokens()[0], "end_prob": 0.0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Dream one frame ahead while the keys in ``action`` are held."""
        if self._elapsed_steps is None:
            raise gym.error.ResetNeeded("call reset() before step() on ElWorldDream")
        keys = check_action(action, self.world.action_dim, "action")
        result = self.world.step(keys[None])  # one env: (1, A)
        self._elapsed_steps += 1
        observations = self.world.observations(self.obs_type)  # (1, ...)
        rewards, terminated = step_outcomes(self.world, result, observations, self.reward_fn)
        truncated = (
            self.max_episode_steps is not None and self._elapsed_steps >= self.max_episode_steps
        )
        info = {"tokens": self.world.tokens()[0], "end_prob": float(result.end_prob[0])}
        if self.render_mode == "human":
            self.render()
        return observations[0], float(rewards[0]), bool(terminated[0]), bool(truncated), info

    def render(self) -> np.ndarray | None:
        """The current frame (``rgb_array``), or show it in a window (``human``)."""
        if self.render_mode is None:
            gym.logger.warn(
                "render() was called without a render_mode; pass "
                "render_mode='rgb_array' or 'human' when making ElWorldDream-v0"
            )
            return None
        frames = self.world.decode()  # (1, H, W, 3)
        if self.render_mode == "rgb_array":
            return frames[0]
        if self._window is None:
            from elworld_gym.rendering import FrameWindow

            self._window = FrameWindow(
                title="ElWorld dream", scale=self.render_scale, fps=self.metadata["render_fps"]
            )
        self._window.show(frames)
        return None

    def close(self) -> None:
        """Close the window, if any; safe to call more than once."""
        if self._window is not None:
            self._window.close()
            self._window = None
        super().close()
