"""The block schedule of :mod:`usef.stream` and its block-online core, at the model's rate.

:class:`StreamSchedule` (made by :func:`make_schedule` from seconds) says which output samples
block ``k`` owns, which input window it reads and when samples become final; ``_Blocks`` keeps
the bounded input and output buffers and runs one forward pass per block. What the hop,
cross-fade, lookahead and context mean, and the latency bound they give: the docstring of
:mod:`usef.stream`, whose :class:`~usef.stream.Stream` adds the condition, the resamplers and
the caller's chunks on top, and which re-exports the names here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

DEFAULT_LATENCY = 1.0
DEFAULT_CONTEXT = 2.0
# the hop takes a quarter of the latency and the cross-fade half a hop: 62.5 % of the latency is
# left as lookahead, which drives quality, while a block runs 4 times per latency (the compute)
DEFAULT_HOP_FRACTION = 0.25
DEFAULT_FADE_FRACTION = 0.5


@dataclass(frozen=True)
class StreamSchedule:
    """The block schedule, in samples at the model's rate (see :mod:`usef.stream`).

    Attributes:
        hop: ``H``, how far consecutive blocks move.
        fade: ``F``, the cross-fade between consecutive blocks (``0 <= F <= H``).
        lookahead: ``A``, future input every block sees after what it owns.
        context: ``C``, past input every block sees before what it owns.
    """

    hop: int
    fade: int
    lookahead: int
    context: int

    @property
    def latency(self) -> int:
        """The hard bound ``H + F + A`` (samples)."""
        return self.hop + self.fade + self.lookahead

    @property
    def window(self) -> int:
        """The longest model input ``C + F + H + A`` (samples)."""
        return self.context + self.fade + self.hop + self.lookahead

    def owned(self, k: int) -> tuple[int, int]:
        """Output samples ``[start, end)`` block ``k`` contributes to (before clipping at the input end)."""
        return max(0, k * self.hop - self.fade), (k + 1) * self.hop

    def window_of(self, k: int) -> tuple[int, int]:
        """Input samples ``[start, end)`` block ``k`` reads (before clipping at the input end)."""
        return max(0, k * self.hop - self.fade - self.context), (k + 1) * self.hop + self.lookahead

    def final_after(self, k: int) -> int:
        """Samples before this index are final once block ``k`` has run."""
        return (k + 1) * self.hop - self.fade

    def ramps(self) -> tuple[np.ndarray, np.ndarray]:
        """(fade_in, fade_out), each ``(F,)`` float32, summing to one sample by sample."""
        ramp = np.sin(0.5 * np.pi * (np.arange(self.fade) + 0.5) / max(self.fade, 1)) ** 2
        return ramp.astype(np.float32), (1.0 - ramp).astype(np.float32)


def make_schedule(
    sample_rate: int,
    latency: float = DEFAULT_LATENCY,
    *,
    hop: float | None = None,
    crossfade: float | None = None,
    context: float = DEFAULT_CONTEXT,
) -> StreamSchedule:
    """Turn seconds into a :class:`StreamSchedule` at ``sample_rate``.

    Args:
        sample_rate: the model's rate.
        latency: the hard latency bound (seconds), ``hop + crossfade + lookahead``.
        hop: seconds between blocks (default a quarter of the latency); smaller costs more
            compute (one forward pass per hop), larger leaves less lookahead.
        crossfade: seconds over which consecutive blocks are blended (default half a hop; at most
            the hop).
        context: seconds of past input each block sees before what it owns.

    Raises:
        ValueError: a non-finite or negative value, a hop below one sample, a cross-fade longer
            than the hop, or ``hop + crossfade`` longer than the latency.
    """
    values = {"latency": latency, "hop": hop, "crossfade": crossfade, "context": context}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not np.isfinite(value) or value < 0:
            raise ValueError(f"{name}: must be a non-negative number of seconds, got {value!r}")
    total = round(float(latency) * sample_rate)
    hop_n = round(float(hop) * sample_rate) if hop is not None else round(total * DEFAULT_HOP_FRACTION)
    if hop_n < 1:
        raise ValueError(f"latency/hop: the hop must be at least one sample at {sample_rate} Hz "
                         f"(latency {latency} s, hop {hop} s)")
    fade_n = round(float(crossfade) * sample_rate) if crossfade is not None else round(hop_n * DEFAULT_FADE_FRACTION)
    if fade_n > hop_n:
        raise ValueError(f"crossfade: must not exceed the hop ({hop_n / sample_rate:g} s), got {crossfade} s")
    lookahead = total - hop_n - fade_n
    if lookahead < 0:
        raise ValueError(f"latency: {latency} s is shorter than hop + crossfade "
                         f"({(hop_n + fade_n) / sample_rate:g} s); lower the hop or raise the latency")
    return StreamSchedule(hop_n, fade_n, lookahead, round(float(context) * sample_rate))


def _mono_float32(chunk: Any, argument: str = "chunk") -> np.ndarray:
    """A pushed chunk as mono float32 ``(T,)``; integer PCM is scaled to [-1, 1)."""
    if isinstance(chunk, torch.Tensor):
        chunk = chunk.detach().to("cpu")
        chunk = (chunk.float() if chunk.is_floating_point() else chunk).numpy()
    x = np.asarray(chunk)
    if x.ndim not in (1, 2):
        raise ValueError(f"{argument}: expected shape (T,) or channels-first (C, T), got {x.shape}")
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32, copy=False)
    elif np.issubdtype(x.dtype, np.signedinteger):
        x = (x.astype(np.float32) / float(2 ** (8 * x.dtype.itemsize - 1))).astype(np.float32)
    else:
        raise ValueError(f"{argument}: expected float or signed integer samples, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x.mean(axis=0, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{argument}: contains NaN or Inf values")
    return x


class _Blocks:
    """The block-online core at the model's rate: buffers, schedule, one forward pass per block."""

    def __init__(self, forward: Callable[[np.ndarray], np.ndarray], schedule: StreamSchedule) -> None:
        self.forward = forward  # (T,) model-rate mixture window -> (T,) level-matched estimate
        self.schedule = schedule
        self.fade_in, self.fade_out = schedule.ramps()
        self.total = 0  # model-rate input samples received
        self.buffer = np.zeros(0, np.float32)  # input [buffer_start, total)
        self.buffer_start = 0
        self.pending = np.zeros(0, np.float32)  # output [emitted, emitted + len), partial sums
        self.emitted = 0  # output samples already returned (final)
        self.next_block = 0

    def _run(self, k: int, end: int, last: bool) -> np.ndarray:
        """Run block ``k`` with its window (and what it owns) cut at ``end``; return what became final."""
        s = self.schedule
        own_start, own_end = s.owned(k)
        own_end = end if last else min(own_end, end)  # the flush block owns everything to the end
        win_start, _ = s.window_of(k)
        window = self.buffer[win_start - self.buffer_start : end - self.buffer_start]
        estimate = self.forward(window)[own_start - win_start : own_end - win_start].astype(np.float32, copy=True)
        if k > 0 and s.fade:
            n = min(s.fade, own_end - own_start)
            estimate[:n] *= self.fade_in[:n]
        if not last and s.fade:
            estimate[-s.fade :] *= self.fade_out
        # add into the pending output, which starts at `emitted` == own_start or earlier
        offset = own_start - self.emitted
        if offset < 0:
            raise AssertionError("block schedule out of step")  # a bug, never the caller's input
        needed = offset + estimate.shape[0]
        if self.pending.shape[0] < needed:
            self.pending = np.concatenate([self.pending, np.zeros(needed - self.pending.shape[0], np.float32)])
        self.pending[offset:needed] += estimate
        final = own_end if last else s.final_after(k)
        out, self.pending = self.pending[: final - self.emitted], self.pending[final - self.emitted :].copy()
        self.emitted = final
        return out

    def _trim(self) -> None:
        # keep only what the next block reads
        keep_from = self.schedule.window_of(self.next_block)[0]
        if keep_from > self.buffer_start:
            self.buffer = self.buffer[keep_from - self.buffer_start :].copy()
            self.buffer_start = keep_from

    def push(self, x: np.ndarray) -> np.ndarray:
        if x.size:
            self.buffer = np.concatenate([self.buffer, x])
            self.total += x.shape[0]
        outs = []
        while self.schedule.window_of(self.next_block)[1] <= self.total:
            outs.append(self._run(self.next_block, self.schedule.window_of(self.next_block)[1], last=False))
            self.next_block += 1
        self._trim()
        return np.concatenate(outs) if outs else np.zeros(0, np.float32)

    def flush(self) -> np.ndarray:
        if self.total <= self.emitted:  # nothing left, or only a fade-out past the end of the input
            out = np.zeros(0, np.float32)
        else:
            out = self._run(self.next_block, self.total, last=True)
            self.next_block += 1
        self.buffer, self.pending = np.zeros(0, np.float32), np.zeros(0, np.float32)
        self.buffer_start = self.total
        return out
