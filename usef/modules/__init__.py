"""Building blocks: tensors in, tensors out. Nothing here imports ``usef.models``."""
