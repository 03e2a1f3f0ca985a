#!/usr/bin/env python
"""Synthetic training talkers from offline TTS engines, as a speech manifest for ``make_pack.py``.

Why: the real training corpus holds 278 talkers and 65 minutes of speech; a talker the model
has never heard is the common case for our users, so the number of distinct voices seen in
training is a lever. This writes ``--espeak`` random espeak-ng voice variants (formant scale,
pitch, voice source drawn per talker, written to a private copy of espeak-ng's data) plus every
installed flite / festival voice in ``BASES``, each reading ``--sentences`` King James Bible
sentences (public domain, Debian ``bible-kjv``), as 16 kHz FLAC with a manifest in the corpus's
format (``path,speaker,corpus,licence,origin,seconds``). Speakers are ids ``tts:...``.

Synthetic voices serve for variety only: judge any model trained with them on real held-out
talkers. Needs Debian packages (not Python ones): ``espeak-ng flite festival bible-kjv`` and,
for the festival voices, ``festvox-*`` (see ``BASES``); voices not installed are skipped.

    python tools/make_tts_speakers.py --out work_data/tts --espeak 120 --sentences 10
"""

from __future__ import annotations

import argparse
import csv
import logging
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usef.audio import load_audio, resample

SAMPLE_RATE = 16000
ESPEAK_DATA = Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data")
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc")
# (engine, voice, licence of the voice data): recorded human voices behind diphone/HTS/clustergen;
# one voice per human (festival's kal and slt are flite's kal16 and slt again)
BASES = (
    ("flite", "kal16", "CMU Flite licence (BSD-like)"),
    ("flite", "awb", "CMU Flite licence (BSD-like)"),
    ("flite", "rms", "CMU Flite licence (BSD-like)"),
    ("flite", "slt", "CMU Flite licence (BSD-like)"),
    ("festival", "ked_diphone", "festvox (BSD-like)"),
    ("festival", "lp_diphone", "festvox (BSD-like)"),
    ("festival", "pc_diphone", "festvox (BSD-like)"),
    ("festival", "czech_dita", "festival-czech (GPL-2+)"),
    ("festival", "czech_krb", "festival-czech (GPL-2+)"),
    ("festival", "czech_machac", "festival-czech (GPL-2+)"),
    ("festival", "czech_ph", "festival-czech (GPL-2+)"),
    ("festival", "suo_fi_lj_diphone", "suopuhe (LGPL)"),
    ("festival", "hy_fi_mv_diphone", "suopuhe (LGPL)"),
    ("festival", "upc_ca_ona_hts", "festvox-ca (BSD-like)"),
)

logger = logging.getLogger("make_tts_speakers")


def kjv_sentences() -> list[str]:
    """5-25 word sentences of the King James Bible, plain ASCII, in book order."""
    text = subprocess.run(["bible", "gen1:1-rev22:21"], capture_output=True, text=True, check=True).stdout
    verses = [re.sub(r"^\s*\d+\s+", "", line) for line in text.splitlines()
              if line.strip() and not re.match(r"^(\d )?[A-Z][A-Za-z ]+ \d+$", line.strip())]
    out = []
    for sentence in re.split(r"(?<=[.!?;:])\s+", " ".join(verses)):
        sentence = re.sub(r"\s+", " ", sentence).strip()
        if 5 <= len(sentence.split()) <= 25 and sentence[:1].isupper() and not re.search(r"[^A-Za-z ,.;:!?'-]", sentence):
            out.append(sentence)
    return list(dict.fromkeys(out))


def espeak_variant(directory: Path, name: str, rng: random.Random) -> int:
    """Writes a random voice variant ``name`` under ``directory``'s voices/!v; returns a speaking rate."""
    female = rng.random() < 0.5
    tract = rng.uniform(1.04, 1.18) if female else rng.uniform(0.86, 1.02)
    low = rng.uniform(150, 215) if female else rng.uniform(70, 120)
    lines = ["language variant", f"name {name}", f"gender {'female' if female else 'male'}",
             f"pitch {int(low)} {int(low * rng.uniform(1.3, 1.7))}"]
    for k in range(9):
        scale = rng.uniform(0.95, 1.1) if k == 0 else tract * rng.uniform(0.96, 1.04)
        lines.append(f"formant {k} {int(100 * scale)} {int(rng.uniform(75, 110))} {int(rng.uniform(90, 160))}")
    if rng.random() < 0.5:
        lines.append("breath " + " ".join(str(rng.randint(0, 4)) for _ in range(8)))
    if rng.random() < 0.3:
        lines.append(f"roughness {rng.randint(1, 4)}")
    lines.append(f"flutter {rng.randint(0, 20)}")
    (directory / "voices" / "!v" / name).write_text("\n".join(lines) + "\n")
    return rng.randint(145, 190)


def synthesize(engine: str, voice: str, text: str, work: Path, espeak_root: Path, rate: int = 175) -> np.ndarray:
    wav = work / "out.wav"
    if engine == "espeak-ng":
        cmd = ["espeak-ng", f"--path={espeak_root}", "-v", voice, "-s", str(rate), "-w", str(wav), text]
    elif engine == "flite":
        cmd = ["flite", "-voice", voice, "-t", text, "-o", str(wav)]
    else:
        (work / "in.txt").write_text(text, encoding="latin-1", errors="replace")
        cmd = ["text2wave", "-eval", f"(voice_{voice})", str(work / "in.txt"), "-o", str(wav)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return resample(*load_audio(wav, "synthesized speech"), SAMPLE_RATE)


def _voice_works(engine: str, voice: str, work: Path, espeak_root: Path) -> bool:
    try:
        return len(synthesize(engine, voice, "Hello there.", work, espeak_root)) > SAMPLE_RATE // 4
    except (subprocess.SubprocessError, OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--espeak", type=int, default=120, help="random espeak-ng talkers")
    parser.add_argument("--sentences", type=int, default=10, help="sentences per talker")
    parser.add_argument("--seed", type=int, default=20261203)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rng = random.Random(args.seed)
    sentences = kjv_sentences()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        espeak_root = work / "espeak"
        shutil.copytree(ESPEAK_DATA, espeak_root / "espeak-ng-data")
        talkers = []  # (speaker id, engine, voice, rate, licence)
        for i in range(args.espeak):
            name = f"usef{i:03d}"
            rate = espeak_variant(espeak_root / "espeak-ng-data", name, rng)
            talkers.append((f"tts:espeak-{name}", "espeak-ng", f"{rng.choice(ESPEAK_ACCENTS)}+{name}", rate,
                            "espeak-ng output (program GPL-3)"))
        for engine, voice, licence in BASES:
            if _voice_works(engine, voice, work, espeak_root):
                talkers.append((f"tts:{engine}-{voice}", engine, voice, 175, licence))
            else:
                logger.info("skipped %s %s (not installed or failing)", engine, voice)
        rows = []
        for speaker, engine, voice, rate, licence in talkers:
            folder = args.out / speaker.replace(":", "_")
            folder.mkdir(exist_ok=True)
            for k in range(args.sentences):
                text = sentences[rng.randrange(len(sentences))]
                audio = synthesize(engine, voice, text, work, espeak_root, rate)
                peak = float(np.max(np.abs(audio))) or 1.0
                path = folder / f"{k:03d}.flac"
                sf.write(path, audio * (0.5 / peak), SAMPLE_RATE)
                rows.append({"path": str(path.relative_to(args.out)), "speaker": speaker, "corpus": f"TTS {engine}",
                             "licence": f"{licence}; text KJV (public domain)", "origin": f"{engine}:{voice}",
                             "seconds": round(len(audio) / SAMPLE_RATE, 3)})
            logger.info("%s: %d sentences", speaker, args.sentences)
    if not rows:
        logger.error("no talker: give --espeak > 0 or install a voice of BASES")
        return 1
    with open(args.out / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    logger.info("%d talkers, %.1f minutes -> %s", len(talkers), sum(r["seconds"] for r in rows) / 60,
                args.out / "manifest.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
