"""Atomic file writes that leave files readable as ``open()`` would.

Every file the library writes (checkpoints, enrollments, audio, evaluation results, plots, training
state) goes through a temporary file in the destination folder and a rename, so a reader never
sees half a file. The temporary file is created with mode ``0o666`` minus the process umask, as
``open()`` creates files, and that mode is set again after writing, because some writers
(safetensors' ``save_file``) replace the file they are given and ``tempfile.mkstemp`` makes
``0o600`` files: either would leave a model folder on a shared machine unreadable to the
other users.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "write_text_atomic"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], object], *, suffix: str = ".tmp",
                 fsync: bool = True) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file to ``path``.

    ``suffix`` ends the temporary name (writers that infer a format from it need the right one).
    The parent folder is created. On any error the temporary file is removed and the error
    re-raised; ``path`` is then untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}{suffix}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        mode = os.fstat(fd).st_mode & 0o777  # 0o666 minus the umask
    finally:
        os.close(fd)
    try:
        write(str(tmp))
        os.chmod(tmp, mode)
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str, *, newline: str | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline=newline) as handle:
            handle.write(text)

    return atomic_write(path, write)
