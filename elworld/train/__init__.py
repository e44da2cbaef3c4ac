"""Training: one loop (``loop.train``) for every model with ``compute_loss(batch)``."""
