"""Training: losses, trainer, training state and checkpoint averaging."""
