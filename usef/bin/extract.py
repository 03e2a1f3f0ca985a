"""``usef extract``: one mixture/reference pair, or a CSV list of them.

List mode writes ``DIR/<id>.wav`` (at the mixture's rate) atomically, skips
outputs that already exist (so a killed run resumes), records bad items in
``DIR/failures.csv`` and keeps going. Exit codes: 0 all done, 1 some items
failed, 2 usage or configuration error (bad arguments or CSV, unknown model).

Sharded runs: under ``torchrun`` (or with RANK/WORLD_SIZE set by hand) rank k
takes the rows i with i % WORLD_SIZE == k and writes ``failures.rank<k>.csv``
and a ``.done.rank<k>`` marker; rank 0 waits for every marker, then merges the
per-rank failures into ``failures.csv``. No process group is needed.
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from usef.bin import UsageError, rate_of

EPILOG = """examples:
  usef extract mixture.wav enrolment.wav -o target.wav --model exp/usef/best
  usef extract --list pairs.csv --out-dir out/ --model exp/usef/best --jobs 4
  torchrun --nproc_per_node=4 -m usef.bin.extract --list pairs.csv --out-dir out/ --model exp/usef/best

pairs.csv has a header with columns mixture, reference (or embedding: a .npy
speaker vector) and optionally id (default: the mixture's file name without
extension). Relative paths are resolved against the CSV's folder.
"""

FAILURE_FIELDS = ["id", "mixture", "reference", "error"]


@dataclass
class Item:
    row: int  # 0-based data row; the shard key
    id: str
    mixture: str
    reference: str
    embedding: str
    problem: str | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usef extract",
        description="Extract the reference talker from mixtures.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("mixture", nargs="?", help="mixture audio file (single-pair mode)")
    parser.add_argument("reference", nargs="?", help="reference (enrolment) audio file")
    parser.add_argument("-o", "--output", help="output .wav (single-pair mode)")
    parser.add_argument("--embedding", help=".npy speaker vector instead of a reference")
    parser.add_argument("--list", dest="list_file", help="CSV of pairs (list mode)")
    parser.add_argument("--out-dir", help="output folder (list mode)")
    parser.add_argument("--model", default="default",
                        help="bundled model name or save_pretrained directory (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if available)")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                        help="threads reading and writing audio (default: %(default)s)")
    parser.add_argument("--chunk-seconds", type=float, default=None,
                        help="process mixtures longer than this in chunks (default 20)")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    parser.add_argument("--float", dest="float_wav", action="store_true",
                        help="write 32-bit float WAV instead of 16-bit PCM")
    parser.add_argument("--barrier-timeout", type=float, default=3600.0,
                        help="seconds rank 0 waits for the other ranks (default: %(default)s)")
    return parser


def _id_problem(item_id: str, out_dir: Path) -> str | None:
    if not item_id:
        return "empty id"
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if any(sep in item_id for sep in separators) or "\x00" in item_id:
        return f"id {item_id!r} contains a path separator"
    if item_id.startswith(".") or (os.name == "nt" and ":" in item_id):
        return f"id {item_id!r} must not start with '.' or name a drive"
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
    if "mixture" not in fields or not ({"reference", "embedding"} & set(fields)):
        raise UsageError(f"{path}: needs a header with columns mixture and reference "
                         f"(or embedding); found {fields or 'none'}")
    if not rows:
        raise UsageError(f"{path}: no rows")

    def resolve(value: str) -> str:
        return str(path.parent / value) if value and not os.path.isabs(value) else value

    items, seen = [], {}
    for row_index, row in enumerate(rows):
        mixture = resolve(row.get("mixture", ""))
        item = Item(row_index, row.get("id", "") or Path(mixture).stem, mixture,
                    resolve(row.get("reference", "")), resolve(row.get("embedding", "")))
        if not mixture:
            item.problem = "empty mixture field"
        elif not item.reference and not item.embedding:
            item.problem = "neither reference nor embedding given"
        else:
            item.problem = _id_problem(item.id, out_dir)
        if item.problem is None:
            if item.id in seen:
                item.problem = f"duplicate id {item.id!r} (first on data row {seen[item.id] + 1})"
            else:
                seen[item.id] = row_index
        items.append(item)
    return items


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _failure(item: Item, error: str) -> dict:
    return {"row": item.row, "id": item.id, "mixture": item.mixture,
            "reference": item.reference or item.embedding, "error": error}


def _load(item: Item):
    from usef import audio

    mixture, mix_rate = audio.load_audio(item.mixture, "mixture")
    reference, ref_rate = (audio.load_audio(item.reference, "reference")
                           if item.reference else (None, None))
    return mixture, mix_rate, reference, ref_rate


def run_items(items: list[Item], extractor, out_dir: Path, args, desc: str = "") -> list[dict]:
    """Extract every item (reading/writing in threads); returns the failure rows."""
    from tqdm import tqdm

    from usef import audio

    failures: list[dict] = []
    todo = []
    for item in items:
        if item.problem:
            failures.append(_failure(item, item.problem))
            continue
        for stale in glob.glob(str(out_dir / f".{glob.escape(item.id)}.wav.*.tmp")):
            os.unlink(stale)  # left by a killed run
        if args.overwrite or not (out_dir / f"{item.id}.wav").exists():
            todo.append(item)
    jobs = max(1, args.jobs)
    progress = tqdm(total=len(todo), desc=desc or "extract", unit="item", disable=None)
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
                item, future = writes.popleft()
                try:
                    future.result()
                except Exception as exc:  # noqa: BLE001 -- an item failure never stops the run
                    failures.append(_failure(item, f"{type(exc).__name__}: {exc}"))
                progress.update(1)

        refill()
        while pending:
            item, future = pending.popleft()
            refill()
            try:
                mixture, mix_rate, reference, ref_rate = future.result()
                estimate = extractor.extract(
                    mixture, reference, embedding=item.embedding or None, sample_rate=mix_rate,
                    reference_sample_rate=ref_rate, chunk_seconds=args.chunk_seconds)
            except Exception as exc:  # noqa: BLE001 -- recorded in failures.csv
                failures.append(_failure(item, f"{type(exc).__name__}: {exc}"))
                progress.update(1)
                continue
            writes.append((item, pool.submit(audio.write_audio, out_dir / f"{item.id}.wav",
                                             estimate, mix_rate, float_wav=args.float_wav)))
            settle(2 * jobs)
        settle(0)
    progress.close()
    return sorted(failures, key=lambda row: row["row"])


def _wait_for_ranks(out_dir: Path, world: int, timeout: float) -> list[int]:
    """Poll the .done markers; returns the ranks still missing at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        missing = [k for k in range(world) if not (out_dir / f".done.rank{k}").exists()]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.2)


def _merge_failures(out_dir: Path, world: int) -> list[dict]:
    rows = []
    for k in range(world):
        path = out_dir / f"failures.rank{k}.csv"
        if path.exists():
            with open(path, newline="", encoding="utf-8") as handle:
                rows.extend(csv.DictReader(handle))
    return sorted(rows, key=lambda row: int(row.get("row") or 0))


def _finish_failures(out_dir: Path, failures: list[dict]) -> None:
    path = out_dir / "failures.csv"
    if failures:
        _write_csv(path, failures, FAILURE_FIELDS)
    elif path.exists():
        path.unlink()  # stale: every item is done now


def run_list(args, extractor_factory) -> int:
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not 0 <= rank < world:
        raise UsageError(f"RANK={rank} is not within WORLD_SIZE={world}")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = read_list(Path(args.list_file), out_dir)
    marker = out_dir / f".done.rank{rank}"
    marker.unlink(missing_ok=True)  # stale marker of an earlier, crashed run
    first = next((item.mixture for item in items if not item.problem), None)
    extractor = extractor_factory(rank, world, first)
    shard = [item for item in items if item.row % world == rank]
    failures = run_items(shard, extractor, out_dir, args, f"rank {rank}" if world > 1 else "")
    if world == 1:
        _finish_failures(out_dir, failures)
    else:
        _write_csv(out_dir / f"failures.rank{rank}.csv", failures, ["row"] + FAILURE_FIELDS)
        marker.touch()
        if rank == 0:
            missing = _wait_for_ranks(out_dir, world, args.barrier_timeout)
            if missing:
                print(f"usef extract: error: ranks {missing} did not finish within "
                      f"{args.barrier_timeout:.0f} s; failures.csv not merged", file=sys.stderr)
                return 1
            failures = _merge_failures(out_dir, world)
            _finish_failures(out_dir, failures)
            for k in range(world):
                (out_dir / f"failures.rank{k}.csv").unlink(missing_ok=True)
                (out_dir / f".done.rank{k}").unlink(missing_ok=True)
    if failures:
        where = out_dir / "failures.csv"  # rank 0 merges the per-rank files into it
        print(f"usef extract: {len(failures)} item(s) failed; see {where}", file=sys.stderr)
        return 1
    return 0


def run_single(args, extractor) -> int:
    from usef import audio

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        print(f"usef extract: {output} exists; use --overwrite to redo it", file=sys.stderr)
        return 0
    try:
        mixture, mix_rate = audio.load_audio(args.mixture, "mixture")
        reference, ref_rate = (audio.load_audio(args.reference, "reference")
                               if args.reference else (None, None))
        estimate = extractor.extract(mixture, reference, embedding=args.embedding,
                                     sample_rate=mix_rate, reference_sample_rate=ref_rate,
                                     chunk_seconds=args.chunk_seconds)
        audio.write_audio(output, estimate, mix_rate, float_wav=args.float_wav)
    except (ValueError, OSError) as exc:
        print(f"usef extract: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _check_args(args, parser: argparse.ArgumentParser) -> None:
    if args.list_file:
        if args.mixture or args.reference or args.output or args.embedding:
            parser.error("--list takes no positional files, -o or --embedding (use --out-dir)")
        if not args.out_dir:
            parser.error("--list needs --out-dir")
    else:
        if not args.mixture:
            parser.error("give MIXTURE REFERENCE -o OUT.wav, or --list pairs.csv --out-dir DIR")
        if not args.reference and not args.embedding:
            parser.error("give a REFERENCE file (or --embedding for embedding models)")
        if args.reference and args.embedding:
            parser.error("give either REFERENCE or --embedding, not both")
        if not args.output:
            parser.error("single-pair mode needs -o OUT.wav")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.chunk_seconds is not None and args.chunk_seconds <= 0:
        parser.error("--chunk-seconds must be positive")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``usef extract``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(args, parser)

    def make_extractor(rank: int = 0, world: int = 1, first_mixture: str | None = None):
        import torch

        from usef.api import load_model

        # the default model depends on the input rate
        rate = rate_of(first_mixture) if args.model == "default" and first_mixture else None

        device = args.device
        if device is None and world > 1 and torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", rank))
            device = f"cuda:{local % torch.cuda.device_count()}"
        try:
            return load_model(args.model, device=device, sample_rate=rate)
        except (ValueError, OSError) as exc:
            raise UsageError(str(exc)) from None

    try:
        if args.list_file:
            return run_list(args, make_extractor)
        return run_single(args, make_extractor(0, 1, args.mixture))
    except UsageError as exc:
        print(f"usef extract: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
