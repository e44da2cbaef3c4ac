"""World Models' iterative loop (``elworld loop``): real play, world refit, dream-only retraining.

The top floor beside ``play/``: it drives recording, the trainers and control.
"""

from elworld.loop.rounds import ExploringAgent, LoopConfig, rounds_table, run_loop

__all__ = ["ExploringAgent", "LoopConfig", "rounds_table", "run_loop"]
