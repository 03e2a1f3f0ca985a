"""The files of ``usef extract --list``: the pairs CSV it reads and the CSVs it keeps.

:func:`read_list` turns the CSV into :class:`Item` rows (a bad row gets a ``problem``, not an
exception); ``failures.csv`` and ``confidence.csv`` are rewritten atomically and under a folder
lock, so runs of other lists sharing the output folder keep their rows; sharded runs merge
their per-rank failure files here. Enrollment files (``--enrollment``, or a list's enrollment
column) are read by :func:`read_enrollment`, in both modes. None of it runs a model: kept apart
from :mod:`usef.bin.extract`, which does, and re-exports what its callers use.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from usef.bin import UsageError

if TYPE_CHECKING:
    from usef.enrollment import Enrollment

# the command's own logger: these lines read as usef extract's, as they did before the split
logger = logging.getLogger("usef.extract")

FAILURES_NAME = "failures.csv"
FAILURE_FIELDS = ["id", "mixture", "reference", "model", "error"]
CONFIDENCE_NAME = "confidence.csv"
CONFIDENCE_FIELDS = ["id", "model", "confidence", "threshold"]
# usef.audio.write_audio writes ".<name>.<12 hex>.tmp" first: 18 bytes more than the name
_TMP_NAME_EXTRA = 18


@dataclass
class Item:
    row: int  # 0-based data row; the shard key
    id: str
    mixture: str
    reference: str
    embedding: str
    enrollment: str = ""  # a file written by `usef enroll`, instead of reference/embedding
    problem: str | None = None


def _name_max(folder: Path) -> int:
    """Longest file name (bytes) the folder's file system takes; 255 when it cannot tell."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no such folder yet, or no pathconf (Windows)
        return 255


def _id_problem(item_id: str, out_dir: Path, name_max: int = 255) -> str | None:
    if not item_id:
        return "empty id"
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if any(sep in item_id for sep in separators) or "\x00" in item_id:
        return f"id {item_id!r} contains a path separator"
    if item_id.startswith(".") or (os.name == "nt" and ":" in item_id):
        return f"id {item_id!r} must not start with '.' or name a drive"
    try:
        size = len(os.fsencode(f"{item_id}.wav"))
    except UnicodeError:
        return f"id {item_id!r} cannot be encoded as a file name here"
    if size + _TMP_NAME_EXTRA > name_max:
        # checked before any path operation: a too-long name fails every one of them
        return (f"id is too long for a file name: {item_id}.wav is {size} bytes, at most "
                f"{name_max - _TMP_NAME_EXTRA} fit ({name_max} less the temporary name)")
    target = (out_dir / f"{item_id}.wav").resolve()
    if target.parent != out_dir.resolve():
        return f"id {item_id!r} would write outside the output folder"
    return None


def read_list(path: Path, out_dir: Path) -> list[Item]:
    """Parse the CSV; rows with bad ids or missing fields get ``problem`` set.

    Raises:
        UsageError: unreadable file, no header or missing required columns.
    """
    if not path.is_file():
        raise UsageError(f"list file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            rows = [{(k or "").strip().lower(): (v or "").strip() if isinstance(v, str) else ""
                     for k, v in row.items()} for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path}: not a readable CSV file ({exc})") from None
    if "mixture" not in fields or not ({"reference", "embedding", "enrollment"} & set(fields)):
        raise UsageError(f"{path}: needs a header with columns mixture and reference "
                         f"(or embedding, or enrollment); found {fields or 'none'}")
    if not rows:
        raise UsageError(f"{path}: no rows")

    def resolve(value: str) -> str:
        return str(path.parent / value) if value and not os.path.isabs(value) else value

    name_max = _name_max(out_dir)
    items, seen = [], {}
    for row_index, row in enumerate(rows):
        mixture = resolve(row.get("mixture", ""))
        item = Item(row_index, row.get("id", "") or Path(mixture).stem, mixture,
                    resolve(row.get("reference", "")), resolve(row.get("embedding", "")),
                    resolve(row.get("enrollment", "")))
        if not mixture:
            item.problem = "empty mixture field"
        elif not item.reference and not item.embedding and not item.enrollment:
            item.problem = "neither reference nor embedding given" + (" nor enrollment" if "enrollment" in fields else "")
        elif item.enrollment and (item.reference or item.embedding):
            item.problem = "give an enrollment or a reference/embedding, not both"
        else:
            item.problem = _id_problem(item.id, out_dir, name_max)
        if item.problem is None:
            if item.id in seen:
                item.problem = f"duplicate id {item.id!r} (first on data row {seen[item.id] + 1})"
            else:
                seen[item.id] = row_index
        items.append(item)
    return items


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


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    # a temporary name of this process: two runs sharing the folder never write one file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _failure(item: Item, error: str, model: str = "") -> dict:
    return {"row": item.row, "id": item.id, "mixture": item.mixture,
            "reference": item.reference or item.embedding or item.enrollment, "model": model, "error": error}


def _wait_for_ranks(out_dir: Path, world: int, timeout: float) -> list[int]:
    """Poll the .done markers; returns the ranks still missing at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        missing = [k for k in range(world) if not (out_dir / f".done.rank{k}").exists()]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.2)


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        logger.warning("%s is unreadable (%s); writing it anew", path, exc)
        return []


def _merge_failures(out_dir: Path, world: int) -> list[dict]:
    rows = []
    for k in range(world):
        rows.extend(_read_rows(out_dir / f"failures.rank{k}.csv"))
    return sorted(rows, key=lambda row: int(row.get("row") or 0))


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (flock on its descriptor: no lock file is
    left behind). Serialises the read-modify-write of failures.csv between runs; where
    ``fcntl`` does not exist (Windows) it does nothing."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def update_failures(out_dir: Path, owned_ids: set[str], failures: list[dict],
                    name: str = FAILURES_NAME, fields: list[str] = FAILURE_FIELDS) -> int:
    """Replace the rows of ``owned_ids`` in ``out_dir/failures.csv`` (or another ``name`` with its
    ``fields``) with ``failures``.

    Rows of other ids (other lists' runs into the same folder) are kept; the file is deleted
    when no row is left. Returns the number of rows of other lists kept.
    """
    path = out_dir / name
    with _folder_lock(out_dir):
        others = [row for row in _read_rows(path) if row.get("id", "") not in owned_ids]
        rows = others + failures
        if rows:
            _write_csv(path, rows, fields)
        else:
            path.unlink(missing_ok=True)
    return len(others)


def _report_failures(out_dir: Path, failures: list[dict], others: int) -> int:
    if others:
        logger.info("%s keeps %d row(s) of other lists' runs", out_dir / FAILURES_NAME, others)
    if failures:
        print(f"usef extract: {len(failures)} item(s) failed; see {out_dir / FAILURES_NAME}", file=sys.stderr)
        return 1
    return 0
