"""`usef extract` end to end (subprocesses in tmp_path) and the `usef` dispatcher."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import speechlike

from usef import __version__
from usef.bin import main as usef_main
from usef.bin.extract import _id_problem, read_list

REPO = Path(__file__).resolve().parents[1]


def usef_cli(*args: str, env: dict | None = None, wait: bool = True):
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    full_env = {**os.environ, "PYTHONPATH": python_path, **(env or {})}
    command = [sys.executable, "-m", "usef.bin.main", *map(str, args)]
    if not wait:
        return subprocess.Popen(command, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, check=False, env=full_env, capture_output=True, text=True, timeout=180)


def make_list(root: Path, rows: list[dict]) -> Path:
    """Audio under root/audio, the CSV in root with paths relative to it."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    for i, rate in enumerate((8000, 16000, 8000, 11025)):
        sf.write(root / "audio" / f"mix{i}.wav", speechlike(0.6 + 0.1 * i, rate, seed=i), rate)
        sf.write(root / "audio" / f"ref{i}.wav", speechlike(0.8, rate, seed=10 + i), rate)
    (root / "audio" / "broken.wav").write_bytes(b"RIFF not really a wave file" * 8)
    path = root / "pairs.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "mixture", "reference"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def good_rows(n: int = 4) -> list[dict]:
    return [{"id": f"utt{i}", "mixture": f"audio/mix{i}.wav", "reference": f"audio/ref{i}.wav"} for i in range(n)]


def outputs(directory: Path) -> dict[str, np.ndarray]:
    return {p.name: sf.read(p, dtype="int16")[0] for p in sorted(directory.glob("*.wav"))}


def read_failures(directory: Path) -> dict[str, str]:
    with open(directory / "failures.csv", newline="") as handle:
        return {row["id"]: row["error"] for row in csv.DictReader(handle)}


def test_version_and_help():
    result = usef_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"usef {__version__}"
    result = usef_cli("extract", "--help")
    assert result.returncode == 0
    assert "usef extract --list pairs.csv --out-dir out/" in result.stdout


def test_single_pair_writes_at_the_mixture_rate(tmp_path, tiny_model_dir):
    make_list(tmp_path, good_rows())
    out = tmp_path / "est.wav"
    result = usef_cli("extract", tmp_path / "audio/mix1.wav", tmp_path / "audio/ref1.wav", "-o", out,
                      "--model", tiny_model_dir, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    info, mix_info = sf.info(out), sf.info(tmp_path / "audio/mix1.wav")
    assert (info.samplerate, info.frames) == (16000, mix_info.frames)


def test_list_failures_and_sharded_run_match_single_run(tmp_path, tiny_model_dir):
    rows = good_rows() + [
        {"id": "bad", "mixture": "audio/broken.wav", "reference": "audio/ref0.wav"},
        {"id": "../escape", "mixture": "audio/mix0.wav", "reference": "audio/ref0.wav"},
        {"id": "utt1", "mixture": "audio/mix2.wav", "reference": "audio/ref2.wav"},
    ]
    pairs = make_list(tmp_path, rows)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    result = usef_cli("extract", "--list", pairs, "--out-dir", single, "--model", tiny_model_dir,
                      "--device", "cpu", "--jobs", "2")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(outputs(single)) == [f"utt{i}.wav" for i in range(4)]
    failures = read_failures(single)
    assert set(failures) == {"bad", "../escape", "utt1"}
    assert "mixture" in failures["bad"] and "separator" in failures["../escape"]
    assert "duplicate" in failures["utt1"]
    assert not (tmp_path / "escape.wav").exists()
    for i in range(4):  # each output has its mixture's rate and length
        mix, out = sf.info(tmp_path / f"audio/mix{i}.wav"), sf.info(single / f"utt{i}.wav")
        assert (out.samplerate, out.frames) == (mix.samplerate, mix.frames)

    ranks = [usef_cli("extract", "--list", pairs, "--out-dir", sharded, "--model", tiny_model_dir,
                      "--device", "cpu", env={"RANK": str(k), "WORLD_SIZE": "2"}, wait=False)
             for k in range(2)]
    codes = [proc.wait(timeout=180) for proc in ranks]
    assert codes == [1, 1], [proc.stderr.read() for proc in ranks]
    single_outputs, sharded_outputs = outputs(single), outputs(sharded)
    assert sorted(single_outputs) == sorted(sharded_outputs)
    for name, wave in single_outputs.items():
        np.testing.assert_array_equal(wave, sharded_outputs[name])
    assert read_failures(sharded) == failures
    assert sorted(p.name for p in sharded.iterdir() if not p.name.endswith(".wav")) == ["failures.csv"]


def test_rerun_skips_finished_outputs_and_cleans_partial_ones(tmp_path, tiny_model_dir):
    pairs = make_list(tmp_path, good_rows())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # what a run killed after its first two items leaves behind
    finished = {}
    for name in ("utt0.wav", "utt2.wav"):
        sf.write(out_dir / name, np.zeros(100, np.float32), 8000, subtype="PCM_16")
        os.utime(out_dir / name, ns=(1_000_000_000, 1_000_000_000))
        finished[name] = (out_dir / name).stat().st_mtime_ns
    (out_dir / ".utt1.wav.k1ll3d.tmp").write_bytes(b"half a file")
    result = usef_cli("extract", "--list", pairs, "--out-dir", out_dir, "--model", tiny_model_dir,
                      "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == [f"utt{i}.wav" for i in range(4)]
    for name, mtime in finished.items():
        assert (out_dir / name).stat().st_mtime_ns == mtime
        assert sf.info(out_dir / name).frames == 100


def test_configuration_errors_exit_2_without_traceback(tmp_path, tiny_model_dir):
    pairs = make_list(tmp_path, good_rows())
    result = usef_cli("extract", "--list", pairs, "--out-dir", tmp_path / "o", "--model", tmp_path / "nope")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "unknown model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("foo,bar\n1,2\n")
    result = usef_cli("extract", "--list", bad_csv, "--out-dir", tmp_path / "o", "--model", tiny_model_dir)
    assert result.returncode == 2 and "mixture" in result.stderr and "Traceback" not in result.stderr
    result = usef_cli("extract", "--list", pairs)
    assert result.returncode == 2 and "--out-dir" in result.stderr


def test_missing_subcommand_module_does_not_break_dispatch(monkeypatch, capsys):
    monkeypatch.setitem(usef_main.SUBCOMMANDS, "nosuchcmd", "not installed")
    assert usef_main.main(["nosuchcmd"]) == 2
    assert "not available" in capsys.readouterr().err
    assert usef_main.main(["bogus"]) == 2
    assert usef_main.main(["--version"]) == 0


def test_read_list_resolves_relative_paths_and_rejects_unsafe_ids(tmp_path):
    pairs = make_list(tmp_path, [{"id": "", "mixture": "audio/mix0.wav", "reference": "audio/ref0.wav"}])
    (item,) = read_list(pairs, tmp_path / "out")
    assert item.id == "mix0" and Path(item.mixture) == tmp_path / "audio/mix0.wav" and item.problem is None
    out_dir = tmp_path / "out"
    for unsafe in ("../x", "a/b", "/abs", ".hidden", "..", ""):
        assert _id_problem(unsafe, out_dir) is not None, unsafe
    assert _id_problem("spk1-utt_2.v2", out_dir) is None


@pytest.mark.parametrize("args", [["extract", "a.wav"], ["extract", "a.wav", "b.wav"]])
def test_single_mode_usage_errors(args, capsys):
    assert usef_main.main(args) == 2
