#!/usr/bin/env python
"""Build the held-out development set of the bundled models (a ``usef eval --list`` folder).

Two-talker mixtures of *held-out* real speakers only (``egs/speakers/dev_speakers.txt``),
SIR uniform in -5...5 dB, no noise, 4 s mixtures and 2-4 s references from another utterance
of the target (or a non-overlapping part of its single recording). Seeded: the same command
writes the same set. Beside ``eval.csv``, ``speakers.csv`` names each item's target talker and
whether its reference comes from another recording (``tools/subset_scores.py``).

    python tools/make_dev_set.py --sample-rate 8000 --out work_data/dev8k

The hard subset (similar voices): every interferer is one of the ``--similar-pool`` held-out
speakers whose median F0 is closest to the target's (:mod:`usef.data.pitch`); with 22
held-out speakers and a pool of 3 nearly all pairs are same-sex:

    python tools/make_dev_set.py --similar-pool 3 --n 200 --seed 20261202 --out work_data/dev8k_similar

Long references (``--reference-seconds 8 10``; a speaker whose audio cannot hold one beside a
disjoint 4 s target gets a shorter one, so check the lengths), e.g. for ``usef study reference-length``:

    python tools/make_dev_set.py --reference-seconds 8 10 --n 200 --seed 20261204 --out work_data/dev8k_longref

Target-absent items (``--target-absent 0.5``: that share of the mixtures holds only the
interferer, the reference's talker does not speak; ``eval.csv`` leaves their ``target`` empty;
the other items are the same as without the option):

    python tools/make_dev_set.py --target-absent 0.5 --n 200 --seed 20261203 --out work_data/dev8k_absent

Noise and rooms (the default set is clean and anechoic): ``--noise MANIFEST`` adds a noise clip to
every mixture at an SNR drawn from ``--snr`` (speech = target + interferer against noise);
``--p-reverb`` makes that share of mixtures reverberant (synthetic RIR, RT60 from ``--rt60``; the
reference's room is drawn apart) and ``target`` is then the direct path plus the first 50 ms. The
project's noise recordings are all in the training pack (their first 20 s), so a noisy set measures
lower SNRs than training used, not unheard kinds of noise:

    python tools/make_dev_set.py --noise ../shared/data/noise/manifest.csv --snr 0 10 --n 300 --seed 20261209 --out work_data/dev8k_noisy
    python tools/make_dev_set.py --p-reverb 1 --n 200 --seed 20261210 --out work_data/dev8k_reverb

``--without`` writes the *same* items with parts taken away, so that ``usef compare`` can pair
them and say what each part costs (same talkers, crops, SIRs and rooms otherwise):

    python tools/make_dev_set.py --p-reverb 1 --n 200 --seed 20261210 --without mixture-room reference-room --out work_data/dev8k_reverb_dry
    python tools/make_dev_set.py --p-reverb 1 --n 200 --seed 20261210 --without reference-room --out work_data/dev8k_reverb_mixonly
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from usef.data.dynamic_mix import (
    DynamicMixDataset,
    SpeakerCorpus,
    make_fixed_examples,
    write_eval_set,
)
from usef.data.pack import NoiseCorpus
from usef.data.splits import read_speaker_list

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
_WITHOUT = {"noise": "noise", "mixture-room": "rt60", "reference-room": "reference_rt60"}  # -> MixPlan field


def _write_speakers(path: Path, examples: list, corpus: SpeakerCorpus) -> None:
    """``id,target_speaker,reference_source`` beside ``eval.csv``, for per-subset scores
    (``tools/subset_scores.py``): the reference comes from another recording of the talker when
    the talker has several, else from a non-overlapping part of the target's own recording."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "target_speaker", "reference_source"])
        for index, example in enumerate(examples):
            speaker = example["speaker"]
            several = corpus.num_utterances(speaker) > 1
            writer.writerow([f"{index:06d}", speaker, "other recording" if several else "same recording"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech", nargs="*", type=Path,
                        default=[SHARED / "speech" / "manifest.csv", SHARED / "speech_extra" / "manifest.csv"])
    parser.add_argument("--speakers", type=Path, default=ROOT / "egs" / "speakers" / "dev_speakers.txt")
    parser.add_argument("--sample-rate", type=int, default=8000)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--segment-seconds", type=float, default=4.0)
    parser.add_argument("--similar-pool", type=int, default=0,
                        help="draw each interferer among the N held-out speakers closest in pitch (0: any)")
    parser.add_argument("--target-absent", type=float, default=0.0,
                        help="share of mixtures in which the reference's talker does not speak")
    parser.add_argument("--reference-seconds", type=float, nargs=2, default=(2.0, 4.0), metavar=("MIN", "MAX"),
                        help="reference length range; a speaker whose audio cannot hold such a reference beside a "
                        "disjoint target gets a shorter one")
    parser.add_argument("--noise", type=Path, default=None,
                        help="noise manifest (e.g. ../shared/data/noise/manifest.csv): every mixture gets noise")
    parser.add_argument("--snr", type=float, nargs=2, default=(0.0, 10.0), metavar=("MIN", "MAX"),
                        help="speech (target + interferer) against noise, dB, with --noise")
    parser.add_argument("--p-reverb", type=float, default=0.0,
                        help="share of mixtures (and, drawn apart, of references) that are reverberant")
    parser.add_argument("--rt60", type=float, nargs=2, default=(0.2, 0.6), metavar=("MIN", "MAX"))
    parser.add_argument("--without", nargs="+", choices=sorted(_WITHOUT), default=[],
                        help="the same items with these parts taken away (paired diagnostics)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    speakers = read_speaker_list(args.speakers)
    corpus = SpeakerCorpus.merge(*(SpeakerCorpus.from_manifest(p, args.sample_rate) for p in args.speech))
    corpus = corpus.subset(speakers)
    noise = NoiseCorpus.from_manifest(args.noise, args.sample_rate) if args.noise else None
    dataset = DynamicMixDataset(corpus, noise, segment_seconds=args.segment_seconds, sir_range=(-5.0, 5.0),
                                reference_seconds=tuple(args.reference_seconds), interferer_probs=(1.0,),
                                p_similar_interferer=1.0 if args.similar_pool else 0.0,
                                similar_pool=max(1, args.similar_pool), p_target_absent=args.target_absent,
                                snr_range=tuple(args.snr), p_reverb=args.p_reverb, rt60_range=tuple(args.rt60))
    examples = make_fixed_examples(dataset, args.n, args.seed, **{_WITHOUT[part]: None for part in args.without})
    csv_path = write_eval_set(examples, args.out, args.sample_rate)
    _write_speakers(args.out / "speakers.csv", examples, corpus)
    absent = sum(not ex.get("target_present", 1) for ex in examples)
    print(f"wrote {len(examples)} items ({absent} target-absent) from {len(corpus.speakers)} held-out speakers to {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
