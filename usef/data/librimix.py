"""LibriMix metadata and enrollment lists; :class:`usef.data.librimix_dataset.Libri2MixTSE` reads
LibriMix as a target speaker extraction set (each talker in turn is the target).

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
* dev/test: a fixed enrollment list, read when it exists: either usef's own CSV
  ``mixture_ID,target_index,reference_path`` (made with a seed and written once, then
  reused on every later run) or SpeakerBeam's ``map_mixture2enrollment`` as published
  (lines ``mixture_ID target_utterance_ID sK/<mixture_ID>``; the enrollment is source
  ``K`` of the named mixture of the same split). The format is detected from the file;
  published Libri2Mix TSE results (SpeakerBeam, WeSep, ESPnet) use SpeakerBeam's lists.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]  # noqa: UP007 (runtime alias: keep Python 3.9)
SPLITS = ("train-100", "train-360", "dev", "test")
MIXTURE_TYPES = ("mix_clean", "mix_both", "mix_single")

ENROLLMENT_FORMATS = ("usef", "speakerbeam")

__all__ = [
    "ENROLLMENT_FORMATS",
    "Enrollment",
    "LibriMixRow",
    "enrollment_list_format",
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

    def all_paths(self) -> tuple[Path, ...]:
        """Every audio file the row needs: mixture, sources and, for noisy types, the noise.

        Data checks must use this rather than ``sources`` alone: a missing noise file
        otherwise surfaces only when training first decodes that row.
        """
        noise = (self.noise_path,) if self.noise_path is not None else ()
        return (self.mixture_path, *self.sources, *noise)


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


def enrollment_list_format(path: PathLike) -> str:
    """``"usef"`` or ``"speakerbeam"``: which enrollment list format the file at ``path`` holds.

    usef's list is a CSV (header ``mixture_ID,target_index,reference_path``); SpeakerBeam's
    ``map_mixture2enrollment`` has no header and three whitespace-separated fields per
    line. Any comma-separated file counts as usef's, so a CSV with other columns gets
    :func:`read_enrollment_list`'s error naming the missing ones. Raises ValueError for
    anything else (naming both formats).
    """
    with open(path, encoding="utf-8") as f:
        first = next((line.strip() for line in f if line.strip()), "")
    if "," in first:
        return "usef"
    if len(first.split()) == 3:
        return "speakerbeam"
    raise ValueError(
        f"enrollment list {path} is neither usef's CSV (header mixture_ID,target_index,reference_path) "
        f"nor SpeakerBeam's map_mixture2enrollment (lines 'mixture_ID target_utterance_ID sK/<mixture_ID>'); "
        f"its first line is {first[:120]!r}"
    )


def read_enrollment_list(path: PathLike, rows: Sequence[LibriMixRow] | None = None) -> list[Enrollment]:
    """Read an enrollment list in either format of :func:`enrollment_list_format`.

    usef CSV entries keep ``reference_path`` as stored (relative to the LibriMix root or
    absolute). SpeakerBeam's ids name sources of other mixtures, which only the metadata
    can turn into files, so that format needs ``rows`` (from :func:`read_metadata`) and
    yields absolute paths; see :func:`_speakerbeam_entries` for how ids are resolved.
    """
    if enrollment_list_format(path) == "speakerbeam":
        if rows is None:
            raise ValueError(
                f"{path} is SpeakerBeam's map_mixture2enrollment format: its enrollment ids "
                "(sK/<mixture_ID>) resolve to files only through the LibriMix metadata; pass rows="
            )
        return _speakerbeam_entries(Path(path), rows)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"mixture_ID", "target_index", "reference_path"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"path {path} lacks columns {sorted(missing)}")
        return [Enrollment(r["mixture_ID"], int(r["target_index"]), r["reference_path"]) for r in reader]


_SOURCE_ID = re.compile(r"^s(\d+)/(\S+)$")


def _speakerbeam_entries(path: Path, rows: Sequence[LibriMixRow]) -> list[Enrollment]:
    """Parse ``mixture_ID target_utterance_ID enrollment_ID`` lines against ``rows``.

    ``enrollment_ID`` ``sK/<mixture_ID>`` is source ``K`` of that mixture: taken from
    ``rows`` when the mixture is listed there, else ``<split folder>/sK/<mixture_ID>.wav``
    beside the listed sources (metadata restricted to part of a split). A bare LibriSpeech
    utterance id is accepted when some listed mixture holds it as a source. Anything else
    is an error: this reader has no LibriSpeech root to look utterances up in.
    """
    by_id = {row.mixture_id: row for row in rows}
    utterance_files: dict[str, Path] = {}
    for row in rows:
        for utt, source in zip(row.utterances, row.sources):
            utterance_files.setdefault(utt, source)
    # LibriMix keeps sources in <split>/s1, <split>/s2, ...: their parents are the split folders
    split_dirs = sorted({source.parent.parent for row in rows for source in row.sources})
    entries: list[Enrollment] = []
    unresolved: list[str] = []
    skipped = 0
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3:
                raise ValueError(f"{path}:{number}: expected 'mixture_ID target_utterance_ID enrollment_ID', "
                                 f"got {line.strip()!r}")
            mixture_id, utterance, enrollment_id = fields
            if mixture_id not in by_id:
                skipped += 1  # a mixture outside this metadata: its enrollment is not needed
                continue
            utterances = mixture_id.split("_")
            if utterance not in utterances:
                raise ValueError(f"{path}:{number}: target utterance {utterance} is not part of mixture "
                                 f"{mixture_id}")
            reference = _speakerbeam_reference(enrollment_id, by_id, utterance_files, split_dirs)
            if reference is None:
                unresolved.append(f"{enrollment_id} (line {number}, mixture {mixture_id}, target {utterance})")
                continue
            entries.append(Enrollment(mixture_id, utterances.index(utterance), str(reference)))
    if skipped and not entries and not unresolved:
        raise ValueError(f"{path}: none of its {skipped} lines names a mixture of the metadata (e.g. "
                         f"{rows[0].mixture_id}); is the list for this split (dev vs test)?")
    if unresolved:
        looked = ", ".join(str(d / "sK") for d in split_dirs) or "no split folder (empty metadata)"
        raise ValueError(
            f"{path}: {len(unresolved)} enrollment ids match no file, e.g. {unresolved[0]}: the id is neither a "
            f"source of a mixture in the metadata nor a file under {looked}; is the list for this split "
            "(dev vs test) and this number of speakers?"
        )
    return entries


def _speakerbeam_reference(enrollment_id: str, by_id: dict[str, LibriMixRow], utterance_files: dict[str, Path],
                           split_dirs: Sequence[Path]) -> Path | None:
    match = _SOURCE_ID.match(enrollment_id)
    if match is None:
        return utterance_files.get(enrollment_id)
    k, mixture_id = int(match.group(1)), match.group(2)
    row = by_id.get(mixture_id)
    if row is not None and 1 <= k <= len(row.sources):
        return row.sources[k - 1]
    for split_dir in split_dirs:
        candidate = split_dir / f"s{k}" / f"{mixture_id}.wav"
        if candidate.is_file():
            return candidate
    return None
