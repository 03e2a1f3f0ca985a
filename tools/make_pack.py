"""Pack speech and noise corpora into one mu-law .npz for machines without soundfile/soxr.

Example:
    python tools/make_pack.py \\
        --speech /work/shared/data/speech/manifest.csv /work/shared/data/speech_extra/manifest.csv \\
        --noise /work/shared/data/noise/manifest.csv --exclude-speakers dev_speakers.txt \\
        --sample-rate 8000 --out packs/train8k.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usef.data.pack import NoiseCorpus, SpeakerCorpus, read_pack, write_pack
from usef.data.splits import read_speaker_list


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speech", nargs="*", default=[], help="speech manifest CSVs (path,speaker,...)")
    parser.add_argument("--noise", nargs="*", default=[], help="noise manifest CSVs (path,category,...)")
    parser.add_argument("--exclude-speakers", type=Path, help="file with one speaker id per line to leave out")
    parser.add_argument("--sample-rate", type=int, default=8000)
    parser.add_argument("--max-seconds-per-speaker", type=float, default=60.0)
    parser.add_argument("--max-seconds-per-noise", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0, help="order in which a speaker's utterances are kept")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not args.speech and not args.noise:
        parser.error("give --speech and/or --noise manifests")
    try:
        speech = (SpeakerCorpus.merge(*(SpeakerCorpus.from_manifest(p, args.sample_rate) for p in args.speech))
                  if args.speech else None)
        noise = (NoiseCorpus.merge(*(NoiseCorpus.from_manifest(p, args.sample_rate) for p in args.noise))
                 if args.noise else None)
        exclude = read_speaker_list(args.exclude_speakers) if args.exclude_speakers else []
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = write_pack(args.out, speech, noise, max_seconds_per_speaker=args.max_seconds_per_speaker,
                             max_seconds_per_noise=args.max_seconds_per_noise, exclude_speakers=exclude,
                             seed=args.seed)
        read_pack(args.out)  # fail now, not on the training machine
    except (OSError, ValueError, KeyError) as exc:
        print(f"make_pack: error: {exc}", file=sys.stderr)
        return 1
    if speech is not None and exclude:
        missing = sorted(set(exclude) - set(speech.speakers))
        if missing:
            print(f"make_pack: warning: {len(missing)} excluded speakers are not in the corpus, "
                  f"e.g. {missing[:3]}", file=sys.stderr)
    size_mb = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size_mb:.1f} MB): {summary['speakers']} speakers, {summary['utterances']} "
          f"utterances, {summary['speech_seconds'] / 60:.1f} min speech; {summary['noise_files']} noise files, "
          f"{summary['noise_seconds'] / 60:.1f} min noise, {summary['sample_rate']} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
