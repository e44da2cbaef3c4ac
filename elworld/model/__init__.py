"""Every network: ``vision`` (VQ-VAE), ``memory`` (next-frame transformer), ``end``
(the episode-end GRU), ``idm`` (the inverse-dynamics judge) and ``policy`` (the
control policy); ``common`` holds what they share (``LossOutput``, precision).
Their trainers are in ``elworld.train``.
"""
