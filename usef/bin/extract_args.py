"""The command line of ``usef extract``: its parser, help text and the checks on its arguments.

Nothing here loads a model or reads audio (so ``usef extract --help`` stays fast and every
usage error comes before any work); :mod:`usef.bin.extract` runs what this parses and
re-exports these names.
"""

from __future__ import annotations

import argparse
import math
import os

from usef.bin import (
    HelpFormatter,
    UsageError,
    add_precision_option,
    add_threads_option,
    check_output_file,
)

EPILOG = """\
examples:
  usef extract mixture.wav enrolment.wav -o target.wav
  usef extract mixture.wav enrolment.wav -o target.wav --model usef-conformer-8k --device cpu
  usef extract --list pairs.csv --out-dir out/ --jobs 4
  usef enroll alice1.wav alice2.wav -o alice.enroll
  usef extract meeting.wav --enrollment alice.enroll -o alice.wav
  torchrun --nproc_per_node=4 -m usef.bin.extract --list pairs.csv --out-dir out/
  usef extract --backend onnx --model onnx/usef-conformer-8k mixture.wav enrolment.wav -o target.wav

pairs.csv has a header with columns mixture, reference (or embedding: a .npy
speaker vector, or enrollment: a file from `usef enroll`) and optionally id
(default: the mixture's file name without extension). An enrollment works only
with the model that made it; with --model default it selects that model when it
is a bundled one. Relative paths are resolved against the CSV's folder. An id names
its output file, so it must be a plain file name of at most 233 bytes (the
file system's 255 less the temporary name written first).

failures.csv (list mode) has one row per failed item (id, mixture, reference,
model, error). Several runs may share one --out-dir: a run replaces only the
rows whose id is in its own list and keeps the others, and deletes the file
when no row is left, so a clean run never erases another list's failures.

An existing output is never replaced without --overwrite: list mode keeps it
(resume), single-pair mode stops with exit code 2.

--confidence scores each output (usef.confidence: two more model passes; the model needs a
fitted confidence map): single-pair mode prints it, list mode writes confidence.csv (id, model,
confidence, threshold), replacing only the rows of the items extracted in this run.
"""

# Shorter chunks than this give the separator too little context: 0.5 s is ~30 STFT frames of
# the bundled models (32 ms window, 16 ms hop), the same floor as the shortest reference the
# models accept (min_reference_seconds); each chunk boundary also costs a cross-fade.
MIN_CHUNK_SECONDS = 0.5
BACKENDS = ("torch", "onnx")
# list mode keeps 2 x jobs decoded mixtures in memory at once
MAX_JOBS = 64


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usef extract",
        description="Extract the reference talker from mixtures.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("mixture", nargs="?", help="mixture audio file (single-pair mode)")
    parser.add_argument("reference", nargs="?", help="reference (enrolment) audio file")
    parser.add_argument("-o", "--output", help="output .wav file (single-pair mode)")
    parser.add_argument("--embedding", help=".npy speaker vector instead of a reference")
    parser.add_argument("--enrollment", help="enrollment file from `usef enroll` instead of a reference")
    parser.add_argument("--list", dest="list_file", help="CSV of pairs (list mode)")
    parser.add_argument("--out-dir", help="output folder (list mode)")
    parser.add_argument("--model", default="default",
                        help="bundled name (usef-conformer-8k ...), model directory, or default: per item, the "
                             "bundled model for its rate (8 kHz model below 16 kHz, 16 kHz model from 16 kHz)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu; under torchrun "
                             "each rank takes cuda:LOCAL_RANK)")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                        help=f"threads reading and writing audio (1..{MAX_JOBS})")
    parser.add_argument("--chunk-seconds", type=float, default=None,
                        help=f"process mixtures longer than this in chunks of this length, at least "
                             f"{MIN_CHUNK_SECONDS:g} s (default: the model's, 20 s)")
    parser.add_argument("--shifts", type=int, default=None,
                        help="average this many passes on STFT frame grids offset by a fraction of the hop "
                             "(costs that many times the compute; default: the model card's choice)")
    add_precision_option(parser)
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    parser.add_argument("--float", dest="float_wav", action="store_true",
                        help="write 32-bit float WAV instead of 16-bit PCM")
    parser.add_argument("--barrier-timeout", type=float, default=3600.0,
                        help="seconds rank 0 waits for the other ranks (sharded runs)")
    parser.add_argument("--confidence", action="store_true",
                        help="score how sure the model is that each output is the enrolled talker "
                             "(printed, or confidence.csv in list mode); --model default then picks a "
                             "model with a confidence map (usef-conformer-16k-tp-ensemble from 16 kHz up)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="torch, or onnx: --model is a folder written by `usef export MODEL --onnx DIR`, "
                             "run with onnxruntime on the CPU (pip install 'usef[onnx]'; no enrollments or "
                             "embeddings)")
    add_threads_option(parser)
    return parser


def _finite(value: float, option: str, minimum: float) -> None:
    if not (math.isfinite(value) and value >= minimum):
        raise UsageError(f"{option} must be a number >= {minimum:g}, got {value}")


def check_args(args: argparse.Namespace) -> None:
    """Every problem with the command line, before anything is loaded.

    Raises:
        UsageError: the first problem found.
    """
    if args.list_file:
        if args.mixture or args.reference or args.output or args.embedding or args.enrollment:
            raise UsageError("--list takes no positional files, -o, --embedding or --enrollment "
                             "(use --out-dir and the CSV's columns)")
        if not args.out_dir:
            raise UsageError("--list needs --out-dir")
    else:
        if args.out_dir:
            raise UsageError("--out-dir is for --list; single-pair mode writes -o OUT.wav")
        if not args.mixture:
            raise UsageError("give MIXTURE REFERENCE -o OUT.wav, or --list pairs.csv --out-dir DIR")
        given = [bool(args.reference), bool(args.embedding), bool(args.enrollment)]
        if not any(given):
            raise UsageError("give a REFERENCE file (or --enrollment, or --embedding for embedding models)")
        if sum(given) > 1:
            raise UsageError("give only one of REFERENCE, --embedding or --enrollment")
        if not args.output:
            raise UsageError("single-pair mode needs -o OUT.wav")
        check_output_file(args.output, args.overwrite, "target.wav")
    if args.backend == "onnx" and args.confidence:
        raise UsageError("--confidence needs the torch backend")
    if args.backend == "onnx" and args.precision != "fp32":
        raise UsageError("--precision bf16 needs the torch backend")
    if args.shifts is not None and args.shifts < 1:
        raise UsageError(f"--shifts must be a positive integer, got {args.shifts}")
    if args.backend == "onnx":
        if args.embedding or args.enrollment:
            raise UsageError("--backend onnx takes a REFERENCE file (no --embedding or --enrollment)")
        if args.model == "default":
            raise UsageError("--backend onnx needs --model DIR, a folder written by `usef export MODEL --onnx DIR`")
        if args.device not in (None, "cpu"):
            raise UsageError(f"--backend onnx runs on the CPU; got --device {args.device}")
    if not 1 <= args.jobs <= MAX_JOBS:
        raise UsageError(f"--jobs must be within 1..{MAX_JOBS}, got {args.jobs}")
    if args.chunk_seconds is not None:
        _finite(args.chunk_seconds, "--chunk-seconds", MIN_CHUNK_SECONDS)
    if not (math.isfinite(args.barrier_timeout) and args.barrier_timeout > 0):
        raise UsageError(f"--barrier-timeout must be a positive number of seconds, got {args.barrier_timeout}")
