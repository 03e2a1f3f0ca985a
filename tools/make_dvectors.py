"""Make a d-vector table (resemblyzer partials on a 1.6 s grid) for a pack or speech manifests.

Run once on a CPU machine with the optional extra (pip install "usef[resemblyzer]"); the
training machine then reads the .npz with NumPy only (config key data.dvectors).

Examples:
    python tools/make_dvectors.py --pack packs/all8k.npz --out packs/dvectors.npz
    python tools/make_dvectors.py --manifest /work/shared/data/speech/manifest.csv \\
        --sample-rate 8000 --out packs/dvectors_manifest.npz

A manifest table's rows follow the corpus that ``data.speech`` builds from the same manifests
in the same order (the rate must match the model's, e.g. 8000).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usef.data.pack import SpeakerCorpus
from usef.embeddings.dvector import DVectorTable, ResemblyzerEmbedder, embed_corpus


def _manifest_keys(paths: list[Path], corpus: SpeakerCorpus) -> list[str]:
    """Manifest ``path`` column in the table's row order (sorted speakers, manifest order within)."""
    by_speaker: dict[str, list[str]] = {}
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                by_speaker.setdefault(row["speaker"], []).append(row["path"])
    return [key for speaker in corpus.speakers for key in by_speaker[speaker]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pack", type=Path, help="a pack written by tools/make_pack.py")
    source.add_argument("--manifest", type=Path, nargs="+", help="speech manifest CSVs (path,speaker,...)")
    parser.add_argument("--sample-rate", type=int, default=8000, help="corpus rate for manifests")
    parser.add_argument("--out", type=Path, required=True, help="output .npz")
    parser.add_argument("--window-seconds", type=float, default=1.6)
    parser.add_argument("--hop-seconds", type=float, default=0.4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    args = parser.parse_args(argv)
    if not str(args.out).endswith(".npz"):
        parser.error("--out must end in .npz")
    try:
        embedder = ResemblyzerEmbedder(args.device, args.window_seconds, args.hop_seconds, args.batch_size)
    except ImportError as exc:
        print(f"make_dvectors: error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.pack is not None:
            corpus, keys = SpeakerCorpus.from_pack(args.pack), None
        else:
            corpus = SpeakerCorpus.merge(*(SpeakerCorpus.from_manifest(p, args.sample_rate) for p in args.manifest))
            keys = _manifest_keys(args.manifest, corpus)
        started = time.monotonic()
        last = [started]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] > 10 or done == total:
                last[0] = now
                print(f"  {done}/{total} utterances, {now - started:.0f} s", file=sys.stderr)

        table = embed_corpus(corpus, embedder, keys, progress)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.save(args.out)
        DVectorTable.load(args.out).check_corpus(corpus)  # fail now, not on the training machine
    except (OSError, ValueError, KeyError) as exc:
        print(f"make_dvectors: error: {exc}", file=sys.stderr)
        return 1
    seconds = float(table.lengths.sum()) / table.sample_rate
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): {len(table)} utterances "
          f"({seconds / 60:.1f} min), {len(table.partials)} partials of {table.embedding_dim} dims, "
          f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
