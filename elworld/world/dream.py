"""The batched dream: vision + memory models stepping N worlds at once.

``DreamWorld`` is the one core behind ``DreamEnv`` (N = 1) and
``DreamVectorEnv`` (N envs): both envs only validate, count steps and shape
Gymnasium's return values, so the step logic exists once.

It holds

- the vision model (tokens <-> frames) and the memory model (next tokens),
  checked to fit each other;
- the start bank: real frames encoded ONCE into tokens ``[S, T]``;
- each env's token history ``[N, K, T]`` (oldest first, last = current frame;
  ``K = context_frames`` of the memory model);
- one ``torch.Generator`` for all sampling, seeded by the envs' ``reset``;
- a cache of decoded frames, so an rgb observation and a render of the same
  step share one decode.

``step`` runs the memory model over the stepped envs in chunks of
``step_chunk`` and ``decode`` ONE batched vision pass for the envs whose frame
is not cached; nothing is decoded until
someone asks for a frame. All model work runs under ``torch.inference_mode()``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces

from elworld.checkpoint import recording_info
from elworld.frames import frames_to_tensor, resize_frames, tensor_to_frames
from elworld.model.common import autocast, check_models_fit, compute_dtype
from elworld.model.end import EndModel, check_end_model_fits
from elworld.model.memory import MemoryModel, MemorySample
from elworld.model.vision import VisionModel
from elworld.world.loading import iter_start_frames, resolve_checkpoints, start_clip_flags
from elworld.world.settings import SamplingSettings, resolve_guidance

logger = logging.getLogger(__name__)

OBS_TYPES = ("rgb", "tokens")
# An env whose end head says more than this has terminated.
END_THRESHOLD = 0.5
Indices = Sequence[int] | np.ndarray | None


@dataclass
class DreamStep:
    """What ``DreamWorld.step`` returns for the ``n`` stepped envs.

    ``reward`` is zeros when the memory model has no reward head. ``end_prob``
    is the episode-end model's hazard when the world has one, else the memory
    model's end head (zeros without one). ``terminated``: a draw below the
    hazard with an episode-end model, else the end head above ``END_THRESHOLD``.
    """

    tokens: torch.Tensor  # (n, T) int64, on the world's device
    reward: np.ndarray  # (n,) float32
    end_prob: np.ndarray  # (n,) float32
    terminated: np.ndarray  # (n,) bool


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _setting(name: str, settable: bool = False) -> property:
    """A ``DreamWorld`` attribute that reads (and, if ``settable``, replaces) ``settings.<name>``."""

    def get(world: DreamWorld) -> object:
        return getattr(world.settings, name)

    def put(world: DreamWorld, value: object) -> None:
        world.settings = replace(world.settings, **{name: value})  # checked by SamplingSettings

    return property(get, put if settable else None, doc=f"``settings.{name}``")


class DreamWorld:
    """N dream worlds stepped together by one memory model and one vision model.

    Args:
        vision: the VQ-VAE (frames <-> tokens), in eval mode.
        memory: the next-frame transformer; its ``vocab_size`` and grid must
            match the vision model's codebook and grid (else ``ValueError``).
        start_frames: chunks of real uint8 frames ``(n, H, W, 3)`` at the vision
            model's image size, encoded once into the start bank.
        start_first: bool ``(S,)``, True where a bank frame does not continue
            the previous one (a bank of short clips); ``None``: the frames are
            one consecutive recording. A start's context never reaches into
            another clip (its first frame repeats instead).
        num_envs: N, the number of worlds.
        settings: how every memory pass samples (``settings.SamplingSettings``;
            default: its defaults), resolved once for this world's device and
            N and kept as ``self.settings``: ``guidance=None`` is 1 (off) here
            (``from_checkpoints`` takes the checkpoint's recommended scale);
            ``precision="auto"`` takes bf16 where the device runs it natively
            (a CPU with AVX-512 BF16 or AMX, a CUDA device with bf16) and fp32
            elsewhere, logged once; ``compile`` runs the memory model under
            ``torch.compile`` (1.5x the batched steps/s on a 2-core CPU, bf16
            copy included, after a one-off compile of 1.5-2.5 min: for agents'
            long runs, not for play).
            ``self.memory`` is the model the passes run on: ``memory`` itself
            in fp32, its bf16 ``inference_copy`` under bf16 (``memory`` is
            left as it was).
        names: how error messages name the two checkpoints.
        recordings: where the memory model's training data came from
            (``loading.recording_info``); sets ``steps_per_second``.
    """

    def __init__(
        self,
        vision: VisionModel,
        memory: MemoryModel,
        start_frames: Iterable[np.ndarray],
        *,
        num_envs: int = 1,
        settings: SamplingSettings | None = None,
        names: tuple[str, str] = ("(not from a file)", "(not from a file)"),
        recordings: dict | None = None,
        start_first: np.ndarray | None = None,
        end_model: EndModel | None = None,
    ) -> None:
        settings = SamplingSettings() if settings is None else settings
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        check_models_fit(vision.config, memory.config, names[0], names[1])
        devices = {next(model.parameters()).device for model in (vision, memory)}
        if len(devices) != 1:
            raise ValueError(f"vision and memory models must be on one device, got {devices}")
        self.vision = vision.eval()
        self.memory = memory.eval()
        if end_model is not None:
            check_end_model_fits(end_model.config, memory.config, names[1])
            end_model = end_model.to(next(memory.parameters()).device).eval()
        self.end_model = end_model
        self.device = next(memory.parameters()).device
        self.num_envs = num_envs
        self.settings = settings.resolve(self.device, num_envs)  # concrete: see SamplingSettings
        dtype = compute_dtype(self.device, self.settings.precision)
        if self.memory.weight_dtype != dtype:  # bf16: weights cast once here, not on every pass
            self.memory = self.memory.inference_copy(dtype)
        if self.settings.compile:
            self.memory.compile(dynamic=False)  # in place: sample()'s passes run compiled
        self.recordings = dict(recordings or {})  # where the world's training data came from
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(0)
        # One episode-end state per env (its GRU's memory of the episode so far).
        self.end_state = end_model.initial_state(num_envs, self.device) if end_model else None
        self.bank = self._encode_bank(start_frames)  # (S, T)
        self.bank_clip_start = self._clip_starts(start_first)  # (S,) first frame of each clip
        K, T = self.context_frames, self.tokens_per_frame
        # Every env starts at the first bank frame until an env resets it.
        with torch.inference_mode():
            self.history = self.start_stacks(np.zeros(num_envs, dtype=np.int64))  # (N, K, T)
        self._frames: np.ndarray | None = None  # (N, H, W, 3) decoded-frame cache
        self._cached = np.zeros(num_envs, dtype=bool)
        assert self.history.shape == (num_envs, K, T)

    @classmethod
    def from_checkpoints(
        cls,
        checkpoints: str | Path | None = None,
        *,
        vision: str | Path | None = None,
        memory: str | Path | None = None,
        start_observations: str | Path | np.ndarray | None = None,
        num_envs: int = 1,
        device: str | torch.device | None = None,
        end_model: str | Path | bool | None = None,
        settings: SamplingSettings | None = None,
        **sampling: object,
    ) -> DreamWorld:
        """Load the models (see ``loading.resolve_checkpoints``) and encode the start bank.

        ``settings`` (or its fields as keywords, ``temperature=0``, which
        override it) say how the world samples; ``guidance=None`` takes the
        memory checkpoint's recommended scale (``settings.resolve_guidance``).
        ``end_model``: an episode-end checkpoint folder, ``False`` for none (the
        memory model's end head decides), else the root's ``end/best_model``
        when it has one.
        """
        settings = replace(SamplingSettings() if settings is None else settings, **sampling)
        paths = resolve_checkpoints(checkpoints, vision, memory, end_model)
        device = torch.device(device) if device is not None else default_device()
        settings = replace(settings, guidance=resolve_guidance(settings.guidance, paths.memory))
        vision_model = VisionModel.from_checkpoint(paths.vision, device=device)
        memory_model = MemoryModel.from_checkpoint(paths.memory, device=device)
        ends = EndModel.from_checkpoint(paths.end, device=device) if paths.end else None
        vc = vision_model.config
        frames = iter_start_frames(start_observations, paths.root, vc.image_height, vc.image_width)
        return cls(
            vision_model,
            memory_model,
            frames,
            num_envs=num_envs,
            settings=settings,
            names=(str(paths.vision), str(paths.memory)),
            recordings=recording_info(paths.memory),
            start_first=start_clip_flags(start_observations, paths.root),
            end_model=ends,
        )

    # --------------------------------------------------------------- settings
    # The resolved settings, read as attributes (``world.guidance``, ``world.precision``: what
    # ``precision="auto"`` chose). Only the temperature changes live (play's F7 / F9), checked
    # like any setting.
    top_k = _setting("top_k")
    sampling_steps = _setting("sampling_steps")
    guidance = _setting("guidance")
    precision = _setting("precision")
    step_chunk = _setting("step_chunk")
    temperature = _setting("temperature", settable=True)

    # ------------------------------------------------------------ properties
    @property
    def frame_skip(self) -> int | None:
        """Game tics per dream step, as recorded (None when the recordings do not say)."""
        skip = self.recordings.get("frame_skip")
        return int(skip) if isinstance(skip, int) and not isinstance(skip, bool) else None

    @property
    def steps_per_second(self) -> float | None:
        """The real game's steps per second at the world's frame skip (None if unrecorded)."""
        rate = self.recordings.get("steps_per_second")
        return float(rate) if isinstance(rate, int | float) and rate > 0 else None

    @property
    def context_frames(self) -> int:
        """K: frames the memory model sees, the current one included."""
        return self.memory.config.context_frames

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(grid_height, grid_width)`` of a frame's tokens."""
        return self.vision.config.grid_height, self.vision.config.grid_width

    @property
    def tokens_per_frame(self) -> int:
        """T: tokens per frame."""
        return self.vision.config.tokens_per_frame

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)`` of a decoded frame."""
        return self.vision.config.image_height, self.vision.config.image_width, 3

    @property
    def codebook_size(self) -> int:
        """Number of distinct tokens."""
        return self.vision.config.codebook_size

    @property
    def action_dim(self) -> int:
        """Keys per action."""
        return self.memory.config.action_dim

    @property
    def has_reward_head(self) -> bool:
        """Whether the memory model predicts rewards."""
        return bool(self.memory.config.reward_head)

    @property
    def has_end_head(self) -> bool:
        """Whether the world predicts episode ends (an episode-end model or the memory's end head)."""
        return self.end_model is not None or bool(self.memory.config.end_head)

    def hazard(self, end_prob: np.ndarray) -> np.ndarray:
        """The chance each episode ends at a step, from ``DreamStep.end_prob``.

        The episode-end model's output is that chance already. The memory end
        head's is not: BCE with ``pos_weight=w`` (``MemoryConfig.end_pos_weight``)
        learns odds ``w`` times the true ones, so ``h = p / (p + w (1 - p))``.
        """
        if self.end_model is not None:
            return end_prob
        w = float(getattr(self.memory.config, "end_pos_weight", 1.0))
        return end_prob / (end_prob + w * (1.0 - end_prob))

    @property
    def num_start_frames(self) -> int:
        """S: frames in the start bank."""
        return self.bank.shape[0]

    def observation_space(self, obs_type: str) -> spaces.Box:
        """One env's observation space: a frame for ``"rgb"``, the token grid for ``"tokens"``."""
        if obs_type == "rgb":
            return spaces.Box(0, 255, self.image_shape, np.uint8)
        if obs_type == "tokens":
            return spaces.Box(0, self.codebook_size - 1, self.grid_shape, np.int64)
        raise ValueError(f"obs_type must be one of {OBS_TYPES}, got {obs_type!r}")

    def action_space(self) -> spaces.MultiBinary:
        """One env's action space: one 0/1 entry per key."""
        return spaces.MultiBinary(self.action_dim)

    # ------------------------------------------------------------- encoding
    @torch.inference_mode()
    def encode_frames(self, frames: np.ndarray) -> torch.Tensor:
        """Tokens ``(n, T)`` of uint8 frames ``(n, H, W, 3)`` of any size."""
        height, width, _ = self.image_shape
        frames = resize_frames(frames, height, width)  # (n, H, W, 3)
        tokens = self.vision.encode(frames_to_tensor(frames, device=self.device))  # (n, gh, gw)
        return tokens.reshape(len(frames), -1)  # (n, T)

    def _encode_bank(self, start_frames: Iterable[np.ndarray]) -> torch.Tensor:
        chunks = [self.encode_frames(chunk) for chunk in start_frames]
        if not chunks or sum(len(c) for c in chunks) == 0:
            raise ValueError("the start bank is empty: start_observations holds no frames")
        bank = torch.cat(chunks)  # (S, T)
        logger.debug("encoded %d start frames", bank.shape[0])
        return bank

    def _clip_starts(self, start_first: np.ndarray | None) -> torch.Tensor:
        S = self.bank.shape[0]
        first = np.zeros(S, dtype=bool) if start_first is None else np.asarray(start_first, bool)
        if first.shape != (S,):
            raise ValueError(
                f"start bank 'first' flags have shape {first.shape}, expected ({S},) (one per frame)"
            )
        first[0] = True
        clip_start = np.maximum.accumulate(np.where(first, np.arange(S), 0))  # (S,)
        return torch.as_tensor(clip_start, dtype=torch.long, device=self.device)

    def sample_start_indices(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` bank indices drawn with ``rng``: frames with K - 1 earlier frames of their clip if any."""
        history = np.arange(self.num_start_frames) - self.bank_clip_start.cpu().numpy()  # (S,)
        full = np.flatnonzero(history >= self.context_frames - 1)
        candidates = full if full.size else np.arange(self.num_start_frames)
        return candidates[rng.integers(0, len(candidates), size=count)]

    @torch.inference_mode()
    def start_stacks(self, indices: np.ndarray) -> torch.Tensor:
        """Token stacks ``(n, K, T)`` ending at bank frames ``indices``.

        The context stays within each frame's clip: before the clip's first frame,
        that frame repeats (a still scene, as at an episode start).
        """
        K = self.context_frames
        ends = torch.as_tensor(np.asarray(indices), dtype=torch.long, device=self.device)
        offsets = torch.arange(-K + 1, 1, device=self.device)  # (K,)
        low = self.bank_clip_start[ends][:, None]  # (n, 1)
        rows = torch.maximum(ends[:, None] + offsets[None, :], low)  # (n, K)
        return self.bank[rows]  # (n, K, T)

    def encode_observation(
        self, observation: object, name: str = 'options["observation"]'
    ) -> torch.Tensor:
        """Token stack ``(K, T)`` of a real frame ``(H, W, 3)`` or stack ``(k, H, W, 3)``, k <= K.

        A stack shorter than K is padded by repeating its oldest frame.

        Raises:
            ValueError: not uint8, or not shaped ``(H, W, 3)`` / ``(k, H, W, 3)``.
        """
        K = self.context_frames
        expected = "a uint8 frame (H, W, 3)" + (
            f" or a stack of 1..{K} frames (k, H, W, 3), oldest first" if K > 1 else ""
        )
        if not isinstance(observation, np.ndarray):
            raise ValueError(f"{name} must be {expected}, got {type(observation).__name__}")
        if observation.dtype != np.uint8:
            raise ValueError(f"{name} must be {expected}, got dtype {observation.dtype}")
        stack = observation[None] if observation.ndim == 3 else observation
        bad_stack = stack.ndim != 4 or not 1 <= stack.shape[0] <= K
        if bad_stack or stack.shape[-1] != 3 or 0 in stack.shape:
            raise ValueError(f"{name} must be {expected}, got shape {observation.shape}")
        tokens = self.encode_frames(stack)  # (k, T)
        pad = tokens[:1].expand(K - len(tokens), -1)  # (K - k, T)
        return torch.cat([pad, tokens])  # (K, T)

    # -------------------------------------------------------------- dynamics
    def seed(self, seed: int) -> None:
        """Seed the generator all sampling draws from."""
        self.generator.manual_seed(int(seed))

    def _index(self, indices: Indices) -> np.ndarray:
        if indices is None:
            return np.arange(self.num_envs)
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        assert index.size == 0 or (index.min() >= 0 and index.max() < self.num_envs)
        return index

    @torch.inference_mode()
    def reset_envs(self, indices: Indices, stacks: torch.Tensor) -> None:
        """Set the history of envs ``indices`` to token stacks ``(n, K, T)``."""
        index = self._index(indices)
        assert stacks.shape == (len(index), self.context_frames, self.tokens_per_frame)
        rows = torch.as_tensor(index, device=self.device)
        self.history[rows] = stacks.to(self.device)
        if self.end_state is not None:
            self.end_state[rows] = 0.0  # a new episode: nothing has hit the player yet
        self._cached[index] = False

    @torch.inference_mode()
    def step(self, actions: np.ndarray, indices: Indices = None) -> DreamStep:
        """Advance envs ``indices`` (default: all) by one frame (memory passes of ``step_chunk`` envs).

        ``actions``: validated 0/1 array ``(n, action_dim)``, one row per stepped env.
        """
        index = self._index(indices)
        assert actions.shape == (len(index), self.action_dim)
        rows = torch.as_tensor(index, device=self.device)
        history = self.history[rows]  # (n, K, T)
        action = torch.as_tensor(actions, device=self.device).float()  # (n, A)
        if self.end_model is not None:  # the chance the game ends on this step, from frames so far
            hazard, self.end_state[rows] = self.end_model.step(
                history[:, -1], action, self.end_state[rows]
            )
            draw = torch.rand(len(index), generator=self.generator, device=self.device)
            terminated = (draw < hazard).cpu().numpy()
        sample = sample_next(self.memory, history, action, self.settings, self.generator)
        tokens = sample.tokens.long()  # (n, T)
        self.history[rows] = torch.cat([history[:, 1:], tokens[:, None]], dim=1)  # (n, K, T)
        self._cached[index] = False
        if self.end_model is not None:
            end_prob = hazard.float().cpu().numpy()
        else:
            end_prob = sample.end_prob.float().cpu().numpy()
            terminated = (
                end_prob > END_THRESHOLD
                if self.memory.config.end_head
                else np.zeros(len(index), dtype=bool)
            )
        return DreamStep(
            tokens=tokens,
            reward=sample.reward.float().cpu().numpy(),
            end_prob=end_prob,
            terminated=terminated,
        )

    # ------------------------------------------------------------ observing
    def tokens(self, indices: Indices = None) -> np.ndarray:
        """Current token grids ``(n, gh, gw)`` int64 (a new array)."""
        index = self._index(indices)
        current = self.history[torch.as_tensor(index, device=self.device), -1]  # (n, T)
        return current.cpu().numpy().reshape(len(index), *self.grid_shape)  # (n, gh, gw)

    @torch.inference_mode()
    def decode(self, indices: Indices = None) -> np.ndarray:
        """Current frames ``(n, H, W, 3)`` uint8 (a new array).

        Decodes, in one batched vision pass, only the envs whose current frame
        is not cached yet.
        """
        index = self._index(indices)
        if self._frames is None:
            self._frames = np.zeros((self.num_envs, *self.image_shape), dtype=np.uint8)
        stale = np.unique(index[~self._cached[index]])
        if stale.size:
            rows = torch.as_tensor(stale, device=self.device)
            grids = self.history[rows, -1].view(len(stale), *self.grid_shape)  # (n, gh, gw)
            self._frames[stale] = tensor_to_frames(self.vision.decode(grids))  # (n, H, W, 3)
            self._cached[stale] = True
        return self._frames[index]  # fancy indexing: a copy

    def observations(self, obs_type: str, indices: Indices = None) -> np.ndarray:
        """Observations of envs ``indices``: frames for ``"rgb"``, token grids for ``"tokens"``."""
        return self.decode(indices) if obs_type == "rgb" else self.tokens(indices)


def sample_next(
    memory: MemoryModel,
    history: torch.Tensor,
    action: torch.Tensor,
    settings: SamplingSettings,
    generator: torch.Generator,
) -> MemorySample:
    """The next frame of dreams with token histories ``(n, K, T)`` under keys ``(n, A)``.

    The one way a dream steps (``DreamWorld.step``, ``elworld eval``'s open-loop
    rollouts): memory passes over ``settings.step_chunk`` dreams at a time
    (all ``n`` when ``None``), all drawing from ``generator``. Chunking changes
    the order of the draws, not what is sampled. An fp32 ``memory`` runs
    under the settings' precision (bf16 autocast for ``"bf16"``); a model
    already in bf16 (``MemoryModel.inference_copy``) runs as it is.
    """
    n, K = history.shape[0], history.shape[1]
    chunk = settings.step_chunk or n
    precision = settings.precision if memory.weight_dtype == torch.float32 else "fp32"
    parts = []
    for low in range(0, n, chunk):  # cache-sized passes (see SamplingSettings.step_chunk)
        part = slice(low, low + chunk)
        with autocast(history.device, precision):
            parts.append(
                memory.sample(
                    history[part, -1],
                    action[part],
                    history[part, :-1] if K > 1 else None,  # (c, K-1, T)
                    temperature=settings.temperature,
                    top_k=settings.top_k,
                    steps=settings.sampling_steps,
                    guidance=settings.guidance,
                    generator=generator,
                )
            )
    if len(parts) == 1:
        return parts[0]
    fields = ("tokens", "reward", "end_prob")
    return MemorySample(*(torch.cat([getattr(p, f) for p in parts]) for f in fields))
