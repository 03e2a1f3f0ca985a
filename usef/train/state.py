"""Training-state checkpoints, RNG capture and the run log.

Layout of an experiment directory::

    EXP/config.yaml                 resolved training config of the last start
    EXP/checkpoints/step_<n>/       model.safetensors + config.yaml (save_pretrained),
                                    train_state.pt (optimizer, scheduler, RNG of every rank,
                                    data position; with train.ema_decay the raw weights,
                                    while model.safetensors holds their average), meta.json
                                    (step, dev metrics)
    EXP/best/ + EXP/best.json       best checkpoint by dev SI-SDRi (save_pretrained folder)
    EXP/log.jsonl + EXP/log.csv     one record per logged step / dev evaluation

A checkpoint directory is written under a temporary name, every file fsync'ed, and then
renamed, so ``step_<n>/`` either exists complete or not at all (a SIGKILL mid-write leaves
only a ``.step_*`` temporary that the next start removes). ``train_state.pt`` holds only
tensors, primitives, lists and dicts, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import pickle
import random
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usef.atomic_io import write_text_atomic as _write_text_atomic

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
META_FILE = "meta.json"
STATE_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")
LOG_COLUMNS = (
    "step", "loss", "lr", "grad_norm", "step_time", "examples_per_s",
    "dev_si_sdr", "dev_si_sdr_imp", "dev_failure_rate", "dev_confusion_rate",
)


# --------------------------------------------------------------------------- RNG state
def capture_rng_state() -> dict[str, Any]:
    """Snapshot of the python, numpy (legacy global), torch CPU and CUDA generators,
    as tensors and primitives only."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            logger.warning("saved CUDA RNG states for %d devices, %d visible: CUDA RNG not restored",
                           len(cuda), torch.cuda.device_count())


@contextlib.contextmanager
def rng_scope(seed: int | None = None) -> Iterator[None]:
    """Run a block with its own global RNG states and put the caller's back afterwards.

    The trainer seeds and restores the process-wide generators (model init, dropout and
    DataLoader workers draw from them); doing it inside this scope keeps library callers'
    RNG state untouched.
    """
    saved = capture_rng_state()
    try:
        if seed is not None:
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
        yield
    finally:
        restore_rng_state(saved)


# --------------------------------------------------------------------------- file helpers
def _fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(str(path), flags)
    except OSError:  # some platforms cannot open directories; durability is best effort there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file, fsync and rename (and fsync the folder)."""
    path = _write_text_atomic(path, text)
    _fsync_path(path.parent)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename directory ``tmp`` to ``final``, replacing an existing ``final``."""
    trash = None
    if final.exists():
        trash = final.with_name(f".trash_{final.name}_{os.getpid()}")
        os.rename(final, trash)
    os.rename(tmp, final)
    _fsync_path(final.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


# --------------------------------------------------------------------------- checkpoints
def checkpoint_dir(exp_dir: Path) -> Path:
    return Path(exp_dir) / "checkpoints"


def list_checkpoints(exp_dir: Path) -> list[Path]:
    """Complete ``step_<n>`` checkpoint directories of ``exp_dir``, oldest first."""
    root = checkpoint_dir(exp_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def latest_checkpoint(exp_dir: Path) -> Path | None:
    ckpts = list_checkpoints(exp_dir)
    return ckpts[-1] if ckpts else None


def remove_incomplete(exp_dir: Path) -> None:
    """Delete temporaries left by a run killed while writing a checkpoint."""
    root = checkpoint_dir(exp_dir)
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith("."):
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()


def save_checkpoint(
    exp_dir: Path,
    step: int,
    save_model: Callable[[Path], None],
    train_state: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Atomically write ``EXP/checkpoints/step_<step>/``.

    ``save_model(directory)`` writes the weights (``model.save_pretrained``);
    ``train_state`` goes to ``train_state.pt``; ``meta`` (JSON) to ``meta.json``.
    """
    root = checkpoint_dir(exp_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step}.", dir=str(root)))
    try:
        save_model(tmp)
        torch.save({"version": STATE_VERSION, **train_state}, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
        for child in tmp.iterdir():
            _fsync_path(child)
        _fsync_path(tmp)
        final = root / f"step_{step}"
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_train_state(checkpoint: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load ``train_state.pt`` of a checkpoint directory (weights_only, no arbitrary pickle)."""
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} has no {STATE_FILE}")
    # what to do is the same for every way the file can be bad, so every message says it
    remedy = (f"move the checkpoint folder {checkpoint} aside to resume from the one before it, "
              f"or start without --resume")
    try:
        # weights_only: a tampered file can at most fail to load, never run code
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError,
            KeyError, IndexError, zipfile.BadZipFile, UnicodeDecodeError, OSError) as error:
        # only the type: torch's own text suggests weights_only=False, the one thing not to do
        raise ValueError(f"{path}: corrupt or not a training state written by usef train "
                         f"({type(error).__name__}); {remedy}") from error
    if not isinstance(state, dict):  # a bad file, not a bad argument: the same ValueError as above
        raise ValueError(  # noqa: TRY004
            f"{path}: expected a training-state mapping, found {type(state).__name__}; {remedy}")
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: unsupported train-state version {state.get('version')!r}; {remedy}")
    return state


def read_meta(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / META_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def dev_score(meta: dict[str, Any]) -> float | None:
    """Dev SI-SDRi recorded in a checkpoint's meta, or None."""
    dev = meta.get("dev") or {}
    value = dev.get("si_sdr_imp")
    return None if value is None or not np.isfinite(value) else float(value)


def prune_checkpoints(exp_dir: Path, keep_last: int, keep_best: int = 0) -> list[Path]:
    """Delete checkpoints except the newest ``keep_last`` and the ``keep_best`` best by dev
    SI-SDRi (kept so that ``usef.bin.average --best N`` still finds them). Returns removed."""
    ckpts = list_checkpoints(exp_dir)
    keep = set(ckpts[-keep_last:]) if keep_last > 0 else set()
    scored = [(dev_score(read_meta(c)), c) for c in ckpts]
    scored = sorted([(s, c) for s, c in scored if s is not None], key=lambda x: -x[0])
    keep.update(c for _, c in scored[:max(keep_best, 0)])
    removed = [c for c in ckpts if c not in keep]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def update_best(exp_dir: Path, checkpoint: Path, record: dict[str, Any]) -> None:
    """Make ``EXP/best/`` a copy of the model files of ``checkpoint`` and write ``best.json``."""
    exp_dir = Path(exp_dir)
    tmp = Path(tempfile.mkdtemp(prefix=".best.", dir=str(exp_dir)))
    try:
        for child in Path(checkpoint).iterdir():
            if child.is_file() and child.name not in (STATE_FILE, META_FILE):
                shutil.copy2(child, tmp / child.name)
                _fsync_path(tmp / child.name)
        _replace_dir(tmp, exp_dir / "best")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(exp_dir / "best.json", json.dumps(record, indent=1, sort_keys=True))


def read_best(exp_dir: Path) -> dict[str, Any] | None:
    path = Path(exp_dir) / "best.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# --------------------------------------------------------------------------- run log
class RunLog:
    """Append-only ``log.jsonl`` plus a ``log.csv`` view with fixed columns."""

    def __init__(self, exp_dir: Path) -> None:
        self.jsonl = Path(exp_dir) / "log.jsonl"
        self.csv = Path(exp_dir) / "log.csv"

    def records(self) -> list[dict[str, Any]]:
        if not self.jsonl.is_file():
            return []
        out = []
        for line in self.jsonl.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut by a kill
                out.append(json.loads(line))
        return out

    def truncate(self, step: int) -> None:
        """Drop records after ``step`` (progress a killed run made past its last checkpoint)."""
        kept = [r for r in self.records() if int(r.get("step", 0)) <= step]
        write_text_atomic(self.jsonl, "".join(json.dumps(r) + "\n" for r in kept))
        rows = [",".join(_csv_cell(r.get(c)) for c in LOG_COLUMNS) for r in kept]
        write_text_atomic(self.csv, "\n".join([",".join(LOG_COLUMNS), *rows]) + "\n")

    def append(self, record: dict[str, Any]) -> None:
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        with self.jsonl.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        new = not self.csv.is_file()
        with self.csv.open("a", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(LOG_COLUMNS)
            writer.writerow([_csv_cell(record.get(c)) for c in LOG_COLUMNS])


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)

