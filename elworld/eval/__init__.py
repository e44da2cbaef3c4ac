"""``elworld eval``: how good a world is, measured against held-out real episodes.

A top-floor package (``docs/ARCHITECTURE.md``): it builds on ``world/``,
``train/``, ``model/`` and ``data/``, and nothing below imports it. One file
per job:

- ``evaluate``: ``EvalConfig`` and ``evaluate``, the measurement itself
  (teacher forcing, open-loop dreams through ``world.dream.sample_next``);
- ``metrics``: PSNR, SSIM, precision / recall, running means;
- ``idm_scores``: what the inverse-dynamics model is shown and scored against;
- ``report``: the markdown report; ``plot``: the PSNR-vs-horizon plot;
- ``cli``: ``elworld eval`` (parser, world-rate check, command).
"""
