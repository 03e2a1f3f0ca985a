"""What callers of :mod:`usef.api` may pass in, and the checks on it.

Paths, NumPy arrays and tensors become one raw array and its rate (:func:`_coerce`); sample
rates and chunk lengths are checked here (:func:`check_sample_rate`, :func:`check_chunk_seconds`)
with the limits they are checked against. Kept apart from :mod:`usef.api` so that module holds the
:class:`~usef.api.Extractor` itself; :mod:`usef.api` re-exports every name here that callers use,
so ``usef.api.check_sample_rate`` and friends keep working.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch

from usef import audio

# a chunk must hold real context for the separator (and many chunks of a long file must not
# become millions of forward passes): below 0.5 s the call is refused
MIN_CHUNK_SECONDS = 0.5
# rates a recording can sensibly have; True (== 1) or 1 Hz would turn 4 s into hours of work
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768_000

AudioInput = Union[str, os.PathLike, np.ndarray, torch.Tensor]  # noqa: UP007 (runtime alias, py3.9)


@dataclass
class _Signal:
    wave: np.ndarray  # (T,) float32, mono, at `rate`
    rate: int
    length: int  # samples of the caller's input (the output length)
    tensor_like: torch.Tensor | None = None  # set when the caller passed a tensor
    peak: float = 0.0  # of the caller's input, before resampling


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def _coerce(x: Any, argument: str, sample_rate: int | None) -> tuple[np.ndarray, int, torch.Tensor | None]:
    """Path/array/tensor -> (raw array, rate, original tensor or None)."""
    if _is_path(x):
        wave, rate = audio.load_audio(x, argument)
        return wave, rate, None
    tensor = None
    if isinstance(x, torch.Tensor):
        tensor = x
        x = x.detach().to("cpu")
        x = (x.float() if x.is_floating_point() else x).numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{argument}: expected a file path, NumPy array or torch tensor, got {type(x).__name__}")
    if sample_rate is None:
        raise ValueError(f"{argument}: sample_rate= is required for arrays and tensors")
    return x, check_sample_rate(sample_rate), tensor


def check_sample_rate(sample_rate: Any, argument: str = "sample_rate") -> int:
    """``sample_rate`` as an int in [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] Hz; ValueError otherwise
    (booleans, NaN, fractions and absurd rates included)."""
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, (int, float, np.integer, np.floating)):
        raise ValueError(f"{argument}: must be an integer number of Hz, got {sample_rate!r}")  # noqa: TRY004 (one error type for every bad rate)
    if not np.isfinite(sample_rate) or float(sample_rate) != int(sample_rate):
        raise ValueError(f"{argument}: must be a whole number of Hz, got {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE:
        raise ValueError(f"{argument}: {int(sample_rate)} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    return int(sample_rate)


def check_chunk_seconds(chunk_seconds: Any, argument: str = "chunk_seconds") -> float:
    """``chunk_seconds`` as a float >= MIN_CHUNK_SECONDS; ValueError otherwise."""
    if isinstance(chunk_seconds, bool) or not isinstance(chunk_seconds, (int, float, np.integer, np.floating)):
        raise ValueError(f"{argument}: must be a number of seconds, got {chunk_seconds!r}")  # noqa: TRY004 (as above)
    if not np.isfinite(chunk_seconds) or chunk_seconds < MIN_CHUNK_SECONDS:
        raise ValueError(f"{argument}: must be at least {MIN_CHUNK_SECONDS} s, got {chunk_seconds!r}")
    return float(chunk_seconds)


def _parameter_device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
