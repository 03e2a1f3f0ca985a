"""Deterministic speaker-disjoint train/dev splits and fixed dev sets of mixtures.

Speaker ids may carry a corpus prefix (``ls:103``, ``vctk:p225``); the part before
the first ``:`` names the corpus, so a dev set can be made to span corpora.
Results depend only on the set of speakers and the seed, never on input order.
"""

from __future__ import annotations

import csv
import logging
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, Union

import numpy as np

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]  # noqa: UP007 (runtime alias: keep Python 3.9)

__all__ = [
    "corpus_of",
    "make_fixed_examples",
    "read_speaker_list",
    "spanning_dev_speakers",
    "speaker_disjoint_split",
    "write_eval_set",
    "write_speaker_list",
]


def corpus_of(speaker: str) -> str:
    """Corpus prefix of a speaker id (``"ls:103"`` -> ``"ls"``; ``""`` when there is none)."""
    return speaker.split(":", 1)[0] if ":" in speaker else ""


def _shuffled(items: Sequence[str], seed: int, salt: str = "") -> list[str]:
    # salting by corpus keeps one corpus's draw unchanged when another's count changes
    rng = np.random.default_rng([int(seed), zlib.crc32(salt.encode("utf-8"))])
    items = sorted(items)
    return [items[i] for i in rng.permutation(len(items))]


def speaker_disjoint_split(
    speakers: Iterable[str],
    n_dev: int,
    seed: int,
    must_include: Iterable[str] | None = None,
    prefer_prefixes: Sequence[str] | None = None,
) -> tuple[list[str], list[str]]:
    """Split speakers into (train, dev), both sorted, with ``n_dev`` dev speakers.

    ``must_include`` speakers go to dev first. Then, with ``prefer_prefixes`` (e.g.
    ``["ls:", "vctk:"]``), speakers whose id starts with one of them are taken in
    turn, one per prefix, so dev spans those corpora; any remaining places are
    filled at random from all speakers.
    """
    pool = sorted(set(speakers))
    if not 0 <= n_dev <= len(pool):
        raise ValueError(f"n_dev must be in [0, {len(pool)}] (the number of speakers), got {n_dev}")
    dev = list(dict.fromkeys(must_include or []))
    unknown = set(dev) - set(pool)
    if unknown:
        raise ValueError(f"must_include names unknown speakers: {sorted(unknown)[:5]}")
    if len(dev) > n_dev:
        raise ValueError(f"must_include has {len(dev)} speakers, more than n_dev={n_dev}")
    taken = set(dev)
    rest = _shuffled([s for s in pool if s not in taken], seed)
    if prefer_prefixes:
        queues = [[s for s in rest if s.startswith(p)] for p in prefer_prefixes]
        while len(dev) < n_dev and any(queues):
            for queue in queues:
                while queue and queue[0] in taken:  # a speaker may match several prefixes
                    queue.pop(0)
                if queue and len(dev) < n_dev:
                    dev.append(queue.pop(0))
                    taken.add(dev[-1])
    for s in rest:
        if len(dev) >= n_dev:
            break
        if s not in taken:
            dev.append(s)
            taken.add(s)
    train = [s for s in pool if s not in taken]
    return train, sorted(dev)


def spanning_dev_speakers(speakers: Iterable[str], per_corpus: Mapping[str, int], seed: int) -> list[str]:
    """Pick ``per_corpus[c]`` speakers of each corpus prefix ``c`` (e.g. ``{"ls": 12, "vctk": 2}``).

    Pass the result as ``must_include`` to :func:`speaker_disjoint_split`.
    """
    by_corpus: dict[str, list[str]] = {}
    for s in set(speakers):
        by_corpus.setdefault(corpus_of(s), []).append(s)
    picked: list[str] = []
    for corpus, count in sorted(per_corpus.items()):
        available = by_corpus.get(corpus, [])
        if not 0 <= count <= len(available):
            raise ValueError(f"per_corpus[{corpus!r}] = {count}, but the corpus has {len(available)} speakers")
        picked += _shuffled(available, seed, corpus)[:count]
    return sorted(picked)


def read_speaker_list(path: PathLike) -> list[str]:
    """One speaker id per line; blank lines and ``#`` comments are ignored."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [s for s in (line.split("#", 1)[0].strip() for line in lines) if s]


def write_speaker_list(path: PathLike, speakers: Iterable[str]) -> None:
    Path(path).write_text("".join(f"{s}\n" for s in speakers), encoding="utf-8")


class SeededExamples(Protocol):
    """What :func:`make_fixed_examples` needs of a dataset (e.g.
    :class:`usef.data.dynamic_mix.DynamicMixDataset`). Described here rather than imported:
    dynamic_mix imports this module, so importing it back would be a cycle."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict: ...

    def with_config(self, **changes: Any) -> SeededExamples: ...

    def example(self, index: int, **plan_changes: Any) -> dict: ...


def make_fixed_examples(dataset: SeededExamples, n: int, seed: int, **plan_changes: Any) -> list[dict]:
    """``n`` examples from ``dataset``'s corpora and recipe under ``seed`` (rank 0, epoch 0):
    a fixed dev set that is the same on every run. ``dataset`` is typically a
    :class:`~usef.data.dynamic_mix.DynamicMixDataset`; ``plan_changes`` (e.g. ``noise=None``)
    give the same items with a part taken away (``DynamicMixDataset.example``)."""
    if not 0 < n <= len(dataset):
        raise ValueError(f"n must be in [1, {len(dataset)}], got {n}")
    fixed = dataset.with_config(seed=int(seed), rank=0, epoch=0)
    return [fixed.example(i, **plan_changes) for i in range(n)]


def write_eval_set(examples: Sequence[dict], out_dir: PathLike, sample_rate: int) -> Path:
    """Write examples as 16-bit WAVs under ``mixture/ target/ reference/ interferer/`` plus
    ``eval.csv`` (``id,mixture,reference,target,interferer``, paths relative to ``out_dir``),
    the list format ``usef eval --list`` reads. An example with ``target_present`` 0 (its
    reference talker does not speak in the mixture) gets an empty ``target`` cell and no target
    file. Returns the CSV path."""
    import soundfile  # lazy: only writing an eval set needs it

    if not examples:
        raise ValueError("examples must not be empty")
    out = Path(out_dir)
    fields = ("mixture", "reference", "target", "interferer")
    for name in fields:
        (out / name).mkdir(parents=True, exist_ok=True)
    csv_path = out / "eval.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("id",) + fields)
        for i, ex in enumerate(examples):
            uid = f"{i:06d}"
            row = [uid]
            for name in fields:
                if name == "target" and not int(ex.get("target_present", 1)):
                    row.append("")
                    continue
                if name not in ex:
                    raise ValueError(f"examples[{i}] lacks {name!r}")
                x = np.asarray(ex[name], dtype=np.float32)
                if np.max(np.abs(x), initial=0.0) > 1.0:
                    logger.warning("examples[%d][%r] clipped to [-1, 1] for 16-bit PCM", i, name)
                rel = f"{name}/{uid}.wav"
                soundfile.write(str(out / rel), np.clip(x, -1.0, 32767 / 32768), sample_rate, subtype="PCM_16")
                row.append(rel)
            writer.writerow(row)
    return csv_path
