"""Speaker vectors for the embedding twins: pre-computed d-vector tables and embedders.

Importing this package needs only NumPy; resemblyzer (the optional ``resemblyzer`` extra),
torch and soxr are imported when a vector is actually computed from audio.
"""

from usef.embeddings.dvector import (
    DVectorTable,
    ResemblyzerEmbedder,
    WindowEmbedder,
    embed_corpus,
    grid_windows,
    write_dvector_table,
)

__all__ = [
    "DVectorTable",
    "ResemblyzerEmbedder",
    "WindowEmbedder",
    "embed_corpus",
    "grid_windows",
    "write_dvector_table",
]
