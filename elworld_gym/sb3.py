"""``DreamVecEnv``: the batched dream as a Stable-Baselines3 ``VecEnv``.

SB3's own vector envs (``DummyVecEnv``, ``SubprocVecEnv``) step N single envs
one by one, so N dreams cost N memory-model passes per step. ``DreamVecEnv``
wraps one ``DreamVectorEnv`` instead: every step is ONE batched model pass for
all N dreams (``benchmarks/sb3_vecenv.py`` measures the difference)::

    from stable_baselines3 import PPO
    from elworld_gym.sb3 import DreamVecEnv

    envs = DreamVecEnv(16, checkpoints="checkpoints", obs_type="tokens")
    PPO("MlpPolicy", envs).learn(10_000)

Needs the ``rl`` extra (``pip install 'elworld[rl]'``); ``import elworld_gym``
alone never imports Stable-Baselines3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

import elworld_gym
from elworld_gym.vector_env import DreamVectorEnv

try:
    from stable_baselines3.common.vec_env import VecEnv
    from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn
except ImportError as error:  # an optional extra
    raise ImportError(
        "elworld_gym.sb3 needs Stable-Baselines3: pip install 'elworld[rl]'"
    ) from error


class DreamVecEnv(VecEnv):
    """N dreams of ``ElWorldDream-v0`` as one SB3 ``VecEnv``, stepped together.

    ## Arguments
    ``DreamVecEnv(num_envs, **kwargs)`` builds the vector env exactly as
    ``gym.make_vec("elworld_gym:ElWorldDream-v0", num_envs=num_envs, **kwargs)``
    does (so the registered ``max_episode_steps`` of 1200 applies unless given);
    ``DreamVecEnv(env=vector_env)`` wraps a ``DreamVectorEnv`` you built.

    ## Spaces
    ``observation_space`` and ``action_space`` are ONE env's (SB3's
    convention): the frame ``Box(0, 255, (H, W, 3), uint8)`` or the token grid
    ``Box(0, vocab - 1, (gh, gw), int64)``, and ``MultiBinary(22)``.

    ## Stepping (SB3 conventions)
    - ``step`` returns ``(obs, rewards float32 (N,), dones bool (N,), infos)``
      with ``infos[i]``: ``"tokens"`` (the step's ``(gh, gw)`` grid),
      ``"end_prob"`` and ``"TimeLimit.truncated"`` (truncated, not terminated).
    - Autoreset in the same step: an env that terminated or truncated is reset
      at once; ``obs[i]`` is its new start frame and
      ``infos[i]["terminal_observation"]`` the last frame of the episode. (The
      wrapped ``DreamVectorEnv`` resets on the NEXT step, Gymnasium's default;
      this class resets those envs itself, with ``reset_mask``.)
    - Episode statistics (``infos[i]["episode"]``) come from SB3's ``VecMonitor``.

    ## Seeding and options
    ``seed(s)`` (PPO's ``seed=`` calls it) is used by the next ``reset()``: the
    batch has one random stream, so ``s`` (env 0's seed) seeds all N dreams and
    a seed and the actions reproduce them exactly. ``set_options`` passes a
    ``DreamVectorEnv`` reset option (``"observation"``) to the next ``reset()``,
    per env.

    ## One batched env
    ``get_attr`` reads the attribute once from the ``DreamVectorEnv`` and gives
    it for every index; ``set_attr`` and ``env_method`` act on all N dreams at
    once, so they refuse a subset of indices (``ValueError``). ``env_is_wrapped``
    is False (no Gymnasium wrappers). ``get_images`` and ``render`` need
    ``render_mode="rgb_array"`` (or ``"human"``: one tiled pygame window).
    """

    def __init__(
        self, num_envs: int | None = None, *, env: DreamVectorEnv | None = None, **kwargs: Any
    ) -> None:
        if env is None:
            env = gym.make_vec(
                f"elworld_gym:{elworld_gym.ENV_ID}",
                num_envs=1 if num_envs is None else num_envs,
                vectorization_mode="vector_entry_point",
                **kwargs,
            )
        elif kwargs:
            raise ValueError(
                f"pass env= or construction arguments, not both (got {sorted(kwargs)})"
            )
        if not isinstance(env, DreamVectorEnv):
            raise TypeError(f"env must be a DreamVectorEnv, got {type(env).__name__}")
        if num_envs is not None and num_envs != env.num_envs:
            raise ValueError(f"num_envs={num_envs} but env has {env.num_envs} envs")
        self.env = env
        self._actions: np.ndarray | None = None
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)

    # ------------------------------------------------------------------ stepping
    def reset(self) -> np.ndarray:
        """Reset all N dreams (with the seed and options set since the last reset)."""
        seed = self._seeds[0]
        # Envs sharing one options dict (or none) reset together, env 0's group first.
        groups: dict[int | None, tuple[dict[str, Any], list[int]]] = {}
        for index, options in enumerate(self._options):
            key = id(options) if options else None
            groups.setdefault(key, (options, []))[1].append(index)
        (first, _), *others = groups.values()
        for options, _ in groups.values():
            if "reset_mask" in options:
                raise ValueError("DreamVecEnv sets reset_mask itself; pass per-env options instead")
        obs, info = self.env.reset(seed=seed, options=first or None)
        for options, indices in others:  # envs whose options differ from env 0's
            mask = np.zeros(self.num_envs, dtype=bool)
            mask[indices] = True
            obs, info = self.env.reset(options={**options, "reset_mask": mask})
        self.reset_infos = self._split_info(info)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions ``(N, 22)``; :meth:`step_wait` runs the batched step."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """One batched step; envs that ended are reset at once (see the class docstring)."""
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async(actions)")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        dones = terminated | truncated
        infos = self._split_info(info)
        for i, item in enumerate(infos):
            item["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        if dones.any():
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = obs[i].copy()
            # Reset the ended envs now: the next DreamVectorEnv.step then steps them normally.
            obs, reset_info = self.env.reset(options={"reset_mask": dones})
            reset_infos = self._split_info(reset_info)
            for i in np.flatnonzero(dones):
                self.reset_infos[i] = reset_infos[i]
        return obs, rewards.astype(np.float32), dones, infos

    def _split_info(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        """The vector env's batched info as one dict per env."""
        return [
            {"tokens": info["tokens"][i], "end_prob": float(info["end_prob"][i])}
            for i in range(self.num_envs)
        ]

    def close(self) -> None:
        """Close the vector env (and its window, if any)."""
        self.env.close()

    # ------------------------------------------------------------ one batched env
    def _check_all(self, indices: VecEnvIndices, what: str) -> list[int]:
        chosen = list(self._get_indices(indices))
        if sorted(chosen) != list(range(self.num_envs)):
            raise ValueError(
                f"{what} acts on all {self.num_envs} dreams of one batched env; "
                f"it cannot target indices {chosen}"
            )
        return chosen

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The vector env's attribute, once per index (all envs share it)."""
        value = getattr(self.env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the vector env (all indices, or ``ValueError``)."""
        self._check_all(indices, "set_attr")
        setattr(self.env, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        """Call a method of the vector env once; its result is given for every index."""
        chosen = self._check_all(indices, "env_method")
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result for _ in chosen]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        """False for every index: the dreams are not Gymnasium-wrapped single envs."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """The N current frames (one batched decode); needs ``render_mode="rgb_array"``."""
        if self.render_mode != "rgb_array":
            gym.logger.warn(f"get_images() needs render_mode='rgb_array', got {self.render_mode!r}")
            return [None for _ in range(self.num_envs)]
        return list(self.env.render())
