"""``usef enroll``: prepare a speaker once from one or more clips, for ``usef extract --enrollment``.

Exit codes: 0 written, 1 a clip could not be used (unreadable, too short, silent), 2 usage or
configuration error (bad arguments, unknown model, existing output without --overwrite).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from usef.bin import (
    HelpFormatter,
    ModelsByRate,
    add_threads_option,
    apply_threads,
    check_output_file,
    rate_of,
    run_command,
)

logger = logging.getLogger("usef.enroll")

EPILOG = """\
examples:
  usef enroll alice1.wav alice2.wav -o alice.enroll
  usef enroll alice.flac -o alice.enroll --model usef-conformer-8k --no-trim
  usef extract meeting.wav --enrollment alice.enroll -o alice_in_meeting.wav

All clips must be of the same speaker. Each is trimmed of silence and pauses longer than
0.5 s (--no-trim keeps it whole) and the model attends to the frames of all clips together
(embedding models average the clips' vectors). The file is only valid for the model that
made it: `usef extract --enrollment` with --model default uses that model when it is a
bundled one, and refuses any other model (exit 2).
"""


def build_parser() -> argparse.ArgumentParser:
    from usef.vad import METHODS  # numpy only: --help stays fast

    parser = argparse.ArgumentParser(
        prog="usef enroll",
        description="Prepare a speaker's enrollment from clips of that speaker.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("clips", nargs="+", help="audio files of the target speaker alone")
    parser.add_argument("-o", "--output", required=True, help="enrollment file to write (e.g. alice.enroll)")
    parser.add_argument("--model", default="default",
                        help="bundled name, model directory, or default: the bundled model for the first "
                             "clip's rate (8 kHz model below 16 kHz, 16 kHz model from 16 kHz)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--no-trim", action="store_true",
                        help="use the clips whole (no silence or pause trimming)")
    parser.add_argument("--vad", choices=METHODS, default="energy",
                        help="speech detector for trimming (silero needs the silero-vad package)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_threads_option(parser)
    return parser


def _enroll(args: argparse.Namespace) -> int:
    output = check_output_file(args.output, args.overwrite, "speaker.enroll")
    apply_threads(args.threads)
    extractor = ModelsByRate(args.model, args.device)(rate_of(args.clips[0]))
    try:
        enrollment = extractor.enroll(args.clips, trim=not args.no_trim, vad=args.vad)
        enrollment.save(output)
    except (ValueError, OSError, ImportError) as exc:
        print(f"usef enroll: error: {exc}", file=sys.stderr)
        return 1
    logger.info("%s: %d clip(s), %.2f s used, model %s (%d Hz)", output, enrollment.num_clips,
                enrollment.seconds, extractor.name, enrollment.sample_rate)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``usef enroll``; returns the exit code."""
    return run_command(build_parser(), argv, _enroll)


if __name__ == "__main__":
    sys.exit(main())
