"""Control: agents trained inside the dream, scored in the real game.

- ``elworld.model.policy``: ``ControlConfig`` / ``ControlPolicy``, a linear (or tiny MLP)
  policy over pooled vision-codebook features of the token grid.
- :mod:`.rollout`: many policies played in many dreams, batched.
- :mod:`.train`: ``elworld train control``, CMA-ES in the dream only.
- :mod:`.real_fitness`: ``elworld train control --real doom:SCENARIO``, the same CMA-ES with
  its fitness from real games (the policy-class ceiling).
- :mod:`.agent`: ``Agent.from_checkpoint(path, checkpoints=ROOT)``, which acts on real frames.
- :mod:`.evaluate`: ``elworld eval control``, the real game next to baselines and the dream.
- :mod:`.world_info`: which world a control checkpoint belongs to.
"""

from __future__ import annotations

from elworld.control.agent import Agent
from elworld.model.policy import ControlConfig, ControlPolicy

__all__ = ["Agent", "ControlConfig", "ControlPolicy"]
