"""``usef demo``: extract the bundled example with the bundled default model.

The example (``usef/assets/demo``) is a mixture of two held-out real speakers, a reference
recording of the target and the clean target, all at 8 kHz (credits in its README).

Like ``usef extract``, it never replaces an existing output without --overwrite (exit code 2).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from usef.bin import (
    HelpFormatter,
    UsageError,
    add_threads_option,
    apply_threads,
    check_output_file,
    load_model_or_usage_error,
    run_command,
)

DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"
DEMO_RATE = 8000  # the example's rate: picks the bundled default model
DESCRIPTION = """\
Extract the bundled example with the bundled default model and print the SI-SDR gain.

The example (usef/assets/demo) is a mixture of two held-out real speakers, a reference
recording of the target and the clean target, all at 8 kHz (credits in its README).
An existing output is never replaced without --overwrite (exit code 2), as in usef extract.
"""
EXAMPLE = """examples:
  usef demo -o estimate.wav
  usef demo -o estimate.wav --model usef-conformer-16k --device cpu --overwrite
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usef demo", description=DESCRIPTION, epilog=EXAMPLE, formatter_class=HelpFormatter,
    )
    parser.add_argument("-o", "--output", default="estimate.wav", help="where to write the estimate (.wav)")
    parser.add_argument("--model", default="default",
                        help="bundled name (usef-conformer-8k ...), model directory, or default: the bundled "
                             "model for the example's 8 kHz")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    add_threads_option(parser)
    return parser


def _demo(args: argparse.Namespace) -> int:
    output = check_output_file(args.output, args.overwrite, "estimate.wav")
    apply_threads(args.threads)
    paths = {name: DEMO_DIR / f"{name}.wav" for name in ("mixture", "reference", "target")}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise UsageError(f"the bundled example is missing: {', '.join(missing)}")

    from usef.audio import load_audio, write_audio  # lazy: keeps --help fast
    from usef.metrics import si_sdr

    extractor = load_model_or_usage_error(args.model, device=args.device, sample_rate=DEMO_RATE)
    mixture, rate = load_audio(paths["mixture"], "mixture")
    target, _ = load_audio(paths["target"], "target")
    estimate = extractor.extract(str(paths["mixture"]), str(paths["reference"]))
    try:
        write_audio(output, estimate, rate, float_wav=True)  # float: no clipping of loud estimates
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc}") from exc
    before, after = si_sdr(mixture, target), si_sdr(estimate, target)
    print(f"model: {extractor.name}")
    print(f"mixture SI-SDR {before:6.2f} dB -> estimate SI-SDR {after:6.2f} dB: SI-SDRi {after - before:+.2f} dB")
    print(f"estimate written to {output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``usef demo``; returns the exit code (0 written, 2 usage error)."""
    return run_command(build_parser(), argv, _demo, log_level=logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
