"""Neural models: the VQ-VAE vision model and the transformer memory model."""
