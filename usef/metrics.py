"""Separation quality metrics: pure functions, 1-D signals in, floats out.

Names follow asteroid / LibriMix reporting (``si_sdr``, ``si_sdr_imp``, ``sdr``,
``sdr_imp``, ``pesq``, ``stoi``) so that tables are comparable with published
numbers. Every function accepts NumPy arrays or torch tensors of shape ``(T,)``
and computes in float64.

PESQ and STOI come from ``pesq`` and ``pystoi`` (ordinary dependencies), BSS-eval SDR
from ``fast_bss_eval`` when installed, else from an equivalent NumPy implementation;
all are imported lazily.

Edge cases have one behaviour whatever is installed. Every dB value is computed in
float64 without a fixed epsilon (so it does not depend on the signals' level) and is
clamped to [-DB_LIMIT, DB_LIMIT]: a perfect (or scaled-perfect) estimate scores
+DB_LIMIT, a silent or DC-only estimate -DB_LIMIT (a failure, never a dropped item);
a silent target raises ``ValueError`` (the metric is undefined).
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DB_LIMIT = 100.0
SDR_FILTER_LENGTH = 512
_EXTRA_HINT = "reinstall usef (pesq and pystoi are dependencies): pip install usef"

__all__ = [
    "DB_LIMIT",
    "compute_metrics",
    "energy_ratio_db",
    "level_db",
    "pesq",
    "sdr",
    "sdr_imp",
    "si_sdr",
    "si_sdr_imp",
    "stoi",
    "summarize",
]


def _as_1d(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a float64 vector; torch tensors are detached and moved to CPU."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 2 and 1 in arr.shape:
        # (1, T) and (T, 1) are unambiguous single-channel signals
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D signal of shape (T,), got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite samples")
    return arr


def _pair(estimate: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    est = _as_1d(estimate, "estimate")
    tgt = _as_1d(target, "target")
    if est.shape != tgt.shape:
        raise ValueError(
            f"estimate and target must have the same length, got {est.shape[0]} and {tgt.shape[0]}"
        )
    return est, tgt


def _ratio_db(signal_energy: float, noise_energy: float) -> float:
    """10 log10(signal / noise) clamped to [-DB_LIMIT, DB_LIMIT]; 0/0 counts as a failure."""
    if signal_energy <= 0.0:
        return -DB_LIMIT
    if noise_energy <= 0.0:
        return DB_LIMIT
    return float(np.clip(10.0 * np.log10(signal_energy / noise_energy), -DB_LIMIT, DB_LIMIT))


def si_sdr(estimate: Any, target: Any, zero_mean: bool = True) -> float:
    """Scale-invariant SDR in dB (Le Roux et al., 2019).

    The target is rescaled by the least-squares gain onto the estimate; the
    residual is the distortion. No fixed epsilon: the value is the same at any
    signal level. A silent (or, with ``zero_mean``, DC-only) estimate gives
    ``-DB_LIMIT``, a perfect one ``+DB_LIMIT``; a silent target raises ValueError.

    Shape:
        estimate, target: (T,)
    """
    est, tgt = _pair(estimate, target)
    if zero_mean:
        est = est - est.mean()
        tgt = tgt - tgt.mean()
    tgt_energy = float(np.dot(tgt, tgt))
    if tgt_energy <= 0.0:
        raise ValueError("target is silent" + (" (or constant)" if zero_mean else "") + ": SI-SDR is undefined")
    alpha = np.dot(est, tgt) / tgt_energy
    projection = alpha * tgt
    residual = est - projection
    return _ratio_db(float(np.dot(projection, projection)), float(np.dot(residual, residual)))


def si_sdr_imp(estimate: Any, target: Any, mixture: Any) -> float:
    """SI-SDR improvement over the unprocessed mixture, in dB.

    Shape:
        estimate, target, mixture: (T,)
    """
    return si_sdr(estimate, target) - si_sdr(mixture, target)


def _sdr_fallback(
    estimate: np.ndarray, target: np.ndarray, filter_length: int = SDR_FILTER_LENGTH
) -> float:
    """BSS-eval SDR with a ``filter_length``-tap distortion filter, without fast_bss_eval.

    The allowed distortion is any FIR filter of the target; its optimal taps
    solve the Toeplitz normal equations ``R h = c`` (R: target autocorrelation,
    c: target/estimate cross-correlation), and ``h . c`` is then the energy of
    the projection. Both signals are unit-normalised first so the result does
    not depend on their levels.
    """
    est = estimate / np.linalg.norm(estimate)
    tgt = target / np.linalg.norm(target)
    n = tgt.shape[0]
    # linear (not circular) correlations: pad the FFT beyond n + filter_length
    n_fft = 1 << math.ceil(math.log2(n + filter_length - 1))
    tgt_f = np.fft.rfft(tgt, n=n_fft)
    est_f = np.fft.rfft(est, n=n_fft)
    autocorr = np.fft.irfft(np.abs(tgt_f) ** 2, n=n_fft)[:filter_length]
    xcorr = np.fft.irfft(np.conj(tgt_f) * est_f, n=n_fft)[:filter_length]
    try:
        from scipy.linalg import solve_toeplitz

        taps = solve_toeplitz(autocorr, xcorr)
    except ImportError:
        idx = np.abs(
            np.arange(filter_length)[:, None] - np.arange(filter_length)[None, :]
        )
        taps = np.linalg.solve(autocorr[idx], xcorr)
    coherence = float(np.clip(np.dot(taps, xcorr), 0.0, 1.0))
    # the residual's energy is 1 - coherence (unit-norm estimate); no epsilon, so the value
    # tracks fast_bss_eval / mir_eval up to float64 resolution (~130 dB) and then clamps
    return _ratio_db(coherence, 1.0 - coherence)


def sdr(estimate: Any, target: Any) -> float:
    """BSS-eval v4 SDR in dB with a 512-tap distortion filter (``fast_bss_eval``).

    Falls back to an equivalent NumPy implementation when fast_bss_eval is not
    installed, or when it cannot decide (it raises on perfect and scaled-perfect
    estimates). A silent estimate gives ``-DB_LIMIT``; a silent target raises.

    Shape:
        estimate, target: (T,)
    """
    est, tgt = _pair(estimate, target)
    if not np.any(tgt):
        raise ValueError("target is silent: SDR is undefined")
    if not np.any(est):
        return -DB_LIMIT
    try:
        import fast_bss_eval
    except ImportError:
        logger.debug("fast_bss_eval not importable; using the NumPy SDR fallback")
        return _sdr_fallback(est, tgt)
    try:
        # fast_bss_eval follows bss_eval's argument order: reference first, (C, T) arrays
        with np.errstate(divide="ignore"):  # a perfect estimate: handled below
            value = float(np.asarray(fast_bss_eval.sdr(tgt[None, :], est[None, :],
                                                       filter_length=SDR_FILTER_LENGTH)).reshape(-1)[0])
    except (ValueError, np.linalg.LinAlgError) as exc:
        logger.debug("fast_bss_eval failed (%s); using the NumPy SDR fallback", exc)
        return _sdr_fallback(est, tgt)
    if not math.isfinite(value):
        return _sdr_fallback(est, tgt)
    return float(np.clip(value, -DB_LIMIT, DB_LIMIT))


def sdr_imp(estimate: Any, target: Any, mixture: Any) -> float:
    """BSS-eval SDR improvement over the unprocessed mixture, in dB.

    Shape:
        estimate, target, mixture: (T,)
    """
    return sdr(estimate, target) - sdr(mixture, target)


def _metric_package(module: str, metric: str) -> Any:
    """Import the optional package behind ``metric``, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"usef.metrics.{metric} needs the {module!r} package; {_EXTRA_HINT}") from exc


def pesq(estimate: Any, target: Any, sample_rate: int) -> float:
    """PESQ (ITU-T P.862): narrow-band at 8 kHz, wide-band at 16 kHz.

    Other rates are resampled to 16 kHz with soxr and scored wide-band.
    Returns ``nan`` (with a warning) when PESQ finds no utterance, e.g. on silence.

    Shape:
        estimate, target: (T,)
    """
    est, tgt = _pair(estimate, target)
    pesq_lib = _metric_package("pesq", "pesq")
    sample_rate = int(sample_rate)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if not np.any(tgt) or not np.any(est):
        # pesq would divide by a zero peak before reporting "no utterance"
        logger.warning("PESQ of a silent signal is undefined; returning nan")
        return float("nan")
    if sample_rate == 8000:
        mode = "nb"
    else:
        mode = "wb"
        if sample_rate != 16000:
            import soxr

            est = soxr.resample(est, sample_rate, 16000)
            tgt = soxr.resample(tgt, sample_rate, 16000)
            sample_rate = 16000
    try:
        return float(pesq_lib.pesq(sample_rate, tgt, est, mode))
    except pesq_lib.NoUtterancesError:
        logger.warning("PESQ found no utterance in the target; returning nan")
        return float("nan")


def stoi(estimate: Any, target: Any, sample_rate: int) -> float:
    """Short-time objective intelligibility (pystoi, classic not extended).

    Shape:
        estimate, target: (T,)
    """
    est, tgt = _pair(estimate, target)
    pystoi = _metric_package("pystoi", "stoi")
    return float(pystoi.stoi(tgt, est, int(sample_rate), extended=False))


def energy_ratio_db(estimate: Any, reference: Any) -> float:
    """``10 log10(|estimate|^2 / |reference|^2)`` in dB, clamped to +-DB_LIMIT; nan when the
    reference is silent. For an estimate against its mixture: how much of the mixture it kept
    (silence, -DB_LIMIT, is the right answer when the target does not speak).

    Shape:
        estimate, reference: (T,)
    """
    est = np.asarray(estimate, dtype=np.float64).ravel()
    ref = np.asarray(reference, dtype=np.float64).ravel()
    ref_energy = float(np.dot(ref, ref))
    if ref_energy <= 0.0:
        return float("nan")
    return _ratio_db(float(np.dot(est, est)), ref_energy)


def level_db(estimate: Any, target: Any) -> float:
    """Level error ``20 log10(rms(estimate) / rms(target))`` in dB, clamped to +-DB_LIMIT
    (0 dB: the estimate is as loud as the target).

    Shape:
        estimate, target: (T,)
    """
    est, tgt = _pair(estimate, target)
    tgt_energy = float(np.dot(tgt, tgt))
    if tgt_energy <= 0.0:
        raise ValueError("target is silent: the level error is undefined")
    return _ratio_db(float(np.dot(est, est)), tgt_energy)


def _optional(name: str, fn, *args) -> float:
    """One metric that may be missing for one item (``nan``, logged) without costing the others."""
    try:
        return float(fn(*args))
    except Exception as exc:  # noqa: BLE001 - a metric library's failure is recorded, not fatal
        logger.warning("%s could not be computed (%s: %s); recorded as missing", name, type(exc).__name__, exc)
        return float("nan")


def compute_metrics(
    estimate: Any,
    target: Any,
    mixture: Any,
    sample_rate: int,
    interferer: Any | None = None,
    with_pesq: bool = True,
    with_stoi: bool = True,
) -> dict[str, Any]:
    """All per-item metrics in one dict (asteroid / LibriMix names).

    Keys: ``input_si_sdr, si_sdr, si_sdr_imp, sdr, sdr_imp, pesq, stoi, level_db,
    peak, mixture_peak``. ``pesq`` / ``stoi`` are ``nan`` when switched off or when
    they cannot be computed for this item (the SI-SDR values still count); so is
    ``sdr`` if BSS-eval fails. ``level_db`` is :func:`level_db`, ``peak`` and
    ``mixture_peak`` the largest absolute samples. With ``interferer`` (the sum
    of the other talkers) also ``si_sdr_interferer`` and ``confused``: True when the
    estimate is closer to the interferer than to the target.

    Shape:
        estimate, target, mixture, interferer: (T,)
    """
    est, tgt = _pair(estimate, target)
    mix = _as_1d(mixture, "mixture")
    if mix.shape != tgt.shape:
        raise ValueError(
            f"mixture and target must have the same length, got {mix.shape[0]} and {tgt.shape[0]}"
        )
    input_si_sdr = si_sdr(mix, tgt)
    out_si_sdr = si_sdr(est, tgt)
    input_sdr = _optional("SDR", sdr, mix, tgt)
    out_sdr = _optional("SDR", sdr, est, tgt)
    nan = float("nan")
    result: dict[str, Any] = {
        "input_si_sdr": input_si_sdr,
        "si_sdr": out_si_sdr,
        "si_sdr_imp": out_si_sdr - input_si_sdr,
        "sdr": out_sdr,
        "sdr_imp": out_sdr - input_sdr,
        "pesq": _optional("PESQ", pesq, est, tgt, sample_rate) if with_pesq else nan,
        "stoi": _optional("STOI", stoi, est, tgt, sample_rate) if with_stoi else nan,
        "level_db": level_db(est, tgt),
        "peak": float(np.max(np.abs(est))),
        "mixture_peak": float(np.max(np.abs(mix))),
    }
    if interferer is not None:
        itf = _as_1d(interferer, "interferer")
        if itf.shape != tgt.shape:
            raise ValueError(
                f"interferer and target must have the same length, got {itf.shape[0]} and {tgt.shape[0]}"
            )
        result["si_sdr_interferer"] = si_sdr(est, itf)
        result["confused"] = bool(result["si_sdr_interferer"] > out_si_sdr)
    return result


def summarize(values: Sequence[float], seed: int = 0) -> dict[str, float]:
    """Mean, median, sample std and a 95 % confidence interval of the mean.

    The interval is the Student-t interval ``mean +- t(0.975, n-1) * std / sqrt(n)``
    via scipy; without scipy the normal approximation (z = 1.96) is used. Non-finite
    values (e.g. a PESQ of ``nan``) are left out and ``n`` counts what remains.
    With fewer than two values std and the interval are ``nan``.
    ``seed`` is accepted for API stability (a bootstrap would need it); the
    analytic interval is deterministic and does not use it.
    """
    del seed  # the t-interval is analytic
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    nan = float("nan")
    if n == 0:
        return {
            "mean": nan,
            "median": nan,
            "std": nan,
            "n": 0,
            "ci95_low": nan,
            "ci95_high": nan,
        }
    mean = float(arr.mean())
    median = float(np.median(arr))
    if n < 2:
        return {
            "mean": mean,
            "median": median,
            "std": nan,
            "n": n,
            "ci95_low": nan,
            "ci95_high": nan,
        }
    std = float(arr.std(ddof=1))
    try:
        from scipy.stats import t as student_t

        critical = float(student_t.ppf(0.975, n - 1))
    except ImportError:
        critical = 1.959963984540054
    half = critical * std / math.sqrt(n)
    return {
        "mean": mean,
        "median": median,
        "std": std,
        "n": n,
        "ci95_low": mean - half,
        "ci95_high": mean + half,
    }
