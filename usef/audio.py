"""Audio input/output, resampling and input checks.

Every public function raises a ``ValueError`` whose message names the offending
argument (``mixture``, ``reference``, ...) so callers of :func:`usef.extract`
learn which input is wrong without reading a traceback.

Conventions:

* Waveforms are float32 NumPy arrays, 1-D ``(T,)`` or channels-first ``(C, T)``.
* Multi-channel audio is downmixed to mono by averaging the channels: the models
  are single-channel, and averaging keeps the level of a centred talker.

The output-level rules live in :mod:`usef.audio_level` and the chunked overlap-add in
:mod:`usef.audio_chunks`; both are re-exported here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import soxr

from usef.atomic_io import atomic_write
from usef.audio_chunks import chunk_starts, chunked_overlap_add
from usef.audio_level import (
    CALIBRATED_MAX_CORRECTION_DB,
    LEVELS,
    apply_level,
    bounded_match_level,
    limit_peak,
    match_level,
    resolve_level,
)

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]  # noqa: UP007 (runtime alias, py3.9)

__all__ = [
    "CALIBRATED_MAX_CORRECTION_DB",
    "LEVELS",
    "apply_level",
    "audio_info",
    "bounded_match_level",
    "chunk_starts",
    "chunked_overlap_add",
    "fit_length",
    "limit_peak",
    "load_audio",
    "match_level",
    "most_energetic_window",
    "resample",
    "resolve_level",
    "to_mono",
    "validate_waveform",
    "write_audio",
]


def _check_path(path: PathLike, argument: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{argument}: file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{argument}: expected an audio file, got a directory: {path}")
    return path


def audio_info(path: PathLike, argument: str = "mixture") -> tuple[int, int]:
    """Return ``(sample_rate, frames)`` of an audio file without decoding it.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not readable audio (message names ``argument``).
    """
    path = _check_path(path, argument)
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.SoundFileError) as exc:
        raise ValueError(f"{argument}: cannot read audio file {path}: {exc}") from None
    return int(info.samplerate), int(info.frames)


def load_audio(
    path: PathLike, argument: str = "mixture", *, mono: bool = True
) -> tuple[np.ndarray, int]:
    """Read an audio file (WAV, FLAC, OGG, MP3, ... anything libsndfile reads).

    Args:
        path: file to read.
        argument: name used in error messages (``"mixture"``, ``"reference"``).
        mono: downmix to one channel by averaging (default); otherwise return
            channels-first ``(C, T)``.

    Returns:
        ``(wave, sample_rate)`` with ``wave`` float32 in [-1, 1] for PCM files.

    Shape:
        wave: ``(T,)`` when ``mono`` else ``(C, T)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is empty, corrupt or not audio.
    """
    path = _check_path(path, argument)
    try:
        if mono:
            return _read_mono(path)
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.SoundFileError) as exc:
        raise ValueError(f"{argument}: cannot read audio file {path}: {exc}") from None
    return np.ascontiguousarray(data.T), int(sample_rate)  # soundfile gives (T, C)


_READ_BLOCK = 1 << 20  # frames per block when downmixing while reading


def _read_mono(path: Path) -> tuple[np.ndarray, int]:
    """Read and downmix block by block: a 1-hour 44.1 kHz stereo file then needs its mono
    copy (0.64 GB) instead of the whole (T, C) array plus a transposed copy (2.5 GB)."""
    with sf.SoundFile(str(path)) as handle:
        rate, frames = int(handle.samplerate), handle.frames
        if handle.channels == 1 or frames <= 0 or not handle.seekable():
            data = handle.read(dtype="float32", always_2d=True)
            return to_mono(np.ascontiguousarray(data.T)), rate
        out = np.empty(frames, dtype=np.float32)
        done = 0
        while done < frames:
            block = handle.read(min(_READ_BLOCK, frames - done), dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                break
            out[done : done + block.shape[0]] = block.mean(axis=1, dtype=np.float32)
            done += block.shape[0]
        return out[:done], rate


def to_mono(wave: np.ndarray) -> np.ndarray:
    """Average the channels of a channels-first waveform.

    Shape:
        wave: ``(T,)`` or ``(C, T)`` -> ``(T,)``.
    """
    if wave.ndim == 1:
        return wave
    if wave.shape[0] == 1:
        return wave[0]
    return wave.mean(axis=0, dtype=np.float32)


def write_audio(
    path: PathLike, wave: np.ndarray, sample_rate: int, *, float_wav: bool = False
) -> Path:
    """Write a WAV file atomically.

    The data goes to a temporary file in the destination folder, is fsynced and
    then renamed over ``path``, so a reader (or a resumed batch run) never sees a
    half-written file. For 16-bit PCM a signal whose peak exceeds full scale is scaled down to
    peak 0.999 (logged) rather than clipped: a level change is harmless, clipping distortion is not.

    Args:
        path: destination ``.wav`` file; parent folders are created.
        wave: float waveform.
        sample_rate: samples per second.
        float_wav: write 32-bit float WAV instead of 16-bit PCM.

    Shape:
        wave: ``(T,)`` or channels-first ``(C, T)``.
    """
    path = Path(path)
    wave = np.asarray(wave)
    if wave.ndim not in (1, 2):
        raise ValueError(f"wave: expected shape (T,) or (C, T), got {wave.shape}")
    if int(sample_rate) <= 0:
        raise ValueError(f"sample_rate: must be positive, got {sample_rate}")
    data = wave.T if wave.ndim == 2 else wave
    subtype = "FLOAT" if float_wav else "PCM_16"
    if not float_wav:
        peak = float(np.max(np.abs(data))) if data.size else 0.0
        if peak > 1.0:
            logger.warning("%s: peak %.2f exceeds full scale; scaled down by %.1f dB for 16-bit PCM",
                           path, peak, 20.0 * np.log10(peak / 0.999))
            data = data * (0.999 / peak)
    return atomic_write(path, lambda tmp: sf.write(tmp, data, int(sample_rate), format="WAV", subtype=subtype))


def resample(wave: np.ndarray, from_sr: int, to_sr: int) -> np.ndarray:
    """Resample with soxr (high quality).

    The output has ``round(T * to_sr / from_sr)`` samples (soxr's rounding);
    callers that need an exact length crop or pad afterwards.

    Shape:
        wave: ``(T,)`` or channels-first ``(C, T)`` -> same layout, new ``T``.
    """
    from_sr, to_sr = int(from_sr), int(to_sr)
    if from_sr <= 0 or to_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {from_sr} -> {to_sr}")
    wave = np.asarray(wave, dtype=np.float32)
    if from_sr == to_sr:
        return wave
    if wave.ndim == 1:
        return soxr.resample(wave, from_sr, to_sr, quality="HQ").astype(np.float32, copy=False)
    out = soxr.resample(np.ascontiguousarray(wave.T), from_sr, to_sr, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def _as_float32(x: np.ndarray, argument: str) -> np.ndarray:
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    if np.issubdtype(x.dtype, np.signedinteger):
        # integer PCM: scale full range to [-1, 1) like soundfile does
        scale = float(2 ** (8 * x.dtype.itemsize - 1))
        return (x.astype(np.float32) / scale).astype(np.float32, copy=False)
    raise ValueError(
        f"{argument}: expected a float or signed integer waveform, got dtype {x.dtype}"
    )


def validate_waveform(
    x: np.ndarray,
    argument: str,
    sample_rate: int | None = None,
    min_seconds: float | None = None,
    *,
    allow_silence: bool = True,
) -> np.ndarray:
    """Check a waveform and return it as mono float32.

    Accepted: 1-D ``(T,)`` or 2-D channels-first ``(C, T)`` (averaged to mono),
    float or signed integer PCM (scaled to [-1, 1)). Clipped audio is accepted.

    Args:
        x: the waveform (NumPy array).
        argument: name for error messages (``"mixture"``, ``"reference"``).
        sample_rate: its rate, needed only for ``min_seconds``.
        min_seconds: reject shorter signals (used for references).
        allow_silence: if False, an all-zero signal is rejected (references:
            a silent reference carries no speaker information).

    Shape:
        x: ``(T,)`` or ``(C, T)`` -> ``(T,)``.

    Raises:
        ValueError: naming ``argument``, for wrong ndim, a suspicious ``(T, C)``
            layout, empty input, NaN/Inf samples, too short or silent input.
    """
    x = np.asarray(x)
    if x.ndim not in (1, 2):
        raise ValueError(
            f"{argument}: expected a 1-D (T,) or channels-first (C, T) waveform, "
            f"got {x.ndim}-D array of shape {tuple(x.shape)}"
        )
    if x.size == 0:
        raise ValueError(f"{argument}: empty waveform (shape {tuple(x.shape)})")
    if x.ndim == 2 and x.shape[0] > x.shape[1]:
        raise ValueError(
            f"{argument}: shape {tuple(x.shape)} has more channels than samples; "
            f"pass channels-first (C, T), e.g. x.T"
        )
    x = _as_float32(x, argument)
    finite = np.isfinite(x)
    if not finite.all():
        bad = x[~finite]
        kind = "NaN" if np.isnan(bad).any() else "Inf"
        raise ValueError(
            f"{argument}: contains {bad.size} non-finite sample(s) ({kind}); "
            f"clean the signal (e.g. numpy.nan_to_num) before extraction"
        )
    x = to_mono(x)
    if min_seconds is not None:
        if sample_rate is None:
            raise ValueError(f"{argument}: sample_rate is needed to check the minimum length")
        needed = int(np.ceil(min_seconds * sample_rate))
        if x.shape[-1] < needed:
            raise ValueError(
                f"{argument}: too short ({x.shape[-1] / sample_rate:.3f} s); "
                f"at least {min_seconds:.3f} s is required"
            )
    if not allow_silence and not np.any(x):
        raise ValueError(f"{argument}: all samples are zero (silent); it carries no speaker")
    return x


def most_energetic_window(wave: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """Crop to the ``seconds``-long window with the largest energy (10 ms resolution).

    Shape:
        wave ``(T,)`` -> ``(min(T, round(seconds * rate)),)``
    """
    window = round(seconds * rate)
    if wave.shape[0] <= window:
        return wave
    hop = max(1, rate // 100)
    frames = wave[: wave.shape[0] // hop * hop].reshape(-1, hop)
    energy = np.einsum("ij,ij->i", frames, frames).astype(np.float64)
    span = max(1, window // hop)
    csum = np.concatenate(([0.0], np.cumsum(energy)))
    totals = csum[span:] - csum[:-span]
    start = min(int(np.argmax(totals)) * hop, wave.shape[0] - window)
    return wave[start : start + window]


def fit_length(wave: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad ``wave`` (T,) to exactly ``length`` samples."""
    if wave.shape[0] >= length:
        return wave[:length]  # a view: no copy of an hour-long signal
    return np.pad(wave, (0, length - wave.shape[0]))
