"""LibriMix read as a target speaker extraction set (each talker in turn is the target).

Standard layout: ``ROOT/wav{8k,16k}/{min,max}/metadata/mixture_{split}_{type}.csv``
with ``split`` in train-100, train-360, dev, test and ``type`` in mix_clean,
mix_both, mix_single; columns ``mixture_ID,mixture_path,source_1_path,
source_2_path[,noise_path],length``. Paths may be absolute or relative to ROOT;
absolute paths from the machine that generated the metadata are re-rooted at the
``wav8k``/``wav16k`` component when they do not exist here.

A mixture ID joins its sources' LibriSpeech utterance ids (``spk-chapter-utt``)
with ``_``; the speaker id is the first field of each. References:

* training (no enrollment list): a random other utterance of the target speaker
  (any source utterance of that speaker in the split except the mixture's own),
  drawn afresh from ``default_rng([seed, epoch, index])``;
* dev/test: a seeded enrollment list ``mixture_ID,target_index,reference_path`` is
  written once to a CSV and reused on every later run (WeSep/SpeakerBeam practice).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from torch.utils.data import Dataset

from usef.data.pack import load_audio

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]  # noqa: UP007 (runtime alias: keep Python 3.9)
SPLITS = ("train-100", "train-360", "dev", "test")
MIXTURE_TYPES = ("mix_clean", "mix_both", "mix_single")

__all__ = [
    "Enrollment",
    "Libri2MixTSE",
    "LibriMixRow",
    "make_enrollment_list",
    "metadata_path",
    "read_enrollment_list",
    "read_metadata",
    "write_enrollment_list",
]


@dataclass(frozen=True)
class LibriMixRow:
    """One metadata row; ``utterances[k]`` is the LibriSpeech id of ``sources[k]``."""

    mixture_id: str
    mixture_path: Path
    sources: tuple[Path, ...]
    noise_path: Path | None
    utterances: tuple[str, ...]

    @property
    def speakers(self) -> tuple[str, ...]:
        return tuple(u.split("-", 1)[0] for u in self.utterances)


@dataclass(frozen=True)
class Enrollment:
    """Reference for target ``target_index`` of ``mixture_id`` (path as stored in the CSV)."""

    mixture_id: str
    target_index: int
    reference_path: str


def metadata_path(root: PathLike, sample_rate: int = 8000, mode: str = "min",
                  split: str = "dev", mixture_type: str = "mix_clean") -> Path:
    """Path of a standard LibriMix metadata CSV under ``root``."""
    if sample_rate not in (8000, 16000):
        raise ValueError(f"sample_rate must be 8000 or 16000 for LibriMix, got {sample_rate}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if mixture_type not in MIXTURE_TYPES:
        raise ValueError(f"mixture_type must be one of {MIXTURE_TYPES}, got {mixture_type!r}")
    return Path(root) / f"wav{sample_rate // 1000}k" / mode / "metadata" / f"mixture_{split}_{mixture_type}.csv"


def _resolve(path: str, root: Path) -> Path:
    p = Path(path)
    if not p.is_absolute():
        return root / p
    if not p.exists():
        for i, part in enumerate(p.parts):
            if part in ("wav8k", "wav16k") and root.joinpath(*p.parts[i:]).exists():
                return root.joinpath(*p.parts[i:])
    return p


def read_metadata(csv_path: PathLike, root: PathLike | None = None) -> list[LibriMixRow]:
    """Read a LibriMix metadata CSV; ``root`` defaults to the folder holding ``wav8k``/``wav16k``."""
    csv_path = Path(csv_path)
    if root is None:
        parents = csv_path.resolve().parents
        if len(parents) < 4:
            raise ValueError(f"csv_path {csv_path} is not in ROOT/wavXk/MODE/metadata/; pass root=")
        root = parents[3]
    root = Path(root)
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        src_cols = sorted((c for c in fields if c.startswith("source_") and c.endswith("_path")),
                          key=lambda c: int(c.split("_")[1]))
        missing = {"mixture_ID", "mixture_path"} - set(fields)
        if missing or not src_cols:
            raise ValueError(f"csv_path {csv_path} lacks columns {sorted(missing) or ['source_1_path']}")
        rows = []
        for r in reader:
            parts = r["mixture_ID"].split("_")
            if len(parts) < len(src_cols) or any(p.count("-") < 1 for p in parts[: len(src_cols)]):
                raise ValueError(f"csv_path {csv_path}: mixture_ID {r['mixture_ID']!r} does not join "
                                 f"{len(src_cols)} LibriSpeech ids (spk-chapter-utt) with '_'")
            rows.append(LibriMixRow(
                mixture_id=r["mixture_ID"],
                mixture_path=_resolve(r["mixture_path"], root),
                sources=tuple(_resolve(r[c], root) for c in src_cols),
                noise_path=_resolve(r["noise_path"], root) if r.get("noise_path") else None,
                utterances=tuple(parts[: len(src_cols)]),
            ))
    if not rows:
        raise ValueError(f"csv_path {csv_path} has no rows")
    return rows


def _utterance_pool(rows: Sequence[LibriMixRow]) -> dict[str, list[tuple[str, Path]]]:
    """speaker -> [(utterance id, one file holding it)], sorted by utterance id."""
    seen: dict[str, Path] = {}
    for row in rows:
        for utt, path in zip(row.utterances, row.sources):
            seen.setdefault(utt, path)
    pool: dict[str, list[tuple[str, Path]]] = {}
    for utt in sorted(seen):
        pool.setdefault(utt.split("-", 1)[0], []).append((utt, seen[utt]))
    return pool


def _other_utterance(pool, utterance: str, rng: np.random.Generator) -> Path:
    speaker = utterance.split("-", 1)[0]
    choices = [p for u, p in pool.get(speaker, []) if u != utterance]
    if not choices:
        raise ValueError(f"speaker {speaker} has no utterance other than {utterance} to use as reference")
    return choices[int(rng.integers(len(choices)))]


def make_enrollment_list(rows: Sequence[LibriMixRow], seed: int) -> list[Enrollment]:
    """One seeded reference (another utterance of the target speaker) per (mixture, target)."""
    pool = _utterance_pool(rows)
    rng = np.random.default_rng(int(seed))
    return [Enrollment(row.mixture_id, k, str(_other_utterance(pool, utt, rng)))
            for row in rows for k, utt in enumerate(row.utterances)]


def write_enrollment_list(path: PathLike, entries: Sequence[Enrollment], root: PathLike | None = None) -> None:
    """Write ``mixture_ID,target_index,reference_path``; paths under ``root`` become relative."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("mixture_ID", "target_index", "reference_path"))
        for e in entries:
            ref = Path(e.reference_path)
            if root is not None and ref.is_absolute():
                try:
                    ref = ref.relative_to(Path(root))
                except ValueError:
                    pass  # outside root: keep absolute
            writer.writerow((e.mixture_id, e.target_index, ref.as_posix()))


def read_enrollment_list(path: PathLike) -> list[Enrollment]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"mixture_ID", "target_index", "reference_path"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"path {path} lacks columns {sorted(missing)}")
        return [Enrollment(r["mixture_ID"], int(r["target_index"]), r["reference_path"]) for r in reader]


class Libri2MixTSE(Dataset):
    """LibriMix mixtures with each talker as the target: item ``i`` is mixture
    ``i // n_src`` with target source ``i % n_src``.

    Items: ``mixture``, ``target``, ``interferer`` (sum of the other sources),
    ``noise`` (zeros without a noise column) float32 (T,); ``reference`` float32
    (T_ref,); ``speaker`` (LibriSpeech id), ``mixture_id`` str; ``target_index``
    and ``speaker_index`` (position in the split's sorted speaker list) int.
    ``segment_seconds`` crops a random window (training; zero-padded if shorter),
    ``None`` keeps whole utterances (evaluation). ``reference_seconds`` likewise
    crops references. Pass ``enrollment`` (a CSV path) for fixed dev/test references:
    the list is read if the file exists, else made with ``seed`` and written there.
    """

    def __init__(self, root: PathLike, split: str = "dev", sample_rate: int = 8000, mode: str = "min",
                 mixture_type: str = "mix_clean", segment_seconds: float | None = None,
                 reference_seconds: float | None = None, enrollment: PathLike | None = None,
                 seed: int = 0, epoch: int = 0, metadata: PathLike | None = None) -> None:
        self.root = Path(root).resolve()  # relative roots would be applied twice to listed paths
        self.sample_rate = int(sample_rate)
        csv_path = metadata or metadata_path(root, sample_rate, mode, split, mixture_type)
        self.rows = read_metadata(csv_path, self.root)
        self.n_src = len(self.rows[0].sources)
        self.speakers = sorted({s for row in self.rows for s in row.speakers})
        self._speaker_index = {s: i for i, s in enumerate(self.speakers)}
        for name, value in (("segment_seconds", segment_seconds), ("reference_seconds", reference_seconds)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        self.segment_seconds, self.reference_seconds = segment_seconds, reference_seconds
        self.seed, self.epoch = int(seed), int(epoch)
        self._pool = _utterance_pool(self.rows)
        self._enrollment: dict[tuple[str, int], Path] | None = None
        if enrollment is not None:
            self._enrollment = self._load_enrollment(Path(enrollment))

    def _load_enrollment(self, path: Path) -> dict[tuple[str, int], Path]:
        if path.exists():
            entries = read_enrollment_list(path)
        else:
            entries = make_enrollment_list(self.rows, self.seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_enrollment_list(path, entries, self.root)
            logger.info("wrote enrollment list %s (%d entries)", path, len(entries))
        table = {(e.mixture_id, e.target_index): _resolve(e.reference_path, self.root) for e in entries}
        missing = [(r.mixture_id, k) for r in self.rows for k in range(self.n_src) if (r.mixture_id, k) not in table]
        if missing:
            raise ValueError(f"enrollment {path} has no reference for {len(missing)} targets, e.g. {missing[0]}")
        return table

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows) * self.n_src

    def _crop(self, arrays: list[np.ndarray], seconds: float | None, rng, pad: bool = True) -> list[np.ndarray]:
        """Same random window of every array (all of one length), zero-padded if short and ``pad``."""
        if seconds is None:
            return arrays
        n = round(seconds * self.sample_rate)
        length = len(arrays[0])
        start = int(rng.integers(0, max(0, length - n) + 1))
        return [np.pad(a[start : start + n], (0, max(0, n - length) if pad else 0)) for a in arrays]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range [0, {len(self)})")
        row, k = self.rows[index // self.n_src], index % self.n_src
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        if self._enrollment is not None:
            ref_path = self._enrollment[(row.mixture_id, k)]
        else:
            ref_path = _other_utterance(self._pool, row.utterances[k], rng)
        sources = [load_audio(p, self.sample_rate) for p in row.sources]
        mixture = load_audio(row.mixture_path, self.sample_rate)
        length = min([len(mixture)] + [len(s) for s in sources])  # guard against off-by-one files
        noise = load_audio(row.noise_path, self.sample_rate) if row.noise_path else np.zeros(length, np.float32)
        arrays = [a[:length] for a in [mixture, noise] + sources]
        interferer = sum((s for j, s in enumerate(arrays[2:]) if j != k), np.zeros(length, np.float32))
        mixture, noise, target, interferer = self._crop(arrays[:2] + [arrays[2 + k], interferer],
                                                        self.segment_seconds, rng)
        reference = self._crop([load_audio(ref_path, self.sample_rate)], self.reference_seconds, rng, pad=False)[0]
        speaker = row.speakers[k]
        return {
            "mixture": mixture.astype(np.float32), "target": target.astype(np.float32),
            "reference": reference.astype(np.float32), "interferer": interferer.astype(np.float32),
            "noise": noise.astype(np.float32), "speaker": speaker,
            "speaker_index": self._speaker_index[speaker], "target_index": k, "mixture_id": row.mixture_id,
        }
