"""Streaming (block-online) extraction: ``usef.Stream`` for audio that arrives in pieces.

The bundled models are non-causal: every output frame looks at the whole input window. They
run online by processing overlapping *blocks*. All positions below are in samples at the
model's rate; ``H`` is the hop, ``F`` the cross-fade, ``A`` the lookahead and ``C`` the left
context, with ``latency = H + F + A``.

Block ``k`` (k = 0, 1, ...) owns the output samples ``[k H - F, (k + 1) H)`` (clipped at 0).
Its model input is the window ``[k H - F - C, (k + 1) H + A)`` (clipped at 0): ``C`` samples of
past input before what it owns and ``A`` samples of future input after it. The block runs as
soon as the input reaches the end of its window. Its estimate is first scaled to the level of
its own mixture window (:func:`usef.audio.match_level`, as the offline API does per chunk;
``level="model"`` extractors skip this), then faded in over its first ``F`` owned samples and
out over its last ``F`` with complementary raised-cosine (sin^2 / cos^2) weights, the ones
:mod:`usef.api` uses between chunks, so overlapping blocks sum to weight one. After block ``k``
every sample before ``(k + 1) H - F`` has all its contributions and is final.

**Latency.** At the model's rate, output sample ``n`` is returned by the :meth:`Stream.push`
call that brings the total input to ``n + latency_samples`` samples or more, where
``latency_samples = round(latency * rate)``; this is a hard bound (the worst sample, the first
one a block owns, waits exactly that long) and it is never returned earlier than the block
whose window covers it has run. Every sample sees at least ``A`` samples of future input in
every block that contributes to it (the least, ``A``, only where that block's weight fades to
zero). When the input rate differs from the model's, the input and output pass through soxr
streaming resamplers (:class:`soxr.ResampleStream`; at the default quality ``"HQ"`` the same
filter as the offline :func:`usef.audio.resample`, so the samples are identical). Each holds
output back, which comes on top of the bound: soxr works in internal blocks. With 37-sample
pushes one resampler held back at worst 80-180 ms at ``"HQ"`` (8 <-> 11.025, 16, 48 kHz), 40-60
ms at ``"LQ"``, under 3 ms at ``"QQ"`` (cubic interpolation, audibly worse); a whole stream
(both directions, 8 kHz model, 11.025-48 kHz input, latency 0.4 s) returned samples at worst
0.13-0.21 s after the bound at ``"HQ"``.
For the lowest latency, stream at the model's rate (8 or 16 kHz for the bundled models).

**Determinism.** The block schedule depends only on the total input, never on how it was cut
into pushes, so any chunking gives the same output, equal to :func:`stream_offline` on the whole
recording. :meth:`Stream.flush` runs one last block that owns everything not yet final, with its
window ending at the end of the input.

**Memory and work** per push are bounded however long the stream runs: the input buffer keeps
only the current window (``C + F + H + A`` samples plus the pushed chunk until it is used), the
output buffer only the fade-out of the last block (``F`` samples), and each block is one forward
pass over at most ``C + F + H + A`` samples (a push runs the blocks its chunk completes: one per
``H`` samples pushed). The condition (reference, enrollment or embedding)
is prepared once.

The schedule (:class:`StreamSchedule`, :func:`make_schedule`) and the block core live in
:mod:`usef.stream_blocks`; this module re-exports them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import soxr
import torch

from usef import api, audio
from usef.stream_blocks import (  # noqa: F401 (the two fractions are only re-exported, for callers)
    DEFAULT_CONTEXT,
    DEFAULT_FADE_FRACTION,
    DEFAULT_HOP_FRACTION,
    DEFAULT_LATENCY,
    StreamSchedule,
    _Blocks,
    _mono_float32,
    make_schedule,
)

logger = logging.getLogger(__name__)

__all__ = ["Stream", "StreamSchedule", "stream_offline"]

DEFAULT_RESAMPLE_QUALITY = "HQ"  # as usef.audio.resample: streamed and offline samples are identical
RESAMPLE_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")


class Stream:
    """Extract a target talker from audio that arrives in chunks, with a bounded latency.

    >>> import numpy as np, usef
    >>> extractor = usef.load_model("default", sample_rate=8000)
    >>> rng = np.random.default_rng(0)
    >>> stream = usef.Stream(extractor, rng.standard_normal(16000), latency=0.5, sample_rate=8000)
    >>> parts = [stream.push(rng.standard_normal(800)) for _ in range(20)]   # 2 s, in 0.1 s chunks
    >>> parts.append(stream.flush())
    >>> sum(p.shape[0] for p in parts)
    16000

    ``push(chunk)`` returns the output samples that became final (possibly none); ``flush()``
    returns the rest when the input has ended. Together they return exactly as many samples as
    were pushed, at the input's rate, and the same samples however the input was cut
    (:func:`stream_offline` computes them in one call). The latency is a hard bound: at the
    model's rate output sample ``n`` is returned by the push that brings the total input to
    ``n + round(latency * rate)`` samples (other rates add :attr:`resampler_delay`). How it works,
    and what hop, crossfade and context do: module :mod:`usef.stream`.

    Args:
        extractor: a :class:`usef.Extractor` (``usef.load_model(...)``) or a model name/folder.
        reference: a recording of the target talker (path, array or tensor), or an
            :class:`usef.Enrollment`; encoded once, here.
        latency: seconds; the hard latency bound (``hop + crossfade + lookahead``).
        sample_rate: rate of the pushed audio (default: the model's). Output comes at this rate.
        reference_sample_rate: rate of an array reference (default ``sample_rate``).
        embedding: a speaker vector instead of a reference, for embedding models.
        hop, crossfade, context: the block schedule in seconds (:func:`make_schedule`).
        resample_quality: soxr quality of the two resamplers when ``sample_rate`` differs from
            the model's: ``"HQ"`` (default, as offline) holds output back up to ~0.2 s beyond
            the latency, ``"QQ"`` a few ms (see the module docstring).
        shifts: frame-grid offsets averaged per block (:meth:`usef.Extractor`'s ``shifts``).
            Default 1, not the model card's offline choice: each costs one more pass per block,
            and at 0.25 s latency one pass already takes about 0.6 of real time on one thread.

    Shape:
        each chunk ``(T,)`` or channels-first ``(C, T)`` (averaged to mono), float or signed
        integer PCM -> ``(T_out,)`` float32 at ``sample_rate``.

    Raises:
        ValueError: a bad reference, rate or schedule (at construction), a bad chunk (in push).
        RuntimeError: ``push``/``flush`` after ``flush``.
    """

    def __init__(
        self,
        extractor: Any,
        reference: Any = None,
        *,
        latency: float = DEFAULT_LATENCY,
        sample_rate: int | None = None,
        reference_sample_rate: int | None = None,
        embedding: Any = None,
        hop: float | None = None,
        crossfade: float | None = None,
        context: float = DEFAULT_CONTEXT,
        resample_quality: str = DEFAULT_RESAMPLE_QUALITY,
        shifts: int = 1,
    ) -> None:
        if resample_quality not in RESAMPLE_QUALITIES:
            raise ValueError(f"resample_quality: must be one of {RESAMPLE_QUALITIES}, got {resample_quality!r}")
        if not isinstance(extractor, api.Extractor):
            extractor = api.load_model(extractor)
        self.extractor = extractor
        self.shifts = api.check_shifts(shifts, extractor.model)
        self.model_rate = extractor.sample_rate
        self.sample_rate = api.check_sample_rate(sample_rate) if sample_rate is not None else self.model_rate
        if reference_sample_rate is not None:
            api.check_sample_rate(reference_sample_rate, "reference_sample_rate")
        self.schedule = make_schedule(self.model_rate, latency, hop=hop, crossfade=crossfade, context=context)
        self.latency = float(latency)
        with torch.inference_mode():
            ref, emb = extractor._condition_input(reference, embedding, reference_sample_rate or self.sample_rate)
            self._condition = extractor._condition([ref], [emb])
        self._core = _Blocks(self._forward, self.schedule)
        resampled = self.sample_rate != self.model_rate
        # soxr's streaming and one-shot resamplers give identical samples: stream_offline matches
        self._to_model = soxr.ResampleStream(self.sample_rate, self.model_rate, 1, dtype="float32",
                                             quality=resample_quality) if resampled else None
        self._from_model = soxr.ResampleStream(self.model_rate, self.sample_rate, 1, dtype="float32",
                                               quality=resample_quality) if resampled else None
        self.pushed = 0  # input samples received, at sample_rate
        self.returned = 0  # output samples returned, at sample_rate
        self.closed = False

    def __repr__(self) -> str:
        s, r = self.schedule, self.model_rate
        return (f"Stream(model={self.extractor.name!r}, sample_rate={self.sample_rate}, latency={self.latency:g} s, "
                f"hop={s.hop / r:g} s, crossfade={s.fade / r:g} s, lookahead={s.lookahead / r:g} s, "
                f"context={s.context / r:g} s)")

    @property
    def lookahead(self) -> float:
        """Seconds of future input every block sees beyond what it owns."""
        return self.schedule.lookahead / self.model_rate

    @property
    def latency_samples(self) -> int:
        """The latency bound in samples at the model's rate."""
        return self.schedule.latency

    @property
    def resampler_delay(self) -> float:
        """Seconds the two resamplers currently hold back (0 at the model's rate); comes on top of
        the latency bound."""
        if self._to_model is None:
            return 0.0
        return self._to_model.delay() / self.model_rate + self._from_model.delay() / self.sample_rate

    @property
    def buffered_samples(self) -> int:
        """Samples (model rate) held in the input and output buffers: bounded by the schedule."""
        return int(self._core.buffer.shape[0] + self._core.pending.shape[0])

    def _forward(self, window: np.ndarray) -> np.ndarray:
        # one block through the extractor's own forward (short-window padding, level matching)
        with torch.inference_mode():
            out = self.extractor._forward(window[None, :], self._condition, shifts=self.shifts)[0]
        if not np.isfinite(out).all():
            logger.warning("%s produced NaN/Inf samples; replacing them with 0", self.extractor.name)
            out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
        return out

    def _out(self, model_rate_samples: np.ndarray, last: bool) -> np.ndarray:
        out = model_rate_samples
        if self._from_model is not None:
            out = self._from_model.resample_chunk(model_rate_samples, last=last).astype(np.float32, copy=False)
        # never return more samples than were pushed (rounding of the two resamplers)
        out = out[: max(0, self.pushed - self.returned)]
        if last and self.returned + out.shape[0] < self.pushed:
            out = np.concatenate([out, np.zeros(self.pushed - self.returned - out.shape[0], np.float32)])
        self.returned += out.shape[0]
        return out

    def push(self, chunk: Any) -> np.ndarray:
        """Feed the next samples; return the output samples that became final (maybe none).

        Shape:
            chunk ``(T,)`` or ``(C, T)`` at ``sample_rate`` -> ``(T_out,)`` float32.
        """
        if self.closed:
            raise RuntimeError("push: the stream was flushed; start a new Stream")
        x = _mono_float32(chunk)
        self.pushed += x.shape[0]
        if self._to_model is not None:
            x = self._to_model.resample_chunk(x).astype(np.float32, copy=False)
        return self._out(self._core.push(x), last=False)

    def flush(self) -> np.ndarray:
        """End the input; return every output sample not yet returned.

        Shape:
            -> ``(T_out,)`` float32; all pushes and the flush return ``sum(T_in)`` samples.
        """
        if self.closed:
            raise RuntimeError("flush: the stream was already flushed")
        self.closed = True
        head = np.zeros(0, np.float32)
        if self._to_model is not None:
            tail = self._to_model.resample_chunk(np.zeros(0, np.float32), last=True).astype(np.float32, copy=False)
            head = self._core.push(tail)
        return self._out(np.concatenate([head, self._core.flush()]), last=True)


def stream_offline(
    extractor: Any,
    mixture: Any,
    reference: Any = None,
    *,
    latency: float = DEFAULT_LATENCY,
    sample_rate: int | None = None,
    reference_sample_rate: int | None = None,
    embedding: Any = None,
    hop: float | None = None,
    crossfade: float | None = None,
    context: float = DEFAULT_CONTEXT,
    resample_quality: str = DEFAULT_RESAMPLE_QUALITY,
    shifts: int = 1,
) -> np.ndarray:
    """What a :class:`Stream` returns for ``mixture``, computed on the whole array at once.

    The same block schedule, written independently of the stream's buffers: every block reads
    its window straight from the (resampled) mixture and is added into one output array. Use it
    to check a stream, or to hear what a latency costs without streaming. Arguments as
    :class:`Stream`.

    Shape:
        mixture ``(T,)`` or ``(C, T)`` at ``sample_rate`` -> ``(T,)`` float32.
    """
    if not isinstance(extractor, api.Extractor):
        extractor = api.load_model(extractor)
    rate = extractor.sample_rate
    in_rate = api.check_sample_rate(sample_rate) if sample_rate is not None else rate
    s = make_schedule(rate, latency, hop=hop, crossfade=crossfade, context=context)
    wave = _mono_float32(mixture, "mixture")
    length = wave.shape[0]
    if resample_quality not in RESAMPLE_QUALITIES:
        raise ValueError(f"resample_quality: must be one of {RESAMPLE_QUALITIES}, got {resample_quality!r}")

    def resample(x: np.ndarray, from_sr: int, to_sr: int) -> np.ndarray:
        if from_sr == to_sr:
            return x
        return soxr.resample(x, from_sr, to_sr, quality=resample_quality).astype(np.float32, copy=False)

    wave = resample(wave, in_rate, rate)
    total = wave.shape[0]
    out = np.zeros(total, np.float32)
    fade_in, fade_out = s.ramps()
    with torch.inference_mode():
        ref, emb = extractor._condition_input(reference, embedding, reference_sample_rate or in_rate)
        condition = extractor._condition([ref], [emb])
        k = 0
        while total > 0:
            own_start, own_end = s.owned(k)
            win_start, win_end = s.window_of(k)
            last = win_end > total  # the input ends inside this window: the flush block
            if last and own_start >= total:
                break
            win_end, own_end = min(win_end, total), (total if last else own_end)
            est = extractor._forward(wave[None, win_start:win_end], condition, shifts=shifts)[0]
            est = np.nan_to_num(est[own_start - win_start : own_end - win_start], nan=0.0, posinf=0.0, neginf=0.0)
            weights = np.ones_like(est)
            if k > 0 and s.fade:
                n = min(s.fade, est.shape[0])
                weights[:n] = fade_in[:n]
            if not last and s.fade:
                weights[-s.fade :] *= fade_out
            out[own_start:own_end] += est * weights
            if last:
                break
            k += 1
    return audio.fit_length(resample(out, rate, in_rate), length)
