"""usef: embedding-free target speech extraction (USEF-TSE) and its embedding twins."""

__version__ = "0.1.0"
