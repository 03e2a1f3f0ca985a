"""The package version, in a module of its own so that low layers (checkpoint files) can stamp
it without importing the ``usef`` package façade, which reaches up to :mod:`usef.api`."""

__version__ = "0.1.0"
