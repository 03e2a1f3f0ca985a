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

The list's files (reading pairs.csv, keeping failures.csv and confidence.csv, merging the
ranks' files) are in :mod:`usef.bin.extract_files`; this module re-exports what callers use.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import math
import os
import sys
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from usef.bin import (
    HelpFormatter,
    ModelsByRate,
    UsageError,
    add_threads_option,
    apply_threads,
    check_output_file,
    rate_of,
    run_command,
)
from usef.bin.extract_files import (  # noqa: F401 (_id_problem is only re-exported, for callers)
    CONFIDENCE_FIELDS,
    CONFIDENCE_NAME,
    FAILURE_FIELDS,
    FAILURES_NAME,
    Item,
    _failure,
    _id_problem,
    _merge_failures,
    _report_failures,
    _wait_for_ranks,
    _write_csv,
    read_list,
    update_failures,
)

if TYPE_CHECKING:
    from usef.enrollment import Enrollment

logger = logging.getLogger("usef.extract")

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
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    parser.add_argument("--float", dest="float_wav", action="store_true",
                        help="write 32-bit float WAV instead of 16-bit PCM")
    parser.add_argument("--barrier-timeout", type=float, default=3600.0,
                        help="seconds rank 0 waits for the other ranks (sharded runs)")
    parser.add_argument("--confidence", action="store_true",
                        help="score how sure the model is that each output is the enrolled talker "
                             "(printed, or confidence.csv in list mode)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="torch, or onnx: --model is a folder written by `usef export MODEL --onnx DIR`, "
                             "run with onnxruntime on the CPU (pip install 'usef[onnx]'; no enrollments or "
                             "embeddings)")
    add_threads_option(parser)
    return parser


class OnnxModels:
    """:class:`ModelsByRate`'s interface for ``--backend onnx``: one exported folder for every item,
    an :class:`usef.onnx_runtime.OnnxExtractor` loaded once (``--threads`` are onnxruntime's)."""

    def __init__(self, spec: str, threads: int | None = None) -> None:
        self.spec, self.device, self.threads = spec, None, threads
        self._extractor = None

    def __call__(self, sample_rate: int | None):
        if self._extractor is None:
            from usef.onnx_runtime import OnnxExtractor  # lazy: keeps --help fast

            try:
                self._extractor = OnnxExtractor(self.spec, threads=self.threads)
            except Exception as exc:
                raise UsageError(f"cannot load ONNX model {self.spec!r}: {type(exc).__name__}: {exc}") from exc
        return self._extractor


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _load(item: Item):
    from usef import audio

    mixture, mix_rate = audio.load_audio(item.mixture, "mixture")
    reference, ref_rate = (audio.load_audio(item.reference, "reference")
                           if item.reference else (None, None))
    return mixture, mix_rate, reference, ref_rate


def read_enrollment(path: str) -> Enrollment:
    """:meth:`usef.enrollment.Enrollment.load`, with a missing or invalid file a :class:`UsageError`."""
    from usef.enrollment import Enrollment  # lazy: keeps --help fast

    try:
        return Enrollment.load(path)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from exc


def enrollment_model(spec: str, enrollment: Enrollment) -> str:
    """The model spec for an enrollment: ``--model default`` becomes the bundled model that made
    it (the only model it is valid for); any other spec stays (and is checked at use)."""
    if spec != "default":
        return spec
    from usef.hub import list_models  # lazy: keeps --help fast

    return enrollment.model_name if enrollment.model_name in list_models() else spec


def is_complete_output(path: Path) -> bool:
    """True when ``path`` is audio whose header reads and holds at least one frame.

    Outputs are written atomically, but a file planted, truncated or emptied by something
    else must not pass for a finished item on a resumed run.
    """
    import soundfile

    if not path.is_file():
        return False
    try:
        return soundfile.info(str(path)).frames > 0
    except (RuntimeError, soundfile.SoundFileError, OSError, ValueError):
        return False


def _remove_stale_temporaries(out_dir: Path, item_id: str) -> None:
    for stale in glob.glob(str(out_dir / f".{glob.escape(item_id)}.wav.*.tmp")):
        with contextlib.suppress(FileNotFoundError):  # another run may have cleaned it first
            os.unlink(stale)  # left by a killed run


def run_items(items: list[Item], models: ModelsByRate, out_dir: Path, args: argparse.Namespace,
              desc: str = "", scores: list[dict] | None = None) -> list[dict]:
    """Extract every item (reading/writing in threads); returns the failure rows. With
    ``args.confidence`` each written item's confidence row is appended to ``scores``.

    Raises:
        UsageError: a model cannot be loaded (configuration, not an item's fault).
    """
    from tqdm import tqdm

    from usef import audio

    failures: list[dict] = []
    todo = []
    kept = 0
    for item in items:
        if item.problem:
            failures.append(_failure(item, item.problem))
            continue
        output = out_dir / f"{item.id}.wav"
        try:
            _remove_stale_temporaries(out_dir, item.id)
            if not args.overwrite and output.exists():
                if is_complete_output(output):
                    kept += 1
                    continue
                logger.info("%s: existing output is empty or unreadable; extracting it again", output)
        except OSError as exc:  # e.g. a name the file system refuses: this item only
            failures.append(_failure(item, _error_text(exc)))
            continue
        todo.append(item)
    if kept:
        logger.info("%d output(s) exist already and are kept (--overwrite redoes them)", kept)
    jobs = args.jobs
    # many rows usually share one speaker's enrollment: each file is read once per run
    enrollments: dict[str, Enrollment | ValueError] = {}
    by_name: dict[str, ModelsByRate] = {}

    def condition_for(item: Item, mix_rate: int) -> tuple[object, Enrollment | None]:
        """(extractor, reference-or-enrollment) of an item; raises for a bad enrollment file."""
        if not item.enrollment:
            return models(mix_rate), None
        if item.enrollment not in enrollments:
            try:
                enrollments[item.enrollment] = read_enrollment(item.enrollment)
            except UsageError as exc:  # one bad row, not a bad command line
                enrollments[item.enrollment] = ValueError(str(exc))
        enrollment = enrollments[item.enrollment]
        if isinstance(enrollment, Exception):
            raise enrollment
        spec = enrollment_model(models.spec, enrollment)
        if spec == models.spec:
            return models(mix_rate), enrollment
        if spec not in by_name:
            by_name[spec] = ModelsByRate(spec, models.device)
        return by_name[spec](mix_rate), enrollment

    progress = tqdm(total=len(todo), desc=desc or "extract", unit="item", disable=None)
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            pending, writes = deque(), deque()
            queue = iter(todo)

            def refill() -> None:
                while len(pending) < 2 * jobs:
                    item = next(queue, None)
                    if item is None:
                        return
                    pending.append((item, pool.submit(_load, item)))

            def settle(limit: int) -> None:
                while len(writes) > limit:
                    item, model_name, rate, future = writes.popleft()
                    try:
                        future.result()
                        logger.info("%s: %s (%d Hz input)", item.id, model_name, rate)
                    except Exception as exc:  # noqa: BLE001 -- an item failure never stops the run
                        failures.append(_failure(item, _error_text(exc), model_name))
                    progress.update(1)

            refill()
            while pending:
                item, future = pending.popleft()
                refill()
                try:
                    mixture, mix_rate, reference, ref_rate = future.result()
                except Exception as exc:  # noqa: BLE001 -- recorded in failures.csv
                    failures.append(_failure(item, _error_text(exc)))
                    progress.update(1)
                    continue
                try:
                    # per item: --model default follows each input's rate (or its enrollment's model)
                    extractor, enrollment = condition_for(item, mix_rate)
                except ValueError as exc:  # an unreadable enrollment file: recorded in failures.csv
                    failures.append(_failure(item, _error_text(exc)))
                    progress.update(1)
                    continue
                try:
                    estimate = extractor.extract(
                        mixture, reference if enrollment is None else enrollment, embedding=item.embedding or None,
                        sample_rate=mix_rate,
                        reference_sample_rate=ref_rate, chunk_seconds=args.chunk_seconds,
                        **({"return_confidence": True} if args.confidence else {}))
                    if args.confidence:
                        estimate, score = estimate
                        scores.append({"id": item.id, "model": extractor.name, "confidence": f"{score:.4f}",
                                       "threshold": extractor.confidence_map().threshold})
                except Exception as exc:  # noqa: BLE001 -- recorded in failures.csv
                    failures.append(_failure(item, _error_text(exc), extractor.name))
                    progress.update(1)
                    continue
                writes.append((item, extractor.name, mix_rate,
                               pool.submit(audio.write_audio, out_dir / f"{item.id}.wav", estimate, mix_rate,
                                           float_wav=args.float_wav)))
                settle(2 * jobs)
            settle(0)
    finally:
        progress.close()
    return sorted(failures, key=lambda row: row["row"])


def _prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out-dir {out_dir} exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --out-dir {out_dir}: {exc}") from exc


def _shard() -> tuple[int, int]:
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as exc:
        raise UsageError(f"RANK and WORLD_SIZE must be integers ({exc})") from None
    if not 0 <= rank < world:
        raise UsageError(f"RANK={rank} is not within WORLD_SIZE={world}")
    return rank, world


def run_list(args: argparse.Namespace, items: list[Item], models: ModelsByRate, rank: int = 0,
             world: int = 1) -> int:
    """List mode over the rows of :func:`read_list`; returns the exit code (0 all done, 1 some
    items failed)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    out_dir = Path(args.out_dir)
    marker = out_dir / f".done.rank{rank}"
    marker.unlink(missing_ok=True)  # stale marker of an earlier, crashed run
    shard = [item for item in items if item.row % world == rank]
    scores: list[dict] = []
    with logging_redirect_tqdm():  # log lines go above the progress bar instead of through it
        failures = run_items(shard, models, out_dir, args, f"rank {rank}" if world > 1 else "", scores)
    if args.confidence:  # rows of items kept from earlier runs stay; the lock serialises ranks
        update_failures(out_dir, {row["id"] for row in scores} | {row["id"] for row in failures}, scores,
                        CONFIDENCE_NAME, CONFIDENCE_FIELDS)
    owned = {item.id for item in items}
    if world == 1:
        return _report_failures(out_dir, failures, update_failures(out_dir, owned, failures))
    _write_csv(out_dir / f"failures.rank{rank}.csv", failures, ["row"] + FAILURE_FIELDS)
    marker.touch()
    if rank != 0:
        return 1 if failures else 0
    missing = _wait_for_ranks(out_dir, world, args.barrier_timeout)
    if missing:
        print(f"usef extract: error: ranks {missing} did not finish within "
              f"{args.barrier_timeout:.0f} s; {FAILURES_NAME} not merged", file=sys.stderr)
        return 1
    failures = _merge_failures(out_dir, world)
    others = update_failures(out_dir, owned, failures)
    for k in range(world):
        (out_dir / f"failures.rank{k}.csv").unlink(missing_ok=True)
        (out_dir / f".done.rank{k}").unlink(missing_ok=True)
    return _report_failures(out_dir, failures, others)


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
        models = OnnxModels(spec, args.threads)
    else:
        models = ModelsByRate(spec, _device(args.device, rank, world))
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
