"""List mode of ``usef extract``: every row of pairs.csv, threads for audio, ranks for shards.

:func:`run_items` extracts a list's items (reading and writing audio in threads, keeping
finished outputs of an earlier run, recording bad items instead of stopping); :func:`run_list`
runs a rank's shard of the list and keeps failures.csv and confidence.csv (their files:
:mod:`usef.bin.extract_files`). :mod:`usef.bin.extract` chooses the mode and re-exports these
names.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from usef.bin import ModelsByRate, UsageError
from usef.bin.extract_files import (
    CONFIDENCE_FIELDS,
    CONFIDENCE_NAME,
    FAILURE_FIELDS,
    FAILURES_NAME,
    Item,
    _failure,
    _merge_failures,
    _report_failures,
    _wait_for_ranks,
    _write_csv,
    enrollment_model,
    read_enrollment,
    update_failures,
)

if TYPE_CHECKING:
    from usef.enrollment import Enrollment

# the command's own logger: these lines read as usef extract's, as they did before the split
logger = logging.getLogger("usef.extract")

def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _load(item: Item):
    from usef import audio

    mixture, mix_rate = audio.load_audio(item.mixture, "mixture")
    reference, ref_rate = (audio.load_audio(item.reference, "reference")
                           if item.reference else (None, None))
    return mixture, mix_rate, reference, ref_rate


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
            by_name[spec] = ModelsByRate(spec, models.device, need_confidence=getattr(models, "need_confidence", False),
                                         **getattr(models, "options", {}))
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
