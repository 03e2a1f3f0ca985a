"""usef: embedding-free target speech extraction (USEF-TSE) and its embedding twins."""

from usef._version import __version__

__all__ = ["Enrollment", "Stream", "__version__", "extract", "list_models", "load_model"]

_API = {"extract", "load_model", "list_models", "Extractor", "Enrollment"}


def __getattr__(name: str):
    # Lazy so that `import usef` (and `usef --version`) does not import torch.
    if name in _API:
        from usef import api

        return getattr(api, name)
    if name == "Stream":
        from usef.stream import Stream

        return Stream
    raise AttributeError(f"module 'usef' has no attribute {name!r}")
