"""Run a model exported by :mod:`usef.onnx_export` with onnxruntime and NumPy only (no torch).

``OnnxExtractor(directory).extract(mixture, reference, sample_rate=...)`` follows
:meth:`usef.Extractor.extract` step by step, so that both backends give the same estimate up to
float rounding: the same input checks, resampling (soxr) and reference cropping
(:mod:`usef.audio`, which imports no torch), the same 20 s chunks with 25 % raised-cosine
cross-fades, the same least-squares output level per chunk (:func:`usef.audio.match_level`) and
full-scale guard. The STFT/iSTFT and the per-item normalisation, which the graphs leave out, are
done here in NumPy as :class:`usef.modules.stft.STFTCodec` (``torch.stft`` / ``torch.istft``,
``center=True``, reflection padding, periodic Hann window, no normalisation) and
:func:`usef.models.base.normalise` do them.

This module must import nothing that imports torch: it is the deployment path for machines
without it (``tests/test_onnx.py`` runs it where ``import torch`` fails).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from usef import audio, audio_chunks

logger = logging.getLogger(__name__)

__all__ = ["OnnxExtractor", "istft", "normalise", "stft"]

# The same numbers as usef.api (which imports torch, so they cannot be imported from there;
# tests/test_onnx.py checks that they agree).
DEFAULT_CHUNK_SECONDS = 20.0
DEFAULT_OVERLAP = 0.25
DEFAULT_MAX_REFERENCE_SECONDS = 30.0
MIN_CHUNK_SECONDS = 0.5
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768_000
_FULL_SCALE = 0.999
# torch.stft(center=True) needs more than n_fft/2 samples; shorter mixtures are zero-padded
_MIN_MIXTURE_SECONDS = 0.1
# folder layout version written by usef.onnx_export (FORMAT there)
_FORMAT = 1
LEVELS = audio.LEVELS

AudioInput = Union[str, os.PathLike, np.ndarray]  # noqa: UP007 (runtime alias, py3.9)
Condition = dict[str, np.ndarray]


# -- signal processing (NumPy twins of STFTCodec and normalise) ------------------------------
def hann_window(win_length: int, n_fft: int) -> np.ndarray:
    """``torch.hann_window(win_length)`` (periodic), zero-padded to ``n_fft`` in the centre as
    ``torch.stft`` pads a shorter window. Shape: ``(n_fft,)`` float32."""
    n = np.arange(win_length, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    left = (n_fft - win_length) // 2
    return np.pad(window, (left, n_fft - win_length - left)).astype(np.float32)


def normalise(wave: np.ndarray, eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Divide each row by its (population) standard deviation plus ``eps``.

    Shape:
        ``(B, T)`` -> ``(B, T)`` and the scale ``(B, 1)``, float32.
    """
    wave = np.asarray(wave, dtype=np.float32)
    scale = (wave.std(axis=-1, keepdims=True, dtype=np.float64) + eps).astype(np.float32)
    return wave / scale, scale


def stft(wave: np.ndarray, n_fft: int, hop_length: int, window: np.ndarray) -> np.ndarray:
    """``torch.stft(center=True, pad_mode="reflect", onesided)`` stacked as real/imaginary.

    Shape:
        ``(B, T)`` -> ``(B, 2, T // hop_length + 1, n_fft // 2 + 1)`` float32; needs ``T > n_fft // 2``.
    """
    wave = np.asarray(wave, dtype=np.float32)
    edge = n_fft // 2
    if wave.shape[-1] <= edge:
        raise ValueError(f"stft: a signal of {wave.shape[-1]} samples is too short for n_fft={n_fft}")
    padded = np.pad(wave, ((0, 0), (edge, edge)), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop_length]
    # (B, T_frames, n_fft) -> (B, T_frames, F) complex
    spec = np.fft.rfft(frames * window, axis=-1)
    return np.stack((spec.real, spec.imag), axis=1).astype(np.float32)


def istft(spec: np.ndarray, length: int, n_fft: int, hop_length: int, window: np.ndarray) -> np.ndarray:
    """``torch.istft(center=True, length=length)``: windowed overlap-add divided by the summed
    squared window (the imaginary parts of the DC and Nyquist bins are ignored, as there).

    Shape:
        ``(B, 2, T_frames, F)`` -> ``(B, length)`` float32.
    """
    batch, _, count, _ = spec.shape
    frames = np.fft.irfft(spec[:, 0] + 1j * spec[:, 1], n=n_fft, axis=-1).astype(np.float32) * window
    # (B, T_frames, n_fft)
    total = n_fft + hop_length * (count - 1)
    out = np.zeros((batch, total), dtype=np.float32)
    envelope = np.zeros(total, dtype=np.float32)
    square = window * window
    if n_fft % hop_length == 0:
        # n_fft / hop strided adds instead of one add per frame
        parts = n_fft // hop_length
        pieces = frames.reshape(batch, count, parts, hop_length)
        tiled = np.broadcast_to(square.reshape(parts, hop_length), (count, parts, hop_length))
        for r in range(parts):
            start = r * hop_length
            out[:, start : start + count * hop_length] += pieces[:, :, r].reshape(batch, -1)
            envelope[start : start + count * hop_length] += tiled[:, r].reshape(-1)
    else:
        for t in range(count):
            out[:, t * hop_length : t * hop_length + n_fft] += frames[:, t]
            envelope[t * hop_length : t * hop_length + n_fft] += square
    start = n_fft // 2
    out, envelope = out[:, start : start + length], envelope[start : start + length]
    out = out / np.where(envelope > 1e-11, envelope, 1.0)
    if out.shape[-1] < length:
        out = np.pad(out, ((0, 0), (0, length - out.shape[-1])))
    return out


_chunk_starts = audio.chunk_starts  # one schedule for the torch API and this runtime


def _check_sample_rate(sample_rate: Any, argument: str = "sample_rate") -> int:
    # as usef.api.check_sample_rate
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, (int, float, np.integer, np.floating)):
        raise ValueError(f"{argument}: must be an integer number of Hz, got {sample_rate!r}")  # noqa: TRY004
    if not np.isfinite(sample_rate) or float(sample_rate) != int(sample_rate):
        raise ValueError(f"{argument}: must be a whole number of Hz, got {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE:
        raise ValueError(f"{argument}: {int(sample_rate)} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    return int(sample_rate)


def _check_chunk_seconds(chunk_seconds: Any) -> float:
    if isinstance(chunk_seconds, bool) or not isinstance(chunk_seconds, (int, float, np.integer, np.floating)):
        raise ValueError(f"chunk_seconds: must be a number of seconds, got {chunk_seconds!r}")  # noqa: TRY004
    if not np.isfinite(chunk_seconds) or chunk_seconds < MIN_CHUNK_SECONDS:
        raise ValueError(f"chunk_seconds: must be at least {MIN_CHUNK_SECONDS} s, got {chunk_seconds!r}")
    return float(chunk_seconds)


def is_onnx_dir(path: str | os.PathLike) -> bool:
    """True if ``path`` holds config.json, reference.onnx and extract.onnx."""
    path = Path(path)
    return all((path / name).is_file() for name in ("config.json", "reference.onnx", "extract.onnx"))


class OnnxExtractor:
    """An exported model (``usef export MODEL --onnx DIR``) run with onnxruntime, without torch.

    Args:
        directory: the folder written by :func:`usef.onnx_export.export_onnx`.
        threads: onnxruntime intra-op threads (default: onnxruntime's choice, all cores).
            On a busy machine 1 is often fastest.
        chunk_seconds, overlap, max_reference_seconds, level, shifts: as :class:`usef.Extractor`
            (``shifts`` default: the exported model card's choice, ``shifts`` in config.json).
        providers: onnxruntime execution providers (default: CPU).
        spinning: let idle onnxruntime threads spin (busy-wait) for work. Off by default, like
            ``OMP_WAIT_POLICY=PASSIVE`` for torch: on this project's busy 2-core machine, 2 threads
            ran a 10 s mixture 1.5x slower with spinning than without.

    Raises:
        FileNotFoundError: a file of the folder is missing.
        ValueError: config.json is unreadable or of another format; a bad setting.
        ImportError: onnxruntime is not installed.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        threads: int | None = None,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        overlap: float = DEFAULT_OVERLAP,
        max_reference_seconds: float = DEFAULT_MAX_REFERENCE_SECONDS,
        level: str = "auto",
        providers: Sequence[str] | None = None,
        spinning: bool = False,
        shifts: int | None = None,
    ) -> None:
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"model: ONNX folder not found: {directory}")
        for name in ("config.json", "reference.onnx", "extract.onnx"):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"model: {directory} lacks {name} (write it with `usef export MODEL --onnx "
                                        f"{directory}`)")
        try:
            config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"model: cannot read {directory / 'config.json'}: {exc}") from None
        if not isinstance(config, dict) or config.get("format") != _FORMAT:
            raise ValueError(f"model: {directory / 'config.json'} is not a usef ONNX config of format {_FORMAT}")
        rule = audio.resolve_level(level, config.get("output_level"))
        if not 0.0 <= overlap <= 0.5:
            raise ValueError(f"overlap: must be within [0, 0.5], got {overlap}")
        if not (np.isfinite(max_reference_seconds) and max_reference_seconds > 0):
            raise ValueError("max_reference_seconds must be positive")
        if threads is not None and threads < 1:
            raise ValueError(f"threads: must be >= 1, got {threads}")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError("the ONNX backend needs onnxruntime: pip install 'usef[onnx]'") from exc
        self.directory = directory
        self.config = config
        self.name = str(config.get("model") or directory.name)
        self.sample_rate = int(config["sample_rate"])
        self.n_fft, self.hop_length = int(config["n_fft"]), int(config["hop_length"])
        self.window = hann_window(int(config["win_length"]), self.n_fft)
        self.eps = float(config["normalise_eps"])
        self.min_reference_samples = round(float(config["min_reference_seconds"]) * self.sample_rate)
        self.chunk_seconds = _check_chunk_seconds(chunk_seconds)
        self.overlap = float(overlap)
        self.max_reference_seconds = float(max_reference_seconds)
        self.level = rule  # "mixture" | "calibrated" | "model", as usef.Extractor
        self.shifts = int(config.get("shifts") or 1) if shifts is None else shifts
        self._grid_offsets = audio_chunks.grid_offsets(self.hop_length, self.shifts)  # validates shifts
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1  # one graph node at a time: the graphs are a chain
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.log_severity_level = 3  # onnxruntime's own warnings go to stderr otherwise
        providers = list(providers or ["CPUExecutionProvider"])
        self._reference = ort.InferenceSession(str(directory / "reference.onnx"), options, providers=providers)
        self._extract = ort.InferenceSession(str(directory / "extract.onnx"), options, providers=providers)

    def __repr__(self) -> str:
        return f"OnnxExtractor(name={self.name!r}, sample_rate={self.sample_rate}, directory={str(self.directory)!r})"

    # -- inputs --------------------------------------------------------------------------
    def _load(self, x: Any, argument: str, sample_rate: int | None) -> tuple[np.ndarray, int]:
        if isinstance(x, (str, os.PathLike)):
            return audio.load_audio(x, argument)
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{argument}: expected a file path or NumPy array, got {type(x).__name__}")
        if sample_rate is None:
            raise ValueError(f"{argument}: sample_rate= is required for arrays")
        return x, _check_sample_rate(sample_rate)

    def _reference_wave(self, x: Any, sample_rate: int | None) -> np.ndarray:
        # as usef.Extractor._reference
        raw, rate = self._load(x, "reference", sample_rate)
        wave = audio.validate_waveform(raw, "reference", rate, self.min_reference_samples / self.sample_rate,
                                       allow_silence=False)
        wave = audio.most_energetic_window(wave, rate, self.max_reference_seconds)
        wave = audio.resample(wave, rate, self.sample_rate)
        if wave.shape[0] < self.min_reference_samples:  # resampling may round a sample or two away
            wave = audio.fit_length(wave, self.min_reference_samples)
        return wave

    # -- model calls ---------------------------------------------------------------------
    def prepare_condition(self, reference: AudioInput, sample_rate: int | None = None) -> Condition:
        """Keys and values of a reference, computed once and reusable for many mixtures.

        Shape:
            reference ``(T_ref,)`` or ``(C, T_ref)`` -> ``{"keys": (1, L, T_ref, E*F),
            "values": (1, L, T_ref, (C/L)*F)}`` (frames).
        """
        wave = self._reference_wave(reference, sample_rate)
        normalised, _ = normalise(wave[None], self.eps)
        keys, values = self._reference.run(None, {"reference_spec": stft(normalised, self.n_fft, self.hop_length,
                                                                         self.window)})
        return {"keys": keys, "values": values}

    def _forward(self, mixtures: np.ndarray, condition: Condition) -> np.ndarray:
        # as usef.Extractor._forward: (B, T_mix) at the model rate -> (B, T_mix)
        length = mixtures.shape[-1]
        minimum = int(_MIN_MIXTURE_SECONDS * self.sample_rate)
        if length < minimum:
            mixtures = np.pad(mixtures, ((0, 0), (0, minimum - length)))
        out = 0.0
        for offset in self._grid_offsets:  # as TargetSpeakerExtractor.extract(shifts=)
            out = out + self._one_grid(np.pad(mixtures, ((0, 0), (offset, 0))), condition)[:, offset:]
        out = (out / self.shifts)[:, :length].astype(np.float32)
        return audio.apply_level(out, mixtures[:, :length], self.level, self.sample_rate, _FULL_SCALE)

    def _one_grid(self, mixtures: np.ndarray, condition: Condition) -> np.ndarray:
        # (B, T_mix) -> (B, T_mix): normalise, STFT, the graph, iSTFT, scale back
        normalised, scale = normalise(mixtures, self.eps)
        spec = stft(normalised, self.n_fft, self.hop_length, self.window)
        estimate_spec = self._extract.run(None, {"mixture_spec": spec, "keys": condition["keys"],
                                                 "values": condition["values"]})[0]
        return istft(estimate_spec, mixtures.shape[-1], self.n_fft, self.hop_length, self.window) * scale

    def _chunked(self, wave: np.ndarray, condition: Condition, chunk: int,
                 progress: Callable[[int, int], None] | None) -> np.ndarray:
        # the torch API's chunking and cross-fade, one chunk per run: (T_mix,) -> (T_mix,)
        return audio.chunked_overlap_add(wave, chunk, self.overlap, lambda batch: self._forward(batch, condition),
                                         1, progress)

    def _finish(self, estimate: np.ndarray, rate: int, length: int, input_peak: float) -> np.ndarray:
        # as usef.Extractor._finish
        if not np.isfinite(estimate).all():
            logger.warning("%s produced NaN/Inf samples; replacing them with 0", self.name)
            estimate = np.nan_to_num(estimate, nan=0.0, posinf=0.0, neginf=0.0)
        estimate = audio.fit_length(audio.resample(estimate, self.sample_rate, rate), length)
        peak = float(np.max(np.abs(estimate))) if estimate.size else 0.0
        if self.level != "model" and input_peak <= 1.0 and peak > _FULL_SCALE:
            # resampling to the caller's rate can overshoot the model-rate peak guard slightly
            estimate = estimate * np.float32(_FULL_SCALE / peak)
        return estimate

    # -- public --------------------------------------------------------------------------
    def extract(
        self,
        mixture: AudioInput | Sequence[AudioInput],
        reference: AudioInput | Condition | None = None,
        *,
        embedding: Any = None,
        sample_rate: int | None = None,
        reference_sample_rate: int | None = None,
        chunk_seconds: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray | list[np.ndarray]:
        """Extract the reference talker from the mixture (see :meth:`usef.Extractor.extract`).

        Args:
            mixture: path or NumPy array, or a list of them (returns a list; one reference is
                shared by all and encoded once).
            reference: path or NumPy array of the target talker, or a condition from
                :meth:`prepare_condition`.
            embedding: not supported (USEF models are embedding-free); must be None.
            sample_rate: rate of array inputs; reference_sample_rate: of an array reference
                when it differs.
            chunk_seconds: chunk length for this call (>= 0.5 s).
            progress: ``progress(done, total)`` after each chunk of a long mixture.

        Shape:
            mixture ``(T_mix,)`` or ``(C, T_mix)``, reference ``(T_ref,)`` or ``(C, T_ref)`` ->
            ``(T_mix,)`` float32 at the mixture's rate.

        Raises:
            ValueError / FileNotFoundError / TypeError: bad input, naming the argument.
        """
        if embedding is not None:
            raise ValueError("embedding: the ONNX backend runs embedding-free USEF models; pass reference=")
        if type(reference).__name__ == "Enrollment":
            raise ValueError("reference: enrollments need the torch backend; pass a reference recording")
        if reference is None:
            raise ValueError("reference: a recording of the target speaker is required")
        if isinstance(reference, (list, tuple)):
            raise TypeError("reference: give one reference (shared by every mixture of a list)")
        if reference_sample_rate is not None:
            _check_sample_rate(reference_sample_rate, "reference_sample_rate")
        chunk = round((_check_chunk_seconds(chunk_seconds) if chunk_seconds is not None else self.chunk_seconds)
                      * self.sample_rate)
        single = not isinstance(mixture, (list, tuple))
        mixtures = [mixture] if single else list(mixture)
        waves = []
        for item in mixtures:  # every mixture is checked before any model work
            raw, rate = self._load(item, "mixture", sample_rate)
            wave = audio.validate_waveform(raw, "mixture", rate)
            waves.append((audio.resample(wave, rate, self.sample_rate), rate, wave.shape[0],
                          float(np.max(np.abs(wave)))))
        if isinstance(reference, dict):
            condition = reference
        else:
            condition = self.prepare_condition(reference, reference_sample_rate or sample_rate)
        results = []
        for wave, rate, length, peak in waves:
            if not np.any(wave):  # silence in, silence out: skip the model
                estimate = np.zeros_like(wave)
            elif wave.shape[0] > chunk:
                estimate = self._chunked(wave, condition, chunk, progress)
            else:
                estimate = self._forward(wave[None], condition)[0]
            results.append(self._finish(estimate, rate, length, peak))
        return results[0] if single else results
