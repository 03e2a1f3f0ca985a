"""How alike two voices sound: the similarity measures of :mod:`usef.report.similarity`.

- ``pitch``: distance between the median F0 of target and interferer, in semitones;
  smaller = more alike. NumPy only.
- ``dvector``: cosine between speaker vectors (resemblyzer d-vectors by default);
  larger = more alike.
- ``auto``: ``dvector`` when resemblyzer is importable, else ``pitch``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np

__all__ = [
    "MEASURES",
    "SIMILARITY_KINDS",
    "SimilarityFn",
    "dvector_similarity",
    "pitch_similarity",
    "resemblyzer_available",
    "resolve_kind",
]

SIMILARITY_KINDS = ("auto", "pitch", "dvector")
# what the number means and which way is "more alike"; the plot and the printed table say it
MEASURES: dict[str, dict[str, str]] = {
    "pitch": {"label": "median-F0 distance target-interferer (semitones)", "unit": "semitone",
              "alike": "smaller"},
    "dvector": {"label": "d-vector cosine target-interferer (resemblyzer)", "unit": "unit of cosine",
                "alike": "larger"},
}

# (target (T,), interferer (T,), sample_rate) -> {"similarity": float, ...extra columns}
SimilarityFn = Callable[[np.ndarray, np.ndarray, int], dict[str, float]]


def resemblyzer_available() -> bool:
    """True when the optional resemblyzer package imports."""
    try:
        with warnings.catch_warnings():  # its webrtcvad import warns about pkg_resources
            warnings.simplefilter("ignore")
            import resemblyzer  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_kind(kind: str) -> str:
    """``auto`` -> ``dvector`` when resemblyzer is installed, else ``pitch``; others unchanged."""
    if kind not in SIMILARITY_KINDS:
        raise ValueError(f"kind: must be one of {', '.join(SIMILARITY_KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    return "dvector" if resemblyzer_available() else "pitch"


def pitch_similarity(target: np.ndarray, interferer: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Median-F0 distance in semitones (NaN when either has no voiced frame) and both F0s.

    Shape:
        target ``(T,)``, interferer ``(T',)`` -> scalars.
    """
    from usef.data.pitch import f0_distance_semitones, median_f0

    f0_target = median_f0(np.asarray(target), sample_rate)
    f0_interferer = median_f0(np.asarray(interferer), sample_rate)
    return {
        "similarity": f0_distance_semitones(f0_target, f0_interferer),
        "target_f0": f0_target,
        "interferer_f0": f0_interferer,
    }


def dvector_similarity(embedder: Callable[[np.ndarray, int], np.ndarray]) -> SimilarityFn:
    """A :data:`SimilarityFn` giving the cosine of ``embedder``'s vectors of target and interferer.

    ``embedder(wave (T,), sample_rate) -> (E,)``, e.g. a
    :class:`usef.embeddings.ResemblyzerEmbedder`.
    """

    def similarity(target: np.ndarray, interferer: np.ndarray, sample_rate: int) -> dict[str, float]:
        a = np.asarray(embedder(target, sample_rate), dtype=np.float64)
        b = np.asarray(embedder(interferer, sample_rate), dtype=np.float64)
        norm = float(np.linalg.norm(a) * np.linalg.norm(b))
        return {"similarity": float(a @ b / norm) if norm > 0 else math.nan}

    return similarity



def _similarity_fn(kind: str, embedder: Callable[[np.ndarray, int], np.ndarray] | None) -> SimilarityFn:
    if kind == "pitch":
        return pitch_similarity
    if embedder is None:
        from usef.embeddings import ResemblyzerEmbedder

        embedder = ResemblyzerEmbedder()  # ImportError naming the extra when it is missing
    return dvector_similarity(embedder)
