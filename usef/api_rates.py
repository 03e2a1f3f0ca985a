"""``usef.extract(list, model="default")``: the bundled default model chosen per item by its rate.

A list of mixtures may mix rates (8 kHz files next to 16 kHz ones); each item gets the bundled
default for its own rate (:func:`usef.hub.resolve_model`), and items of one rate still share
batches. :func:`usef.api.extract` hands such lists here, with its own ``load_model`` (so the
one it sees is the one used); this module imports nothing of :mod:`usef.api`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from usef import audio
from usef.inputs import _is_path


def _rate(mixture: Any, sample_rate: int | None) -> int | None:
    if _is_path(mixture):
        return audio.audio_info(mixture, "mixture")[0]
    return sample_rate


def extract_by_rate(
    load_model: Callable[..., Any],
    model: str,
    mixture: Sequence[Any],
    reference: Any,
    embedding: Any,
    *,
    sample_rate: int | None,
    device: Any,
    chunk_seconds: float | None,
    progress: Callable[[int, int], None] | None,
    return_confidence: bool,
) -> list:
    """Extract each mixture of the list with ``load_model(model, sample_rate=<its rate>)`` (a model
    with a confidence map when ``return_confidence``).

    ``reference`` and ``embedding`` are one value shared by all mixtures or a list matching
    them; results come back in the order of ``mixture``.

    Raises:
        ValueError: a ``reference``/``embedding`` list whose length differs from the mixtures'.
    """
    # the default is chosen per item by its rate: a mixed list must not run 8 kHz files
    # through the 16 kHz model (or the reverse); same-rate items still share batches
    rates = [_rate(m, sample_rate) for m in mixture]
    n = len(mixture)
    refs = list(reference) if isinstance(reference, (list, tuple)) else [reference] * n
    embs = list(embedding) if isinstance(embedding, (list, tuple)) else [embedding] * n
    if len(refs) != n or len(embs) != n:
        raise ValueError(f"reference/embedding: got a list whose length differs from the {n} mixtures")
    results: list = [None] * n
    for rate in dict.fromkeys(rates):
        picks = [i for i in range(n) if rates[i] == rate]
        extractor = load_model(model, device=device, sample_rate=rate, need_confidence=return_confidence)
        outs = extractor.extract(
            [mixture[i] for i in picks], [refs[i] for i in picks] if reference is not None else None,
            embedding=[embs[i] for i in picks] if embedding is not None else None,
            sample_rate=sample_rate, chunk_seconds=chunk_seconds, progress=progress,
            return_confidence=return_confidence)
        for i, out in zip(picks, outs):
            results[i] = out
    return results
