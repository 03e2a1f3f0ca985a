"""``usef stream``: extract a target talker from a live or long input, writing as it goes.

Reads a file or raw PCM from stdin, pushes it through :class:`usef.Stream` piece by piece and
writes each piece of output as soon as it is final: to a WAV file (written incrementally, so it
can be followed while it grows) or as raw PCM to stdout.

Exit codes: 0 done, 1 the input or reference could not be processed (unreadable, silent or too
short reference, NaN samples, broken output pipe), 2 usage or configuration error (bad
arguments, unknown model, an enrollment of another model, existing output without --overwrite).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from usef.bin import (
    HelpFormatter,
    ModelsByRate,
    UsageError,
    add_precision_option,
    add_threads_option,
    apply_threads,
    check_output_file,
    run_command,
)

logger = logging.getLogger("usef.stream")

RAW_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
_S16_MAX = 32767 / 32768  # the largest 16-bit sample as a float

EPILOG = """\
examples:
  usef stream -i meeting.wav --reference alice.wav -o alice.wav --latency 0.5
  usef stream -i meeting.wav --enrollment alice.enroll -o alice.wav
  arecord -f S16_LE -r 16000 -c 1 -t raw | \\
      usef stream -i - --raw-rate 16000 --reference alice.wav -o - | aplay -f S16_LE -r 16000 -c 1

Output sample n is written once the input has reached n + latency (a hard bound at the model's
rate; at other rates the resamplers add up to ~0.2 s, a few ms with --resample-quality QQ).
Raw PCM is mono, little-endian; the output is in the input's format (--raw-format) and rate.
A WAV output has the input's rate and is written as it goes (16-bit PCM, clipped at full
scale; --float for 32-bit float).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usef stream",
        description="Extract a target talker block-online with a bounded latency.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("-i", "--input", required=True, help="mixture: an audio file, or - for raw PCM on stdin")
    parser.add_argument("-o", "--output", required=True, help="a .wav file, or - for raw PCM on stdout")
    parser.add_argument("--reference", help="recording of the target talker")
    parser.add_argument("--enrollment", help="enrollment file from `usef enroll` instead of a reference")
    parser.add_argument("--model", default="default",
                        help="bundled name, model directory, or default: the bundled model for the input's rate "
                             "(or the model that made --enrollment)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds; the hard latency bound")
    parser.add_argument("--hop", type=float, default=None, help="seconds between blocks (default latency/4)")
    parser.add_argument("--crossfade", type=float, default=None, help="seconds of cross-fade (default hop/2)")
    parser.add_argument("--context", type=float, default=2.0, help="seconds of past input each block sees")
    parser.add_argument("--shifts", type=int, default=1,
                        help="frame-grid offsets averaged per block (each costs one more model pass per block)")
    parser.add_argument("--raw-rate", type=int, default=None, help="sample rate of raw PCM on stdin (-i -)")
    parser.add_argument("--raw-format", choices=sorted(RAW_FORMATS), default="s16le",
                        help="raw PCM sample format, of stdin and of stdout")
    parser.add_argument("--resample-quality", choices=("QQ", "LQ", "MQ", "HQ", "VHQ"), default="HQ",
                        help="soxr quality when the input's rate is not the model's: HQ (as usef extract) holds "
                             "output back up to ~0.2 s beyond the latency, QQ a few ms")
    parser.add_argument("--read-seconds", type=float, default=0.02,
                        help="seconds read (and pushed) at a time from a file")
    parser.add_argument("--float", dest="float_wav", action="store_true",
                        help="write 32-bit float WAV instead of 16-bit PCM")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_precision_option(parser)
    add_threads_option(parser)
    return parser


def _file_chunks(path: str, seconds: float) -> tuple[int, Iterator[np.ndarray]]:
    """(rate, chunks) of an audio file, read ``seconds`` at a time, channels-first float32."""
    import soundfile as sf  # lazy: keeps --help fast

    if not Path(path).is_file():
        raise UsageError(f"-i {path}: file not found")
    try:
        handle = sf.SoundFile(path)
    except (RuntimeError, OSError) as exc:  # soundfile's LibsndfileError is a RuntimeError
        raise UsageError(f"-i {path}: cannot read audio: {exc}") from exc
    frames = max(1, round(seconds * handle.samplerate))

    def chunks() -> Iterator[np.ndarray]:
        with handle:
            for block in handle.blocks(blocksize=frames, dtype="float32", always_2d=True):
                yield block.T

    return int(handle.samplerate), chunks()


def _raw_chunks(stream, dtype: np.dtype, read_bytes: int) -> Iterator[np.ndarray]:
    """Mono samples from a binary pipe as they arrive (a partial sample waits for its rest)."""
    read = getattr(stream, "read1", stream.read)  # read1: what is there now, not a full buffer
    leftover = b""
    while True:
        data = read(read_bytes)
        if not data:
            break
        data = leftover + data
        whole = len(data) - len(data) % dtype.itemsize
        leftover = data[whole:]
        if whole:
            yield np.frombuffer(data[:whole], dtype=dtype)
    if leftover:
        logger.warning("stdin ended inside a sample: %d trailing byte(s) ignored", len(leftover))


class _Writer:
    """Final output pieces to a WAV file (incrementally) or to stdout as raw PCM."""

    def __init__(self, output: str, rate: int, raw_format: str, float_wav: bool) -> None:
        self.clipped = 0
        if output == "-":
            self.handle, self.dtype = sys.stdout.buffer, RAW_FORMATS[raw_format]
            self.file = None
        else:
            import soundfile as sf  # lazy: keeps --help fast

            self.dtype = np.dtype("<f4") if float_wav else np.dtype("<i2")
            self.file = sf.SoundFile(output, "w", samplerate=rate, channels=1, format="WAV",
                                     subtype="FLOAT" if float_wav else "PCM_16")

    def write(self, piece: np.ndarray) -> None:
        if not piece.size:
            return
        if self.dtype.kind == "i":
            # a stream cannot rescale what it already wrote (as whole-file writing does): clip
            over = np.abs(piece) > 1.0
            self.clipped += int(over.sum())
            piece = np.clip(piece, -1.0, _S16_MAX)
        if self.file is not None:
            self.file.write(piece)
            self.file.flush()
        else:
            data = np.round(piece * 32768.0).astype(self.dtype) if self.dtype.kind == "i" else piece.astype(self.dtype)
            self.handle.write(data.tobytes())
            self.handle.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.clipped:
            logger.warning("%d output sample(s) beyond full scale were clipped (16-bit output; --float or "
                           "f32le keeps them)", self.clipped)


def _stream(args: argparse.Namespace) -> int:
    from usef.bin.extract import (  # lazy: keeps --help fast
        enrollment_model,
        read_enrollment,
    )

    if bool(args.reference) == bool(args.enrollment):
        raise UsageError("give exactly one of --reference and --enrollment")
    if args.input == "-" and args.raw_rate is None:
        raise UsageError("-i - reads raw PCM: --raw-rate is required")
    if args.input != "-" and args.raw_rate is not None:
        raise UsageError("--raw-rate applies to raw PCM on stdin (-i -) only; a file carries its rate")
    if not (args.read_seconds > 0):
        raise UsageError(f"--read-seconds must be positive, got {args.read_seconds}")
    output = Path(args.output)
    if args.output != "-":
        check_output_file(output, args.overwrite, "target.wav")
    apply_threads(args.threads)

    from usef.api import check_sample_rate  # lazy: keeps --help fast
    from usef.stream import Stream

    if args.input == "-":
        try:
            rate = check_sample_rate(args.raw_rate, "--raw-rate")
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        chunks = _raw_chunks(sys.stdin.buffer, RAW_FORMATS[args.raw_format],
                             max(1, round(args.read_seconds * rate)) * RAW_FORMATS[args.raw_format].itemsize)
    else:
        rate, chunks = _file_chunks(args.input, args.read_seconds)

    enrollment = read_enrollment(args.enrollment) if args.enrollment else None
    spec = enrollment_model(args.model, enrollment) if enrollment is not None else args.model
    extractor = ModelsByRate(spec, args.device, precision=args.precision)(rate)
    if enrollment is not None:
        try:
            enrollment.check(extractor.model, extractor.name)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    try:
        stream = Stream(extractor, enrollment if enrollment is not None else args.reference, latency=args.latency,
                        sample_rate=rate, hop=args.hop, crossfade=args.crossfade, context=args.context,
                        resample_quality=args.resample_quality, shifts=args.shifts)
    except ValueError as exc:
        message = str(exc)
        if message.startswith(("latency", "hop", "crossfade", "context", "shifts")):  # the schedule: the command line's
            raise UsageError(message) from exc
        print(f"usef stream: error: {message}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    logger.info("%r", stream)

    writer = _Writer(args.output, rate, args.raw_format, args.float_wav)
    try:
        for chunk in chunks:
            writer.write(stream.push(chunk))
        writer.write(stream.flush())
    except BrokenPipeError:
        print("usef stream: error: the output pipe was closed", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, OSError) as exc:  # a NaN chunk, an unreadable stretch of file
        print(f"usef stream: error: {exc}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(BrokenPipeError):  # a reader that left early was reported above
            writer.close()
    logger.info("%.2f s streamed with model %s (latency %g s)", stream.pushed / rate, extractor.name, args.latency)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``usef stream``; returns the exit code."""
    return run_command(build_parser(), argv, _stream)


if __name__ == "__main__":
    sys.exit(main())
