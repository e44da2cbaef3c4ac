"""Training: every trainer that needs no dream, and its ``elworld train`` command.

- ``loop``: one loop (``loop.train``, DDP, ``--resume``, ``--time-limit``,
  epoch checkpoints) for the models whose batches fit it: vision and memory
  (``cli``: ``elworld train vision|memory``).
- ``idm`` / ``end``: the inverse-dynamics judge and the episode-end GRU. Their
  batches are whole windows and whole episodes, so each keeps a short loop of
  its own; their run flags are shared (``cli_args.add_small_model_arguments``,
  ``add_fit_arguments``) so ``--out``, ``--epochs``, ``--time-limit``,
  ``--seed`` and ``--device`` behave alike.
- ``distributed``: process groups and ``resolve_device``.

CMA-ES for control dreams, so it lives above ``world/`` in ``control/``.
"""
