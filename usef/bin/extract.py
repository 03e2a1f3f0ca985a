"""``usef extract``: one mixture/reference pair, or a CSV list of them.

List mode writes ``DIR/<id>.wav`` (at the mixture's rate) atomically, skips outputs that
already exist and read back as audio (so a killed run resumes; an empty or unreadable file
is extracted again), records bad items in ``DIR/failures.csv`` and keeps going. With
``--model default`` each item gets the bundled model for its own rate; a log line per item
says which model served it, and failures.csv has a ``model`` column. Exit codes: 0 all
done, 1 some items failed, 2 usage or configuration error (bad arguments or CSV, unknown
model).

Sharded runs: under ``torchrun`` (or with RANK/WORLD_SIZE set by hand) rank k
takes the rows i with i % WORLD_SIZE == k and writes ``failures.rank<k>.csv``
and a ``.done.rank<k>`` marker; rank 0 waits for every marker, then merges the
per-rank failures into ``failures.csv``. No process group is needed.

The list's files (reading pairs.csv and enrollments, keeping failures.csv and confidence.csv,
merging the ranks' files) are in :mod:`usef.bin.extract_files`, the parser and the checks on the
arguments in :mod:`usef.bin.extract_args`, list mode (items in threads, shards by rank) in
:mod:`usef.bin.extract_list`; this module runs the command and single-pair mode, and
re-exports what callers use.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from usef.bin import ModelsByRate, UsageError, apply_threads, rate_of, run_command
from usef.bin.extract_args import (  # noqa: F401 (EPILOG, BACKENDS and MAX_JOBS are only re-exported)
    BACKENDS,
    EPILOG,
    MAX_JOBS,
    MIN_CHUNK_SECONDS,
    build_parser,
    check_args,
)
from usef.bin.extract_files import (  # noqa: F401 (re-exported, for callers)
    CONFIDENCE_FIELDS,
    CONFIDENCE_NAME,
    FAILURE_FIELDS,
    FAILURES_NAME,
    Item,
    _id_problem,
    enrollment_model,
    read_enrollment,
    read_list,
    update_failures,
)
from usef.bin.extract_list import (  # noqa: F401 (run_items and is_complete_output are only re-exported)
    _prepare_out_dir,
    _shard,
    is_complete_output,
    run_items,
    run_list,
)

if TYPE_CHECKING:
    from usef.enrollment import Enrollment

logger = logging.getLogger("usef.extract")


class OnnxModels:
    """:class:`ModelsByRate`'s interface for ``--backend onnx``: one exported folder for every item,
    an :class:`usef.onnx_runtime.OnnxExtractor` loaded once (``--threads`` are onnxruntime's)."""

    def __init__(self, spec: str, threads: int | None = None, shifts: int | None = None) -> None:
        self.spec, self.device, self.threads = spec, None, threads
        self.options = {"shifts": shifts}
        self._extractor = None

    def __call__(self, sample_rate: int | None):
        if self._extractor is None:
            from usef.onnx_runtime import OnnxExtractor  # lazy: keeps --help fast

            try:
                self._extractor = OnnxExtractor(self.spec, threads=self.threads, **self.options)
            except Exception as exc:
                raise UsageError(f"cannot load ONNX model {self.spec!r}: {type(exc).__name__}: {exc}") from exc
        return self._extractor


class ChunkProgress:
    """``progress(done, total)`` for :meth:`usef.Extractor.extract`: a tqdm bar of chunks,
    created on the first call (short files, which are not chunked, show none)."""

    def __init__(self, disable: bool | None = None) -> None:
        self.bar, self.disable = None, disable

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm  # lazy: keeps --help fast

            self.bar = tqdm(total=total, desc="chunks", unit="chunk", disable=self.disable, file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_single(args: argparse.Namespace, models: ModelsByRate, enrollment: Enrollment | None = None) -> int:
    """Single-pair mode; returns the exit code (0 written, 1 the inputs could not be processed).

    Raises:
        UsageError: ``enrollment`` was made by another model than the one chosen.
    """
    from usef import audio

    output = Path(args.output)
    extractor = models(rate_of(args.mixture))
    if enrollment is not None:
        try:
            enrollment.check(extractor.model, extractor.name)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    try:
        mixture, mix_rate = audio.load_audio(args.mixture, "mixture")
        reference, ref_rate = (audio.load_audio(args.reference, "reference")
                               if args.reference else (enrollment, None))
        bar = ChunkProgress()  # a long file shows its chunks (hidden when stderr is not a terminal)
        try:
            estimate = extractor.extract(mixture, reference, embedding=args.embedding,
                                         sample_rate=mix_rate, reference_sample_rate=ref_rate,
                                         chunk_seconds=args.chunk_seconds, progress=bar,
                                         **({"return_confidence": True} if args.confidence else {}))
        finally:
            bar.close()
        if args.confidence:
            estimate, score = estimate
            print(f"confidence {score:.3f} (threshold {extractor.confidence_map().threshold:g}): {output}")
        audio.write_audio(output, estimate, mix_rate, float_wav=args.float_wav)
    except (ValueError, OSError, ImportError) as exc:
        print(f"usef extract: error: {exc}", file=sys.stderr)
        return 1
    logger.info("%s: %s (%d Hz input)", output, extractor.name, mix_rate)
    return 0


def _device(requested: str | None, rank: int, world: int) -> str | None:
    if requested is not None or world == 1:
        return requested
    import torch  # lazy: keeps --help fast

    if not torch.cuda.is_available():
        return None
    local = int(os.environ.get("LOCAL_RANK", rank))  # one GPU per rank of a node
    return f"cuda:{local % torch.cuda.device_count()}"


def _extract(args: argparse.Namespace) -> int:
    check_args(args)
    if args.backend == "onnx":
        if args.threads is not None and args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
    else:
        apply_threads(args.threads)
    rank, world = _shard() if args.list_file else (0, 1)
    items = []
    if args.list_file:
        _prepare_out_dir(Path(args.out_dir))
        items = read_list(Path(args.list_file), Path(args.out_dir))  # a bad CSV stops us before any model loads
    enrollment = read_enrollment(args.enrollment) if args.enrollment else None
    spec = enrollment_model(args.model, enrollment) if enrollment is not None else args.model
    if args.backend == "onnx":
        models = OnnxModels(spec, args.threads, args.shifts)
    else:
        models = ModelsByRate(spec, _device(args.device, rank, world), need_confidence=args.confidence,
                              shifts=args.shifts, precision=args.precision)
    if spec != "default":
        models(None)  # a bad name or folder is a usage error before any item runs
    if args.list_file:
        return run_list(args, items, models, rank, world)
    return run_single(args, models, enrollment)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``usef extract``; returns the exit code."""
    return run_command(build_parser(), argv, _extract)


if __name__ == "__main__":
    sys.exit(main())
