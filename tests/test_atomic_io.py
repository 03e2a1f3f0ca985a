"""Files the library writes are readable as open() would leave them (0o666 minus the umask)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import build_tiny, speechlike

import usef
from usef import evaluate_io
from usef.atomic_io import atomic_write
from usef.checkpoint import save_pretrained
from usef.train import state


def _expected_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def test_checkpoints_enrollments_results_and_state_get_the_umask_mode(tmp_path):
    # safetensors' save_file replaces the file it is given with a 0600 one, and mkstemp makes
    # 0600 files: both left model folders and results unreadable to other users
    directory = save_pretrained(build_tiny(), tmp_path / "model")
    extractor = usef.load_model(directory, device="cpu")
    enrollment = extractor.enroll([speechlike(1.0, 8000, seed=1)], sample_rate=8000)
    written = [
        directory / "model.safetensors",
        directory / "config.yaml",
        enrollment.save(tmp_path / "speaker.enroll"),
    ]
    evaluate_io.write_text_atomic(tmp_path / "metrics.csv", "id\n1\n")
    evaluate_io._write_wav_atomic(tmp_path / "estimate.wav", np.zeros(800, np.float32), 8000)
    state.write_text_atomic(tmp_path / "state" / "meta.json", "{}")
    written += [tmp_path / "metrics.csv", tmp_path / "estimate.wav", tmp_path / "state" / "meta.json"]
    for path in written:
        assert path.stat().st_mode & 0o777 == _expected_mode(), path
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_a_failed_write_leaves_neither_the_target_nor_a_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def broken(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]
