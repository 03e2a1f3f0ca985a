"""Training data plumbing: config -> datasets, the step-indexed sampler, fixed dev batches.

The data stream is a pure function of the optimizer step: :class:`StepBatchSampler` maps
micro-batch numbers to dataset indices, and every dataset used here draws an example from
its index alone (``DynamicMixDataset`` seeds on ``[seed, rank, epoch, index]``,
``Libri2MixTSE`` on ``[seed, epoch, index]``). Resuming is therefore just starting the
sampler at ``step * grad_accum``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usef.data import (
    DynamicMixConfig,
    DynamicMixDataset,
    Libri2MixTSE,
    NoiseCorpus,
    SpeakerCorpus,
    collate_examples,
    read_speaker_list,
    speaker_disjoint_split,
    write_eval_set,
)
from usef.embeddings.dvector import DVectorTable
from usef.models import model_sample_rate
from usef.train.config import resolve_config
from usef.train.state import write_text_atomic


class EpochView(torch.utils.data.Dataset):
    """Concatenated Libri2MixTSE splits where index ``e * len(self) + i`` is item ``i`` drawn
    in epoch ``e``: fresh crops and references every epoch, still a pure function of the
    index (so the stream resumes exactly)."""

    def __init__(self, parts: Sequence[Libri2MixTSE]) -> None:
        if not parts:
            raise ValueError("parts must hold at least one dataset")
        self.parts = list(parts)
        self.ends = np.cumsum([len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.ends[-1])

    def __getitem__(self, index: int) -> dict:
        epoch, offset = divmod(int(index), len(self))
        which = int(np.searchsorted(self.ends, offset, side="right"))
        part = self.parts[which]
        part.set_epoch(epoch)
        return part[offset - (int(self.ends[which - 1]) if which else 0)]


class DevBatches:
    """Fixed dev batches over ``indices`` of a seeded dataset, built on first use (and kept
    when ``cache``); each rank touches only the batches it evaluates."""

    def __init__(self, dataset: Any, indices: Sequence[int], batch_size: int, cache: bool = True) -> None:
        self.dataset, self.indices, self.batch_size, self.cache = dataset, list(indices), int(batch_size), cache
        self._cached: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def __getitem__(self, b: int) -> dict[str, Any]:
        if b in self._cached:
            return self._cached[b]
        chunk = self.indices[b * self.batch_size:(b + 1) * self.batch_size]
        batch = collate_examples([self.dataset[i] for i in chunk], pad_fixed=True)
        if self.cache:
            self._cached[b] = batch
        return batch


@dataclass
class Data:
    train: torch.utils.data.Dataset
    dev: DevBatches | None
    shuffle: bool  # finite corpus read in seeded epochs (else: random already, read in order)
    rank_in_dataset: bool  # the dataset draws a per-rank stream itself


def _speech(sources: Any, sample_rate: int, kind: str) -> Any:
    """A corpus from a path (``.npz`` pack, ``.csv`` manifest, folder) or a list of them;
    dict entries ``{pack|manifest|folders: PATH, root: DIR}`` are accepted too."""
    cls = SpeakerCorpus if kind == "speech" else NoiseCorpus
    corpora = []
    for src in sources if isinstance(sources, list) else [sources]:
        entry = {"path": src} if isinstance(src, str) else dict(src)
        path = Path(entry.get("pack") or entry.get("manifest") or entry.get("folders") or entry.get("path", ""))
        if path.suffix == ".npz":
            corpus = cls.from_pack(path)
            if corpus.sample_rate != sample_rate:
                raise ValueError(f"data.{kind}: pack {path} is at {corpus.sample_rate} Hz, the model at {sample_rate}")
        elif path.suffix == ".csv":
            corpus = cls.from_manifest(path, sample_rate, entry.get("root"))
        elif path.is_dir() and kind == "speech":
            corpus = cls.from_folders(path, sample_rate)
        else:
            raise ValueError(f"data.{kind}: {src!r} is not a .npz pack, a .csv manifest or a speaker folder")
        corpora.append(corpus)
    if not corpora:
        raise ValueError(f"data.{kind} is empty")
    return corpora[0] if len(corpora) == 1 else cls.merge(*corpora)


def _mix_config(options: dict[str, Any], batch_size: int = 1) -> dict[str, Any]:
    """``mix`` options as :class:`DynamicMixConfig` fields; ``reference_length_group: batch``
    becomes ``batch_size`` (one reference length per micro-batch of the step sampler)."""
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in (options or {}).items()}
    if config.get("reference_length_group") == "batch":
        config["reference_length_group"] = int(batch_size)
    return config


def mix_configs(cfg: dict[str, Any], rank: int = 0) -> tuple[DynamicMixConfig, DynamicMixConfig | None]:
    """The training and dev mixing recipes of a ``data.type: dynamic_mix`` config (dev None
    when ``dev.n_items`` is 0). ``dev.mix`` overrides ``data.mix`` for the dev set, which keeps
    each item's own reference length: its items stay those of any run."""
    d, t, dv = cfg["data"], cfg["train"], cfg["dev"]
    train = DynamicMixConfig(**_mix_config(d.get("mix"), int(t["batch_size"])),
                             segment_seconds=float(t["segment_seconds"]), seed=int(t["seed"]), rank=rank)
    n_dev = int(dv["n_items"] or 0)
    if not n_dev:
        return train, None
    dev = {**_mix_config(d.get("mix")), **_mix_config(dv["mix"])}
    dev.update(segment_seconds=float(dv["segment_seconds"] or t["segment_seconds"]), seed=int(dv["seed"]),
               rank=0, epoch=0, length=n_dev, reference_length_group=1)
    return train, DynamicMixConfig(**dev)


def build_data(cfg: dict[str, Any], sample_rate: int, rank: int, exp_dir: Path) -> Data:
    """Training dataset and fixed dev batches from ``cfg["data"]``.

    ``type: dynamic_mix``: ``speech`` (pack / manifest / folders, or a list), optional
    ``noise``, ``dev_speakers`` (held-out count, default 0 = no dev) or ``dev_speaker_list``
    (file), ``split_seed``, ``mix`` (DynamicMixConfig fields; ``reference_length_group: batch`` gives each
    training micro-batch one reference length, the dev set never), ``dvectors`` (a d-vector table
    ``.npz`` made from the same speech, :mod:`usef.embeddings.dvector`: examples then carry
    ``embedding``). ``dev.mix`` overrides ``mix`` for the dev set. ``type: libri2mix``:
    ``root``, ``sample_rate``, ``mode``, ``mix_type``,
    ``train_split`` (one or a list), ``dev_split``, ``reference_seconds``,
    ``dev_enrollment`` (CSV, default ``EXP/dev_enrollment.csv``).
    """
    d, t, dv = cfg["data"], cfg["train"], cfg["dev"]
    if int(d.get("sample_rate", sample_rate)) != sample_rate:
        raise ValueError(f"data.sample_rate={d['sample_rate']} but the model runs at {sample_rate} Hz")
    n_dev = int(dv["n_items"] or 0)
    dev_seconds = dv["segment_seconds"]
    if d["type"] == "dynamic_mix":
        speech = _speech(d["speech"], sample_rate, "speech")
        noise = _speech(d["noise"], sample_rate, "noise") if d.get("noise") else None
        if d.get("dev_speaker_list"):
            held = read_speaker_list(d["dev_speaker_list"])
        else:
            held = speaker_disjoint_split(speech.speakers, int(d.get("dev_speakers", 0)), int(d.get("split_seed", 0)),
                                          prefer_prefixes=d.get("dev_prefer_prefixes"))[1]
        train_speakers = sorted(set(speech.speakers) - set(held))
        table = DVectorTable.load(d["dvectors"]) if d.get("dvectors") else None
        mix, dev_mix = mix_configs(cfg, rank)
        train_set = DynamicMixDataset(speech.subset(train_speakers) if held else speech, noise, mix, dvectors=table)
        dev = None
        if held and dev_mix is not None:
            dev_set = DynamicMixDataset(speech.subset(held), noise, dev_mix, dvectors=table)
            dev = DevBatches(dev_set, range(dev_mix.length), int(dv["batch_size"]))
        return Data(train_set, dev, shuffle=False, rank_in_dataset=True)
    if d["type"] == "libri2mix":
        if d.get("dvectors"):
            raise ValueError("data.dvectors is supported for type: dynamic_mix only")
        common = {"root": d["root"], "sample_rate": sample_rate, "mode": d.get("mode", "min"),
                      "mixture_type": d.get("mix_type", "mix_clean")}
        splits = d.get("train_split", "train-100")
        train_set = EpochView([Libri2MixTSE(split=s, segment_seconds=float(t["segment_seconds"]),
                                            reference_seconds=d.get("reference_seconds", 3.0),
                                            seed=int(t["seed"]), **common)
                               for s in (splits if isinstance(splits, list) else [splits])])
        dev = None
        if n_dev and d.get("dev_split", "dev"):
            dev_set = Libri2MixTSE(split=d.get("dev_split", "dev"), segment_seconds=dev_seconds,
                                   enrollment=d.get("dev_enrollment") or exp_dir / "dev_enrollment.csv",
                                   seed=int(dv["seed"]), **common)
            n = min(n_dev, len(dev_set))
            picks = np.sort(np.random.default_rng(int(dv["seed"])).choice(len(dev_set), n, replace=False))
            dev = DevBatches(dev_set, picks.tolist(), int(dv["batch_size"]), cache=n <= 1000)
        return Data(train_set, dev, shuffle=True, rank_in_dataset=False)
    raise ValueError(f"data.type must be dynamic_mix or libri2mix, got {d['type']!r}")


class StepBatchSampler(torch.utils.data.Sampler):
    """Endless stream of index batches that is a pure function of the micro-batch number.

    Micro-batch ``m`` of rank ``r`` holds stream positions ``(m * world_size + r) * B + j``
    (``j < B``), so resuming at optimizer step ``s`` is ``start = s * grad_accum`` and the
    ranks never share an example. Without ``shuffle`` a position maps to index
    ``position % size`` (for datasets that are random already, e.g. dynamic mixing). With
    ``shuffle`` position ``p`` in epoch ``e = p // size`` maps to
    ``e * size + permutation_e[p % size]`` (permutation seeded by ``(seed, e)``): the
    dataset receives the epoch inside the index, see ``EpochView`` in the trainer.
    """

    def __init__(self, size: int, batch_size: int, start: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = False, seed: int = 0) -> None:
        if size < 1 or batch_size < 1 or start < 0:
            raise ValueError(f"need size >= 1, batch_size >= 1, start >= 0; got {size}, {batch_size}, {start}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.size, self.batch_size, self.start = int(size), int(batch_size), int(start)
        self.rank, self.world_size, self.shuffle, self.seed = rank, world_size, shuffle, int(seed)
        self._perm: tuple | None = None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if not self.shuffle:
            return offset
        if self._perm is None or self._perm[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm = (epoch, rng.permutation(self.size))
        return epoch * self.size + int(self._perm[1][offset])

    def __iter__(self) -> Iterator[list[int]]:
        micro = self.start
        while True:
            first = (micro * self.world_size + self.rank) * self.batch_size
            yield [self._index(p) for p in range(first, first + self.batch_size)]
            micro += 1


def describe_data(data: Data, touch: bool = True) -> dict[str, Any]:
    """Counts of a built :class:`Data` and the audio files its metadata names but that do
    not exist; with ``touch`` one training example and one dev batch are decoded."""
    train = data.train
    out: dict[str, Any] = {"sample_rate": None}
    listed = []
    if isinstance(train, DynamicMixDataset):
        out.update(sample_rate=train.sample_rate, speakers=len(train.speech.speakers),
                   utterances=len(train.speech), noise_clips=len(train.noise) if train.noise is not None else 0)
    elif isinstance(train, EpochView):
        out.update(sample_rate=train.parts[0].sample_rate, train_items=len(train),
                   mixtures=sum(len(p.rows) for p in train.parts),
                   speakers=len({s for p in train.parts for s in p.speakers}))
        listed = [r for p in train.parts for r in p.rows]
    dev_set = data.dev.dataset if data.dev is not None else None
    out["dev_items"] = len(data.dev.indices) if data.dev is not None else 0
    if isinstance(dev_set, Libri2MixTSE):
        listed += dev_set.rows
        out["dev_enrollment"] = dev_set.enrollment_source
    missing = [str(p) for row in listed for p in row.all_paths() if not p.exists()]
    out["missing_files"] = len(missing)
    out["missing_examples"] = missing[:5]
    if touch and not missing:
        example = train[0]
        out["example_seconds"] = len(example["mixture"]) / out["sample_rate"]
        if data.dev is not None and len(data.dev):
            out["dev_batch_shape"] = list(data.dev[0]["mixture"].shape)
    return out


def prepare_data(config: dict[str, Any], exp_dir: os.PathLike) -> dict[str, Any]:
    """Build the datasets of ``config`` without training: checks the metadata and that every
    listed audio file exists, writes the dev enrollment list (LibriMix) and
    ``EXP/data_summary.json``; returns the summary (``missing_files`` > 0 means broken data)."""
    cfg = resolve_config(config)
    sample_rate = model_sample_rate(cfg["model"]["name"], **cfg["model"]["args"])
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    summary = describe_data(build_data(cfg, sample_rate, 0, exp_dir))
    write_text_atomic(exp_dir / "data_summary.json", json.dumps(summary, indent=1))
    return summary


def write_dev_set(config: dict[str, Any], out_dir: os.PathLike) -> Path:
    """Write the config's fixed dev examples (``dev.n_items`` under ``dev.seed``) as WAVs plus
    an ``eval.csv`` for ``usef eval --list``; returns the CSV path. With another ``dev.seed``
    this gives a held-out evaluation set disjoint in mixtures from the model-selection set."""
    cfg = resolve_config(config)
    sample_rate = model_sample_rate(cfg["model"]["name"], **cfg["model"]["args"])
    out = Path(out_dir)
    data = build_data(cfg, sample_rate, 0, out)
    if data.dev is None:
        raise ValueError("the config has no dev set: set dev.n_items > 0 and held-out speakers "
                         "(data.dev_speakers or data.dev_speaker_list)")
    examples = [data.dev.dataset[i] for i in data.dev.indices]
    return write_eval_set(examples, out, sample_rate)
