"""``Agent``: a trained control policy that plays from real frames.

    from elworld.control import Agent

    agent = Agent.from_checkpoint("checkpoints/control/best_model", checkpoints="checkpoints")
    agent.reset()
    action = agent.act(frame)  # frame: uint8 (H, W, 3) of any size -> (22,) uint8

The agent tokenizes each frame with the vision model of the world it was
trained in and acts on the same features it saw in the dream. Loading checks
that world: the control checkpoint records its vision and memory fingerprints,
and any other world is refused with a ``CheckpointError`` naming both. A policy
that reads the world's memory (``memory_state``) also gets the episode-end
model it was trained with (its fingerprint checked too), stepped on the real
frames' tokens and the agent's own keys exactly as the dream steps it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from elworld.checkpoint import CheckpointError
from elworld.control.world_info import WorldInfo, check_same_world, recorded_world, resolve_world
from elworld.frames import frames_to_tensor, resize_frames
from elworld.model.end import EndModel
from elworld.model.policy import ControlPolicy
from elworld.model.vision import VisionModel


class Agent:
    """Acts in the real game (or any source of RGB frames) with a dream-trained policy.

    Args:
        policy: the control policy.
        vision: the vision model of the world the policy was trained in.
        world: that world's description (paths, fingerprints, keys, frame skip).
        end_model: that world's episode-end model, needed when the policy reads its state.
    """

    def __init__(
        self,
        policy: ControlPolicy,
        vision: VisionModel,
        world: WorldInfo,
        end_model: EndModel | None = None,
    ) -> None:
        c, v = policy.config, vision.config
        if (c.vocab_size, c.grid_height, c.grid_width) != (
            v.codebook_size,
            v.grid_height,
            v.grid_width,
        ):
            raise ValueError(
                f"policy tokens ({c.vocab_size} codes, {c.grid_height}x{c.grid_width}) do not fit the "
                f"vision model ({v.codebook_size} codes, {v.grid_height}x{v.grid_width})"
            )
        if c.memory_state and (end_model is None or end_model.config.hidden != c.memory_state):
            have = None if end_model is None else end_model.config.hidden
            raise ValueError(
                f"the policy reads a {c.memory_state}-number episode-end state; the end model "
                f"given has {have}"
            )
        self.policy = policy.eval()
        self.vision = vision.eval()
        self.end_model = end_model.eval() if end_model is not None else None
        self.world = world
        self.device = policy.token_table.device
        self._choice = torch.zeros(1, dtype=torch.long, device=self.device)
        self.reset()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        checkpoints: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
    ) -> Agent:
        """Load a control checkpoint and the vision model of its world.

        The world's root is resolved like the dream env's: ``checkpoints``, else
        ``$ELWORLD_CHECKPOINTS``, else the bundled demo world.

        Raises:
            CheckpointError: a folder is missing or broken, or the root's vision or
                memory checkpoint is not the one the agent was trained in.
        """
        recorded = recorded_world(path)
        paths, world = resolve_world(checkpoints)
        check_same_world(path, recorded, world)
        policy = ControlPolicy.from_checkpoint(path, device=device)
        vision = VisionModel.from_checkpoint(paths.vision, device=device)
        end_model = None
        if policy.config.memory_state:
            if paths.end is None or world.end_fingerprint != recorded.get("end_fingerprint"):
                raise CheckpointError(
                    f"control checkpoint {path} reads the state of the episode-end model "
                    f"{recorded.get('end')} (fingerprint {str(recorded.get('end_fingerprint'))[:12]}); the "
                    f"world's is {paths.end} (fingerprint {str(world.end_fingerprint)[:12]})"
                )
            end_model = EndModel.from_checkpoint(paths.end, device=device)
        return cls(policy, vision, world, end_model)

    @property
    def choices(self) -> tuple[str, ...]:
        """What the agent can do each step, e.g. ``("none", "left", "right")``."""
        return self.policy.config.choices

    def reset(self) -> None:
        """Forget the previous frame and decision (call at the start of every episode)."""
        self._previous: torch.Tensor | None = None
        self._steps = 0
        self._end_state = (
            self.end_model.initial_state(1, self.device) if self.end_model is not None else None
        )

    @torch.no_grad()
    def tokens(self, observation: np.ndarray) -> torch.Tensor:
        """Token grid ``(1, gh, gw)`` of a uint8 RGB frame ``(H, W, 3)`` of any size."""
        if not isinstance(observation, np.ndarray) or observation.dtype != np.uint8:
            kind = (
                observation.dtype
                if isinstance(observation, np.ndarray)
                else type(observation).__name__
            )
            raise ValueError(f"observation must be a uint8 RGB frame (H, W, 3), got {kind}")
        if observation.ndim != 3 or observation.shape[-1] != 3 or 0 in observation.shape:
            raise ValueError(
                f"observation must be a uint8 RGB frame (H, W, 3), got shape {observation.shape}"
            )
        c = self.vision.config
        frame = resize_frames(observation[None], c.image_height, c.image_width)  # (1, H, W, 3)
        return self.vision.encode(frames_to_tensor(frame, device=self.device))  # (1, gh, gw)

    @torch.no_grad()
    def act_on_tokens(self, tokens: torch.Tensor) -> np.ndarray:
        """The ``(22,)`` uint8 action for a token grid ``(1, gh, gw)`` (what the dream gives)."""
        tokens = tokens.to(self.device)
        current = self.policy.frame_features(tokens)  # (1, Ff)
        features = self.policy.features(
            current, current if self._previous is None else self._previous, self._end_state
        )
        self._previous = current
        if self._steps % self.policy.config.hold == 0:  # a new decision, held for `hold` steps
            self._choice = self.policy.logits(features).argmax(dim=1)
        self._steps += 1
        action = self.policy.actions(self._choice)[0]
        if self.end_model is not None:  # as DreamWorld.step: this frame and the keys held on it
            keys = torch.as_tensor(action[None], device=self.device).float()
            _, self._end_state = self.end_model.step(tokens.reshape(1, -1), keys, self._end_state)
        return action

    def act(self, observation: np.ndarray) -> np.ndarray:
        """The ``(22,)`` uint8 action for a real uint8 RGB frame ``(H, W, 3)`` of any size."""
        return self.act_on_tokens(self.tokens(observation))
