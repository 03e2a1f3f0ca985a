"""Speaker and noise corpora, and compact single-file packs of them.

:class:`SpeakerCorpus` maps speaker ids to utterances and :class:`NoiseCorpus`
holds categorised noise clips. A clip is either a file, read on first use with
soundfile (mono, resampled with soxr) and then cached, or an in-memory array (from
a pack or from :meth:`from_arrays`). Soundfile and soxr are imported only when a
file is read, so this module needs only NumPy.

A pack is one ``.npz`` written with :func:`numpy.savez_compressed` and read with
``allow_pickle=False``: a training machine that has only NumPy and torch can still
mix examples from it. Audio is stored as 8-bit mu-law codes (mu = 255, about 38 dB
SNR on speech), all clips concatenated into one ``uint8`` array and indexed by
offset/length arrays. Arrays in the file:

``audio`` uint8 (N,); ``speech_offsets``, ``speech_lengths`` int64 (U,);
``speech_speakers`` unicode (U,); ``noise_offsets``, ``noise_lengths`` int64 (M,);
``noise_categories`` unicode (M,); ``sample_rate``, ``mu``, ``version`` int64 scalars.

Each clip is peak-normalised to 0.9 before encoding (mu-law resolution is best near
full scale); absolute levels are therefore not kept, which is harmless because the
mixer draws its own gains.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, Union

import numpy as np

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]  # noqa: UP007 (runtime alias: keep Python 3.9)
PACK_VERSION = 1
MU = 255
_PEAK = 0.9
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")

__all__ = [
    "NoiseCorpus",
    "Pack",
    "SpeakerCorpus",
    "load_audio",
    "mulaw_decode",
    "mulaw_encode",
    "read_pack",
    "write_pack",
]


def mulaw_encode(x: np.ndarray, mu: int = MU) -> np.ndarray:
    """Encode a waveform in [-1, 1] to mu-law codes (values beyond are clipped).

    Shape:
        x: (T,) float -> (T,) uint8 (``mu`` + 1 levels, so mu <= 255).
    """
    if not 1 <= mu <= 255:
        raise ValueError(f"mu must be in [1, 255] to fit uint8 codes, got {mu}")
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.rint((y + 1.0) * (mu / 2.0)).astype(np.uint8)


def mulaw_decode(codes: np.ndarray, mu: int = MU) -> np.ndarray:
    """Decode mu-law codes made by :func:`mulaw_encode`.

    Shape:
        codes: (T,) uint8 -> (T,) float32 in [-1, 1].
    """
    if not 1 <= mu <= 255:
        raise ValueError(f"mu must be in [1, 255], got {mu}")
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        if codes.size and (codes.min() < 0 or codes.max() > 255):
            raise ValueError("codes must be integers in [0, 255]")
        codes = codes.astype(np.uint8)
    # a 256-entry table: decoding a whole pack is then one gather, not float64 maths
    y = np.arange(256, dtype=np.float64) * (2.0 / mu) - 1.0
    table = (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)
    return table[codes]


def load_audio(path: PathLike, sample_rate: int) -> np.ndarray:
    """Read a file as mono float32 at ``sample_rate`` (channels averaged, soxr resampling)."""
    import soundfile  # lazy: pack-based corpora must not need it

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    x = data.mean(axis=1)
    if rate != sample_rate:
        import soxr

        x = soxr.resample(x, rate, sample_rate)
    return np.ascontiguousarray(x, dtype=np.float32)


_C = TypeVar("_C", bound="_Clips")


class _Clips:
    """Labelled clips, each a file (loaded on first use, then cached) or an array."""

    _label_column = ""  # the manifest column with each clip's label
    _pack_fields = ("", "")  # the Pack attributes with the clips and their labels

    def __init__(self, labels: Sequence[str], sources: Sequence, sample_rate: int):
        if len(labels) != len(sources):
            raise ValueError("labels and sources must have the same length")
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = int(sample_rate)
        self._labels = [str(s) for s in labels]
        self._sources = list(sources)
        self._cache: dict[int, np.ndarray] = {}

    def _clip(self, i: int) -> np.ndarray:
        src = self._sources[i]
        if isinstance(src, np.ndarray):
            return src
        x = self._cache.get(i)
        if x is None:
            x = self._cache[i] = load_audio(src, self.sample_rate)
        return x

    def preload(self) -> None:
        """Load every file now, e.g. before forking DataLoader workers (shared pages)."""
        for i in range(len(self._sources)):
            self._clip(i)

    def _parts(self, keep: Iterable[int]) -> tuple[list, list]:
        keep = list(keep)
        return [self._labels[i] for i in keep], [self._cache.get(i, self._sources[i]) for i in keep]

    @classmethod
    def from_manifest(cls: type[_C], csv_path: PathLike, sample_rate: int,  # noqa: PYI019 (Self: Python 3.11)
                      root: PathLike | None = None) -> _C:
        """Manifest CSV with columns ``path`` and the label (``speaker`` or ``category``), more columns
        ignored; paths relative to ``root`` (default: the CSV's folder)."""
        return cls(*cls._read_manifest(csv_path, cls._label_column, root), sample_rate)

    @classmethod
    def from_pack(cls: type[_C], path: PathLike) -> _C:  # noqa: PYI019 (Self: Python 3.11)
        """The clips of one kind in a pack written by :func:`write_pack` (kept mu-law decoded in memory)."""
        clips_field, labels_field = cls._pack_fields
        pack = read_pack(path)
        clips = getattr(pack, clips_field)
        if not clips:
            raise ValueError(f"path {path}: the pack holds no {clips_field}")
        return cls(getattr(pack, labels_field), clips, pack.sample_rate)

    @staticmethod
    def _read_manifest(csv_path: PathLike, label_col: str, root: PathLike | None) -> tuple[list, list]:
        csv_path = Path(csv_path)
        base = Path(root) if root is not None else csv_path.parent
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"path", label_col} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"csv_path {csv_path} lacks columns {sorted(missing)}")
            rows = list(reader)
        if not rows:
            raise ValueError(f"csv_path {csv_path} has no rows")
        return [r[label_col] for r in rows], [base / r["path"] for r in rows]

    @classmethod
    def merge(cls: type[_C], *corpora: _C) -> _C:  # noqa: PYI019 (typing.Self needs Python 3.11)
        """One corpus with the clips of every one of ``corpora`` (of this class, one sample rate)."""
        if not corpora:
            raise ValueError("merge needs at least one corpus")
        rates = {c.sample_rate for c in corpora}
        if len(rates) != 1:
            raise ValueError(f"corpora to merge must share a sample rate, got {sorted(rates)}")
        labels: list = []
        sources: list = []
        for c in corpora:
            lab, src = c._parts(range(len(c._sources)))
            labels += lab
            sources += src
        return cls(labels, sources, rates.pop())


class SpeakerCorpus(_Clips):
    """Speaker id -> utterances; ``load(speaker, k)`` gives utterance ``k`` as float32 (T,)."""

    _label_column = "speaker"
    _pack_fields = ("speech", "speakers")

    def __init__(self, speakers: Sequence[str], sources: Sequence, sample_rate: int):
        super().__init__(speakers, sources, sample_rate)
        self._index: dict[str, list[int]] = {}
        for i, s in enumerate(self._labels):
            self._index.setdefault(s, []).append(i)
        self.speakers: list[str] = sorted(self._index)

    def __len__(self) -> int:
        return len(self._sources)

    def num_utterances(self, speaker: str) -> int:
        return len(self._utterances(speaker))

    def _utterances(self, speaker: str) -> list[int]:
        try:
            return self._index[speaker]
        except KeyError:
            raise KeyError(f"speaker {speaker!r} is not in this corpus") from None

    def load(self, speaker: str, k: int) -> np.ndarray:
        return self._clip(self._utterances(speaker)[k])

    @classmethod
    def from_arrays(cls, mapping: dict[str, Sequence[np.ndarray]], sample_rate: int) -> SpeakerCorpus:
        speakers = [s for s, clips in mapping.items() for _ in clips]
        arrays = [np.asarray(x, dtype=np.float32) for clips in mapping.values() for x in clips]
        return cls(speakers, arrays, sample_rate)

    @classmethod
    def from_folders(cls, root: PathLike, sample_rate: int) -> SpeakerCorpus:
        """One sub-folder per speaker (the folder name is the speaker id)."""
        files = sorted(p for p in Path(root).glob("*/*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            raise ValueError(f"root {root} has no audio files in speaker sub-folders")
        return cls([p.parent.name for p in files], files, sample_rate)

    def subset(self, speakers: Iterable[str]) -> SpeakerCorpus:
        wanted = set(speakers)
        unknown = wanted - set(self._index)
        if unknown:
            raise KeyError(f"speakers not in this corpus: {sorted(unknown)[:5]}")
        return SpeakerCorpus(*self._parts(i for i, s in enumerate(self._labels) if s in wanted), self.sample_rate)


class NoiseCorpus(_Clips):
    """Noise clips with a category each; ``load(i)`` gives clip ``i`` as float32 (T,)."""

    _label_column = "category"
    _pack_fields = ("noise", "noise_categories")

    def __len__(self) -> int:
        return len(self._sources)

    def category(self, i: int) -> str:
        return self._labels[i]

    @property
    def categories(self) -> list[str]:
        return sorted(set(self._labels))

    def load(self, i: int) -> np.ndarray:
        return self._clip(i)

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray], sample_rate: int,
                    categories: Sequence[str] | None = None) -> NoiseCorpus:
        cats = list(categories) if categories is not None else ["noise"] * len(arrays)
        return cls(cats, [np.asarray(x, dtype=np.float32) for x in arrays], sample_rate)

    def subset(self, categories: Iterable[str]) -> NoiseCorpus:
        wanted = set(categories)
        return NoiseCorpus(*self._parts(i for i, c in enumerate(self._labels) if c in wanted), self.sample_rate)


@dataclass
class Pack:
    """Decoded pack contents; ``speech[i]`` is an utterance of ``speakers[i]``."""

    sample_rate: int
    speakers: list[str]
    speech: list[np.ndarray]
    noise_categories: list[str]
    noise: list[np.ndarray]


def _normalise(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return x * (_PEAK / peak) if peak > 0 else x


def _select_speech(
    corpus: SpeakerCorpus, cap: int, exclude: set, rng: np.random.Generator
) -> tuple:
    """Per speaker, utterances tried in a seeded order and kept while they fit in ``cap``
    samples; kept ones are stored in corpus order."""
    speakers, clips = [], []
    for speaker in corpus.speakers:
        if speaker in exclude:
            continue
        kept, used = [], 0
        for k in rng.permutation(corpus.num_utterances(speaker)):
            n = len(corpus.load(speaker, int(k)))
            if used + n <= cap:
                kept.append(int(k))
                used += n
        if not kept:  # every utterance is longer than the cap: keep the head of the first
            kept = [0]
        for k in sorted(kept):
            speakers.append(speaker)
            clips.append(corpus.load(speaker, k)[:cap])
    return speakers, clips


def write_pack(
    path: PathLike,
    speech: SpeakerCorpus | None = None,
    noise: NoiseCorpus | None = None,
    *,
    max_seconds_per_speaker: float = 60.0,
    max_seconds_per_noise: float = 20.0,
    exclude_speakers: Iterable[str] = (),
    seed: int = 0,
) -> dict:
    """Write corpora into one mu-law ``.npz`` pack and return a summary dict.

    ``exclude_speakers`` keeps held-out (dev) speakers out of a training pack.
    Per speaker, utterances are taken in a seeded order while they fit in
    ``max_seconds_per_speaker``; noise files are cut to ``max_seconds_per_noise``.
    """
    if speech is None and noise is None:
        raise ValueError("write_pack needs at least one of speech= or noise=")
    if not str(path).endswith(".npz"):
        raise ValueError(f"path must end in .npz (numpy would append it), got {path}")
    rates = {c.sample_rate for c in (speech, noise) if c is not None}
    if len(rates) != 1:
        raise ValueError(f"speech and noise corpora must share a sample rate, got {sorted(rates)}")
    sample_rate = rates.pop()
    if max_seconds_per_speaker <= 0 or max_seconds_per_noise <= 0:
        raise ValueError("max_seconds_per_speaker and max_seconds_per_noise must be > 0")
    exclude = set(exclude_speakers)
    speakers: list = []
    clips: list = []
    if speech is not None:
        unknown = exclude - set(speech.speakers)
        if unknown:
            logger.warning("%d excluded speakers are not in the corpus", len(unknown))
        cap = round(max_seconds_per_speaker * sample_rate)
        speakers, clips = _select_speech(speech, cap, exclude, np.random.default_rng(seed))
    categories: list = []
    noise_clips: list = []
    if noise is not None:
        cap = round(max_seconds_per_noise * sample_rate)
        for i in range(len(noise)):
            categories.append(noise.category(i))
            noise_clips.append(noise.load(i)[:cap])
    all_clips = clips + noise_clips
    lengths = np.array([len(c) for c in all_clips], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    audio = np.empty(int(lengths.sum()), dtype=np.uint8)
    for clip, off, n in zip(all_clips, offsets, lengths):
        audio[off : off + n] = mulaw_encode(_normalise(np.asarray(clip, dtype=np.float64)))
    n_sp = len(clips)
    np.savez_compressed(
        path,
        audio=audio,
        speech_offsets=offsets[:n_sp],
        speech_lengths=lengths[:n_sp],
        speech_speakers=np.array(speakers, dtype=str) if speakers else np.array([], dtype="<U1"),
        noise_offsets=offsets[n_sp:],
        noise_lengths=lengths[n_sp:],
        noise_categories=(
            np.array(categories, dtype=str) if categories else np.array([], dtype="<U1")
        ),
        sample_rate=np.int64(sample_rate),
        mu=np.int64(MU),
        version=np.int64(PACK_VERSION),
    )
    summary = {
        "sample_rate": sample_rate,
        "speakers": len(set(speakers)),
        "utterances": n_sp,
        "speech_seconds": float(lengths[:n_sp].sum()) / sample_rate,
        "noise_files": len(noise_clips),
        "noise_seconds": float(lengths[n_sp:].sum()) / sample_rate,
    }
    logger.info("wrote pack %s: %s", path, summary)
    return summary


def read_pack(path: PathLike) -> Pack:
    """Read and decode a pack written by :func:`write_pack` (NumPy only, no pickle)."""
    with np.load(path, allow_pickle=False) as data:
        missing = {"audio", "speech_offsets", "noise_offsets", "sample_rate"} - set(data.files)
        if missing:
            raise ValueError(f"path {path} is not a usef pack: missing arrays {sorted(missing)}")
        version = int(data["version"])
        if version > PACK_VERSION:
            raise ValueError(f"path {path} has pack version {version}; this usef reads <= {PACK_VERSION}")
        # one decoded buffer with views into it: forked DataLoader workers share its pages
        audio = mulaw_decode(data["audio"], int(data["mu"]))
        speech = [audio[o : o + n] for o, n in zip(data["speech_offsets"], data["speech_lengths"])]
        noise = [audio[o : o + n] for o, n in zip(data["noise_offsets"], data["noise_lengths"])]
        return Pack(
            sample_rate=int(data["sample_rate"]),
            speakers=[str(s) for s in data["speech_speakers"]],
            speech=speech,
            noise_categories=[str(c) for c in data["noise_categories"]],
            noise=noise,
        )
