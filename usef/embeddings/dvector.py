"""Pre-computed speaker vectors (d-vectors) for the embedding twins, exact for any crop.

resemblyzer's utterance embedding is the L2-normalised mean of *partial* embeddings, each of a
1.6 s window. So a table caches, per utterance, the partials on a fixed grid, and the vector
of any crop ``[start, stop)`` is the normalised mean of the partials whose windows lie fully
inside it. A window's partial is computed from that window's samples alone (its own gain
normalisation, resampling and spectrogram), so a crop's vector never sees a sample outside
its windows: a reference cut from the target's own recording can be conditioned on without
leaking the target segment (pass that segment as ``forbid``).

Grid: window ``k`` of an utterance of ``n`` samples (at the table's ``sample_rate``) covers
``[k * H, min(k * H + W, n))`` with ``W = round(window_seconds * sample_rate)`` and
``H = round(hop_seconds * sample_rate)``, for ``k = 0 .. K - 1``,
``K = (n - W) // H + 1`` when ``n >= W``, else ``K = 1`` (one zero-padded window).

Table file (one ``.npz``, read with ``allow_pickle=False``; NumPy only, no model needed):

==================  ===============  ==========================================================
``partials``        float32 (P, E)   every utterance's partials, utterance after utterance
``offsets``         int64 (U + 1,)   utterance ``u``'s partials are ``partials[offsets[u]:offsets[u+1]]``
``lengths``         int64 (U,)       utterance lengths in samples at ``sample_rate``
``speakers``        str (U,)         speaker id of each utterance
``keys``            str (U,)         an id per utterance (manifest path, ``speaker/k`` for packs)
``sample_rate``     int64 scalar     rate of ``lengths`` and of the grid (the corpus rate)
``window_seconds``  float64 scalar   window length (1.6 for resemblyzer)
``hop_seconds``     float64 scalar   grid hop
``model``           str scalar       what made the partials (informative)
``version``         int64 scalar     format version (1)
==================  ===============  ==========================================================

Rows are matched to a :class:`~usef.data.pack.SpeakerCorpus` by ``(speaker, k)``: the
``k``-th row of a speaker is the corpus's ``load(speaker, k)``. Any row order works as long as
each speaker's utterances keep the corpus order (:func:`embed_corpus` writes them in the
corpus's sorted speaker order, which is also a pack's storage order). Vectors from any other
speaker-verification model plug in by writing the same arrays (:func:`write_dvector_table`);
``E`` is free, the model's ``embedding_dim`` must equal it.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]  # noqa: UP007 (runtime alias: keep Python 3.9)
FORMAT_VERSION = 1
DEFAULT_WINDOW_SECONDS = 1.6
DEFAULT_HOP_SECONDS = 0.4
EXTRA_HINT = 'pip install "usef[resemblyzer]"  (or: pip install "setuptools<81" resemblyzer)'

__all__ = ["DVectorTable", "ResemblyzerEmbedder", "WindowEmbedder", "embed_corpus", "grid_windows",
           "write_dvector_table"]


def _grid(length: int, window: int, hop: int) -> np.ndarray:
    count = (length - window) // hop + 1 if length >= window else 1
    starts = np.arange(count, dtype=np.int64) * hop
    return np.stack([starts, np.minimum(starts + window, length)], axis=1)


def grid_windows(length: int, sample_rate: int, window_seconds: float = DEFAULT_WINDOW_SECONDS,
                 hop_seconds: float = DEFAULT_HOP_SECONDS) -> np.ndarray:
    """Sample bounds ``[start, stop)`` of the grid windows of a ``length``-sample utterance.

    Shape:
        -> ``(K, 2)`` int64 (see the module docstring for ``K``).
    """
    window, hop = round(window_seconds * sample_rate), round(hop_seconds * sample_rate)
    if length < 1 or window < 1 or hop < 1:
        raise ValueError(f"length, window and hop must be >= 1 sample, got {length}, {window}, {hop}")
    return _grid(int(length), window, hop)


class WindowEmbedder:
    """Base of speaker embedders that embed fixed windows on a grid.

    Subclasses set ``sample_rate`` (their native rate) and ``embedding_dim`` and implement
    :meth:`embed_windows`. :meth:`partials` cuts a waveform on the grid, resamples each window
    on its own (soxr) and zero-pads it to the full window; ``embedder(wave, rate)`` is the
    normalised mean of the partials, i.e. the vector :class:`DVectorTable` gives for a crop
    that is the whole waveform.
    """

    sample_rate: int = 16000
    embedding_dim: int = 0
    name: str = "window-embedder"

    def __init__(self, window_seconds: float = DEFAULT_WINDOW_SECONDS, hop_seconds: float = DEFAULT_HOP_SECONDS):
        if window_seconds <= 0 or hop_seconds <= 0:
            raise ValueError(f"window_seconds and hop_seconds must be > 0, got {window_seconds}, {hop_seconds}")
        self.window_seconds, self.hop_seconds = float(window_seconds), float(hop_seconds)

    def embed_windows(self, windows: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Embed zero-padded windows at ``self.sample_rate``.

        Shape:
            windows ``(K, W)`` float32 and valid samples ``(K,)`` int64 -> ``(K, E)`` float32.
        """
        raise NotImplementedError

    def partials(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """Partial embeddings of ``wave`` on the grid (window ``k`` sees only its own samples).

        Shape:
            ``(T,)`` at ``sample_rate`` -> ``(K, E)`` float32.
        """
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0:
            raise ValueError(f"wave must be a non-empty 1-D waveform, got shape {wave.shape}")
        if not np.isfinite(wave).all():
            raise ValueError("wave contains NaN or Inf values")
        bounds = grid_windows(wave.size, sample_rate, self.window_seconds, self.hop_seconds)
        width = round(self.window_seconds * self.sample_rate)
        windows = np.zeros((len(bounds), width), dtype=np.float32)
        valid = np.zeros(len(bounds), dtype=np.int64)
        for i, (a, b) in enumerate(bounds):
            segment = wave[a:b]
            if sample_rate != self.sample_rate:
                import soxr  # lazy: reading a table must not need it

                segment = soxr.resample(segment, sample_rate, self.sample_rate)
            n = min(width, len(segment))
            windows[i, :n] = segment[:n]
            valid[i] = n
        out = np.asarray(self.embed_windows(windows, valid), dtype=np.float32)
        if out.shape != (len(bounds), self.embedding_dim):
            raise ValueError(f"embed_windows returned shape {out.shape}, expected ({len(bounds)}, {self.embedding_dim})")
        return out

    def __call__(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """The speaker vector of a whole waveform. Shape: ``(T,)`` -> ``(E,)`` float32."""
        return _normalised_mean(self.partials(wave, sample_rate))


def _normalised_mean(partials: np.ndarray) -> np.ndarray:
    mean = partials.astype(np.float64).mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


class ResemblyzerEmbedder(WindowEmbedder):
    """resemblyzer's GE2E voice encoder (256-d, 16 kHz) on 1.6 s grid windows.

    The network and weights are resemblyzer's (loaded with ``torch.load(weights_only=True)``);
    the input path is its own, made per window: each window is scaled to -30 dBFS RMS over its
    valid samples (resemblyzer normalises whole utterances to that level), then a 40-band
    power mel spectrogram (25 ms / 10 ms, as resemblyzer) of the window alone, its first
    ``window_seconds / 10 ms`` frames. resemblyzer's silence trimming is not applied: it would
    move samples across window borders.

    Raises:
        ImportError: resemblyzer is not installed (the message names the ``resemblyzer`` extra).
    """

    sample_rate = 16000
    embedding_dim = 256
    name = "resemblyzer"
    level_dbfs = -30.0

    def __init__(self, device: str = "cpu", window_seconds: float = DEFAULT_WINDOW_SECONDS,
                 hop_seconds: float = DEFAULT_HOP_SECONDS, batch_size: int = 64) -> None:
        super().__init__(window_seconds, hop_seconds)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device, self.batch_size, self._net = device, int(batch_size), None
        try:
            with warnings.catch_warnings():  # its webrtcvad import warns about pkg_resources
                warnings.simplefilter("ignore")
                import resemblyzer  # noqa: F401  (fail now, not at the first vector)
        except ImportError as exc:
            raise ImportError(f"ResemblyzerEmbedder needs the resemblyzer package: {EXTRA_HINT} ({exc})") from exc

    def _load(self) -> Any:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import librosa
            import resemblyzer
            from resemblyzer import hparams

        path = Path(resemblyzer.__file__).resolve().parent / "pretrained.pt"
        state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
        lstm = torch.nn.LSTM(hparams.mel_n_channels, hparams.model_hidden_size, hparams.model_num_layers,
                             batch_first=True)
        linear = torch.nn.Linear(hparams.model_hidden_size, hparams.model_embedding_size)
        lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        self._n_fft = n_fft = hparams.sampling_rate * hparams.mel_window_length // 1000
        self._hop = hparams.sampling_rate * hparams.mel_window_step // 1000
        mel = librosa.filters.mel(sr=hparams.sampling_rate, n_fft=n_fft, n_mels=hparams.mel_n_channels)
        self._mel = torch.from_numpy(np.asarray(mel, dtype=np.float32)).to(self.device)
        self._window = torch.hann_window(n_fft, periodic=True, device=self.device)  # librosa's "hann"
        self._net = (lstm.to(self.device).eval(), linear.to(self.device).eval())
        return self._net

    def embed_windows(self, windows: np.ndarray, valid: np.ndarray) -> np.ndarray:
        import torch

        lstm, linear = self._net or self._load()
        x = np.asarray(windows, dtype=np.float64)
        mask = np.arange(x.shape[1])[None, :] < np.asarray(valid)[:, None]
        rms = np.sqrt((x**2 * mask).sum(1) / np.maximum(mask.sum(1), 1))
        # digital silence stays silent instead of being blown up to -30 dBFS
        gain = np.where(rms > 1e-6, 10 ** (self.level_dbfs / 20) / np.maximum(rms, 1e-12), 1.0)
        x = (x * gain[:, None] * mask).astype(np.float32)
        frames = round(self.window_seconds * 1000 / 10)
        out = []
        with torch.inference_mode():
            for first in range(0, len(x), self.batch_size):
                batch = torch.from_numpy(x[first:first + self.batch_size]).to(self.device)
                spec = torch.stft(batch, self._n_fft, self._hop, self._n_fft, self._window, center=True,
                                  pad_mode="constant", return_complex=True).abs() ** 2
                # (K, F, frames + 1) power -> (K, frames, mels), librosa's melspectrogram
                mels = torch.einsum("mf,kft->ktm", self._mel, spec)[:, :frames]
                _, (hidden, _) = lstm(mels)
                raw = torch.relu(linear(hidden[-1]))
                out.append((raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)).cpu().numpy())
        return np.concatenate(out).astype(np.float32)


class DVectorTable:
    """Grid partials of every utterance of a corpus; crop vectors on demand (NumPy only).

    Build with :func:`embed_corpus` / :func:`write_dvector_table`, read with :meth:`load`.
    """

    def __init__(self, partials: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                 speakers: Sequence[str], keys: Sequence[str], sample_rate: int,
                 window_seconds: float = DEFAULT_WINDOW_SECONDS, hop_seconds: float = DEFAULT_HOP_SECONDS,
                 model: str = "") -> None:
        self.partials = np.ascontiguousarray(partials, dtype=np.float32)
        self.offsets, self.lengths = np.asarray(offsets, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
        self.speakers, self.keys = [str(s) for s in speakers], [str(k) for k in keys]
        self.sample_rate, self.model = int(sample_rate), str(model)
        self.window_seconds, self.hop_seconds = float(window_seconds), float(hop_seconds)
        n = len(self.lengths)
        if self.partials.ndim != 2 or not np.isfinite(self.partials).all():
            raise ValueError(f"partials must be a finite (P, E) array, got shape {self.partials.shape}")
        if len(self.speakers) != n or len(self.keys) != n or self.offsets.shape != (n + 1,):
            raise ValueError(f"speakers, keys ({n},) and offsets ({n + 1},) must match lengths ({n},); got "
                             f"{len(self.speakers)}, {len(self.keys)}, {self.offsets.shape}")
        if self.sample_rate <= 0 or (self.lengths < 1).any():
            raise ValueError("sample_rate and every length must be >= 1")
        self._window = round(self.window_seconds * self.sample_rate)
        self._hop = round(self.hop_seconds * self.sample_rate)
        if self._window < 1 or self._hop < 1:
            raise ValueError(f"window_seconds and hop_seconds must be >= 1 sample, got {window_seconds}, {hop_seconds}")
        counts = np.diff(self.offsets)
        expected = np.array([len(_grid(int(m), self._window, self._hop)) for m in self.lengths], dtype=np.int64)
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.partials) or not np.array_equal(counts, expected):
            bad = int(np.flatnonzero(counts != expected)[0]) if len(counts) and (counts != expected).any() else -1
            raise ValueError(f"offsets do not match the grid of lengths (first bad utterance {bad}): utterance u "
                             "needs (n - W) // H + 1 partials (1 when n < W) and offsets must run 0..P")
        self._rows: dict[str, list[int]] = {}
        for u, speaker in enumerate(self.speakers):
            self._rows.setdefault(speaker, []).append(u)

    # -- file --------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: PathLike) -> DVectorTable:
        """Read a table ``.npz`` (see the module docstring); ValueError naming a missing array."""
        with np.load(path, allow_pickle=False) as data:
            need = {"partials", "offsets", "lengths", "speakers", "keys", "sample_rate", "window_seconds",
                    "hop_seconds"}
            missing = need - set(data.files)
            if missing:
                raise ValueError(f"path {path} is not a d-vector table: missing arrays {sorted(missing)}")
            version = int(data["version"]) if "version" in data.files else FORMAT_VERSION
            if version > FORMAT_VERSION:
                raise ValueError(f"path {path} has table version {version}; this usef reads <= {FORMAT_VERSION}")
            return cls(data["partials"], data["offsets"], data["lengths"], data["speakers"], data["keys"],
                       int(data["sample_rate"]), float(data["window_seconds"]), float(data["hop_seconds"]),
                       str(data["model"]) if "model" in data.files else "")

    def save(self, path: PathLike) -> Path:
        if not str(path).endswith(".npz"):
            raise ValueError(f"path must end in .npz (numpy would append it), got {path}")
        np.savez(path, partials=self.partials, offsets=self.offsets, lengths=self.lengths,
                 speakers=np.array(self.speakers, dtype=str), keys=np.array(self.keys, dtype=str),
                 sample_rate=np.int64(self.sample_rate), window_seconds=np.float64(self.window_seconds),
                 hop_seconds=np.float64(self.hop_seconds), model=np.array(self.model),
                 version=np.int64(FORMAT_VERSION))
        return Path(path)

    # -- look-up -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def embedding_dim(self) -> int:
        return int(self.partials.shape[1])

    def index(self, speaker: str, k: int) -> int:
        """Row of utterance ``k`` of ``speaker`` (the corpus's ``load(speaker, k)``)."""
        rows = self._rows.get(speaker)
        if rows is None:
            raise KeyError(f"speaker {speaker!r} is not in this d-vector table")
        if not 0 <= k < len(rows):
            raise KeyError(f"speaker {speaker!r} has {len(rows)} utterances in this d-vector table, not {k + 1}")
        return rows[k]

    def check_corpus(self, corpus: Any) -> None:
        """Raise ValueError unless every speaker of ``corpus`` has as many rows as utterances."""
        for speaker in corpus.speakers:
            have, want = len(self._rows.get(speaker, ())), corpus.num_utterances(speaker)
            if have != want:
                raise ValueError(f"d-vector table: speaker {speaker!r} has {have} utterances in the table and {want} "
                                 "in the corpus; make the table from the same pack/manifests (tools/make_dvectors.py)")

    def check_length(self, utterance_index: int, length: int, sample_rate: int) -> None:
        """Raise ValueError if the corpus audio length disagrees with the table's."""
        mine = int(self.lengths[utterance_index])
        if abs(length * self.sample_rate - mine * sample_rate) > 2 * max(self.sample_rate, sample_rate):
            raise ValueError(f"d-vector table row {utterance_index} ({self.keys[utterance_index]}) is {mine} samples "
                             f"at {self.sample_rate} Hz but the corpus audio is {length} at {sample_rate} Hz: "
                             "the table was made from other audio")

    def windows(self, utterance_index: int) -> np.ndarray:
        """Grid windows ``(K, 2)`` of a row, in samples at ``self.sample_rate``."""
        return _grid(int(self.lengths[utterance_index]), self._window, self._hop)

    def select(self, utterance_index: int, start: int, stop: int, sample_rate: int,
               forbid: tuple[int, int] | None = None) -> np.ndarray:
        """Windows (indices into the row's partials) that make the vector of crop ``[start, stop)``.

        ``start``/``stop``/``forbid`` are samples at ``sample_rate``. All windows fully inside
        the crop; if there is none, the one overlapping the crop most (then: nearest centre).
        Windows overlapping ``forbid`` are never used.

        Raises:
            LookupError: every window overlaps ``forbid`` (or none is left to choose from).
        """
        if not 0 <= start < stop:
            raise ValueError(f"crop must have 0 <= start < stop, got [{start}, {stop})")
        bounds = self.windows(utterance_index) * int(sample_rate)  # common scale: exact integers
        ws, we = bounds[:, 0], bounds[:, 1]
        qs, qe = int(start) * self.sample_rate, int(stop) * self.sample_rate
        allowed = np.ones(len(bounds), dtype=bool)
        if forbid is not None:
            fa, fb = int(forbid[0]) * self.sample_rate, int(forbid[1]) * self.sample_rate
            allowed = (we <= fa) | (ws >= fb)
        inside = allowed & (ws >= qs) & (we <= qe)
        if inside.any():
            return np.flatnonzero(inside)
        if not allowed.any():
            raise LookupError(f"row {utterance_index}: every grid window overlaps the forbidden region {forbid}")
        overlap = np.clip(np.minimum(we, qe) - np.maximum(ws, qs), 0, None)
        distance = np.abs((ws + we) - (qs + qe))
        order = np.lexsort((np.arange(len(bounds)), distance, -overlap))
        return order[allowed[order]][:1]

    def vector(self, utterance_index: int, start: int, stop: int, sample_rate: int,
               forbid: tuple[int, int] | None = None) -> np.ndarray:
        """The d-vector of crop ``[start, stop)``: normalised mean of :meth:`select`'s partials.

        Shape:
            -> ``(E,)`` float32, unit norm.
        """
        chosen = self.select(utterance_index, start, stop, sample_rate, forbid)
        return _normalised_mean(self.partials[self.offsets[utterance_index] + chosen])


def write_dvector_table(path: PathLike, partials: Sequence[np.ndarray], speakers: Sequence[str],
                        lengths: Sequence[int], sample_rate: int, keys: Sequence[str] | None = None,
                        window_seconds: float = DEFAULT_WINDOW_SECONDS, hop_seconds: float = DEFAULT_HOP_SECONDS,
                        model: str = "") -> DVectorTable:
    """Write a table from per-utterance partials ``(K_u, E)`` (any speaker model) and return it.

    ``partials[u]`` must follow the grid of ``lengths[u]`` (see the module docstring).
    """
    if not partials:
        raise ValueError("partials must hold at least one utterance")
    counts = [len(p) for p in partials]
    keys = list(keys) if keys is not None else [f"{s}/{i}" for i, s in enumerate(speakers)]
    table = DVectorTable(np.concatenate([np.asarray(p, dtype=np.float32) for p in partials]),
                         np.concatenate([[0], np.cumsum(counts)]), lengths, speakers, keys, sample_rate,
                         window_seconds, hop_seconds, model)
    table.save(path)
    return table


def embed_corpus(corpus: Any, embedder: WindowEmbedder, keys: Sequence[str] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> DVectorTable:
    """Partials of every utterance of a :class:`~usef.data.pack.SpeakerCorpus` (in memory).

    Rows follow ``corpus.speakers`` (sorted) and each speaker's utterance order. ``keys``
    (default ``speaker/k``) are given in that order; ``progress(done, total)`` is called after
    each utterance.
    """
    rows = [(s, k) for s in corpus.speakers for k in range(corpus.num_utterances(s))]
    if keys is not None and len(keys) != len(rows):
        raise ValueError(f"keys has {len(keys)} entries for {len(rows)} utterances")
    partials, lengths = [], []
    for done, (speaker, k) in enumerate(rows, start=1):
        wave = corpus.load(speaker, k)
        partials.append(embedder.partials(wave, corpus.sample_rate))
        lengths.append(len(wave))
        if progress is not None:
            progress(done, len(rows))
    return DVectorTable(np.concatenate(partials), np.concatenate([[0], np.cumsum([len(p) for p in partials])]),
                        lengths, [s for s, _ in rows], list(keys) if keys is not None else [f"{s}/{k}" for s, k in rows],
                        corpus.sample_rate, embedder.window_seconds, embedder.hop_seconds, embedder.name)
