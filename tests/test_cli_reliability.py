"""CLI reliability: per-item model choice, resumable and shareable output folders, option
validation, one overwrite rule, help texts, corrupt training state, oversized model configs.

Everything runs in-process on tiny models (tests/conftest.py) in tmp_path.
"""

from __future__ import annotations

import csv
import functools
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from conftest import build_tiny, speechlike

from usef import hub
from usef.bin import main as usef_main
from usef.bin.extract import main as extract_main

DEFAULTS = (hub.DEFAULT_8K, hub.DEFAULT_16K)


def write_pairs(root: Path, rows: list[dict], name: str = "pairs.csv") -> Path:
    """Audio under root/audio (mix0/ref0 8 kHz, mix1/ref1 16 kHz, mix2 11.025 kHz) and a CSV."""
    audio = root / "audio"
    if not audio.is_dir():
        audio.mkdir(parents=True)
        for i, rate in enumerate((8000, 16000, 11025)):
            sf.write(audio / f"mix{i}.wav", speechlike(0.6 + 0.1 * i, rate, seed=i), rate)
            sf.write(audio / f"ref{i}.wav", speechlike(0.8, rate, seed=10 + i), rate)
        sf.write(audio / "short_ref.wav", speechlike(0.1, 16000, seed=20), 16000)  # below min_reference
        (audio / "broken.wav").write_bytes(b"RIFF not really a wave file" * 8)
    path = root / name
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "mixture", "reference"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def pair(item_id: str, i: int, reference: str | None = None) -> dict:
    return {"id": item_id, "mixture": f"audio/mix{i}.wav", "reference": reference or f"audio/ref{i}.wav"}


def failures_of(out_dir: Path) -> dict[str, dict]:
    with open(out_dir / "failures.csv", newline="") as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def bundled_defaults(tmp_path_factory) -> Path:
    """A pretrained folder whose 'bundled' defaults are tiny 8 kHz and 16 kHz models."""
    from usef.models import build_model

    root = tmp_path_factory.mktemp("pretrained")
    build_tiny().save_pretrained(root / DEFAULTS[0])
    torch.manual_seed(0)
    build_model("usef_conformer", preset="tiny", sample_rate=16000).eval().save_pretrained(root / DEFAULTS[1])
    return root


# ----------------------------------------------------------------------------- task 1
def test_default_model_is_chosen_per_item_and_recorded(tmp_path, bundled_defaults, monkeypatch, caplog):
    monkeypatch.setenv("USEF_PRETRAINED_DIR", str(bundled_defaults))
    pairs = write_pairs(tmp_path, [pair("a8k", 0), pair("b16k", 1), pair("c11k", 2),
                                   pair("short16k", 1, "audio/short_ref.wav"), pair("bad", 0, "audio/broken.wav")])
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="usef.extract"):
        code = extract_main(["--list", str(pairs), "--out-dir", str(out), "--device", "cpu", "--jobs", "1"])
    assert code == 1
    served = {r.getMessage().split(":")[0]: r.getMessage() for r in caplog.records if r.name == "usef.extract"}
    assert f"{DEFAULTS[0]} (8000 Hz input)" in served["a8k"]
    assert f"{DEFAULTS[1]} (16000 Hz input)" in served["b16k"]  # not the first item's model
    assert f"{DEFAULTS[0]} (11025 Hz input)" in served["c11k"]
    for name, rate in (("a8k", 8000), ("b16k", 16000), ("c11k", 11025)):
        assert sf.info(out / f"{name}.wav").samplerate == rate
    failures = failures_of(out)
    assert set(failures) == {"short16k", "bad"}
    assert failures["short16k"]["model"] == DEFAULTS[1]  # the model that failed on it
    assert failures["bad"]["model"] == ""  # failed before any model was chosen


# ----------------------------------------------------------------------------- task 3
def test_too_long_id_fails_its_own_row_only(tmp_path, tiny_model_dir):
    long_id = "x" * 300
    pairs = write_pairs(tmp_path, [pair("u0", 0), pair(long_id, 0), pair("u2", 2)])
    out = tmp_path / "out"
    code = extract_main(["--list", str(pairs), "--out-dir", str(out), "--model", str(tiny_model_dir),
                         "--device", "cpu"])
    assert code == 1
    assert sorted(p.name for p in out.glob("*.wav")) == ["u0.wav", "u2.wav"]
    failures = failures_of(out)
    assert list(failures) == [long_id] and "too long" in failures[long_id]["error"]


def test_rerun_redoes_empty_and_unreadable_outputs(tmp_path, tiny_model_dir):
    pairs = write_pairs(tmp_path, [pair("item05", 0), pair("item06", 1), pair("item07", 2)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "item07.wav").write_bytes(b"")  # a planted 0-byte output
    (out / "item06.wav").write_bytes(b"RIFF\x00\x00")  # a cut header
    sf.write(out / "item05.wav", np.zeros(100, np.float32), 8000, subtype="PCM_16")  # complete: kept
    code = extract_main(["--list", str(pairs), "--out-dir", str(out), "--model", str(tiny_model_dir),
                         "--device", "cpu"])
    assert code == 0
    assert sf.info(out / "item05.wav").frames == 100
    for name, i in (("item06", 1), ("item07", 2)):
        assert sf.info(out / f"{name}.wav").frames == sf.info(tmp_path / f"audio/mix{i}.wav").frames


def test_runs_sharing_a_folder_keep_each_others_failures(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    run = ["--out-dir", str(out), "--model", str(tiny_model_dir), "--device", "cpu"]
    list_a = write_pairs(tmp_path, [pair("a0", 0), pair("a_bad", 0, "audio/broken.wav")], "a.csv")
    list_b = write_pairs(tmp_path, [pair("b0", 1), pair("b1", 2)], "b.csv")
    assert extract_main(["--list", str(list_a), *run]) == 1
    assert extract_main(["--list", str(list_b), *run]) == 0  # clean, but a's failure is not its to erase
    failures = failures_of(out)
    assert list(failures) == ["a_bad"] and failures["a_bad"]["error"]
    with open(out / "failures.csv", newline="") as handle:
        assert next(csv.reader(handle)) == ["id", "mixture", "reference", "model", "error"]
    write_pairs(tmp_path, [pair("a0", 0), pair("a_bad", 0)], "a.csv")  # list a, fixed
    assert extract_main(["--list", str(list_a), *run]) == 0
    assert not (out / "failures.csv").exists()  # no row left anywhere
    assert sorted(p.name for p in out.iterdir()) == ["a0.wav", "a_bad.wav", "b0.wav", "b1.wav"]


def test_output_paths_that_are_the_wrong_kind_exit_2(tmp_path, tiny_model_dir, capsys):
    pairs = write_pairs(tmp_path, [pair("u0", 0)])
    model = ["--model", str(tiny_model_dir), "--device", "cpu"]
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    assert extract_main(["--list", str(pairs), "--out-dir", str(a_file), *model]) == 2
    assert "not a folder" in capsys.readouterr().err
    folder = tmp_path / "folder"
    folder.mkdir()
    single = [str(tmp_path / "audio/mix0.wav"), str(tmp_path / "audio/ref0.wav")]
    assert extract_main([*single, "-o", str(folder), *model]) == 2
    assert "is a folder" in capsys.readouterr().err and not any(folder.iterdir())
    existing = tmp_path / "old.wav"
    existing.write_bytes(b"keep me")
    assert extract_main([*single, "-o", str(existing), *model]) == 2
    assert "--overwrite" in capsys.readouterr().err and existing.read_bytes() == b"keep me"
    assert extract_main([*single, "-o", str(existing), "--overwrite", *model]) == 0
    assert sf.info(existing).frames == sf.info(tmp_path / "audio/mix0.wav").frames


@pytest.mark.parametrize("option,value", [
    ("--chunk-seconds", "0"), ("--chunk-seconds", "-1"), ("--chunk-seconds", "0.00001"),
    ("--chunk-seconds", "nan"), ("--chunk-seconds", "inf"), ("--jobs", "0"), ("--jobs", "100000"),
    ("--barrier-timeout", "0"), ("--barrier-timeout", "nan"), ("--threads", "0"),
])
def test_numeric_options_are_validated_before_anything_runs(tmp_path, option, value, capsys):
    code = extract_main(["--list", str(tmp_path / "missing.csv"), "--out-dir", str(tmp_path / "o"), option, value])
    assert code == 2
    assert option in capsys.readouterr().err  # the option's own message, not the missing list's
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- task 2
@pytest.mark.parametrize("command", ["extract", "demo", "train", "study"])
def test_model_commands_take_threads(command, monkeypatch):
    import importlib

    module = importlib.import_module(f"usef.bin.{command}")
    parser = module.build_parser()
    if command == "study":
        args = parser.parse_args(["reference-length", "--model", "m", "--list", "l.csv", "--out-dir", "o",
                                  "--threads", "3"])
    elif command == "train":
        args = parser.parse_args(["conf.yaml", "--threads", "3"])
    else:
        args = parser.parse_args(["--threads", "3"])
    assert args.threads == 3


def test_extract_applies_threads(tmp_path, tiny_model_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    pairs = write_pairs(tmp_path, [pair("u0", 0)])
    assert extract_main(["--list", str(pairs), "--out-dir", str(tmp_path / "o"), "--model", str(tiny_model_dir),
                         "--device", "cpu", "--threads", "1"]) == 0
    assert calls == [1]


# ----------------------------------------------------------------------------- task 4
def test_demo_refuses_an_existing_output_unless_overwrite(tmp_path, tiny_model_dir, capsys):
    from usef.bin.demo import main as demo_main

    output = tmp_path / "estimate.wav"
    output.write_bytes(b"keep me")
    assert demo_main(["-o", str(output), "--model", str(tiny_model_dir), "--device", "cpu"]) == 2
    assert "--overwrite" in capsys.readouterr().err and output.read_bytes() == b"keep me"
    assert demo_main(["-o", str(tmp_path), "--model", str(tiny_model_dir)]) == 2
    assert demo_main(["-o", str(output), "--model", str(tiny_model_dir), "--device", "cpu", "--overwrite"]) == 0
    assert sf.info(output).frames > 0


# ----------------------------------------------------------------------------- task 5
HELP = [["extract"], ["demo"], ["results"], ["average"], ["train"], ["compare"], ["report"],
        ["study", "reference-length"]]


@pytest.mark.parametrize("command", HELP, ids=[c[0] for c in HELP])
def test_help_texts_show_runnable_examples(command, capsys):
    assert usef_main.main([*command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "exp/usef/best" not in text and "``" not in text
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if "python -m usef.bin" in line or " -m usef.bin" in line:
            assert line.lstrip().startswith("torchrun"), line  # only torchrun needs the module form
        if line.rstrip().endswith("\\"):
            assert line.rstrip().endswith(" \\"), line
            assert number + 1 < len(lines) and lines[number + 1].startswith("    "), line
    if command[0] in ("extract", "demo"):
        assert "cuda if available" in " ".join(text.split())


def test_dispatcher_usage_example_uses_a_bundled_model(capsys):
    assert usef_main.main(["--help"]) == 0
    assert "exp/usef/best" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- task 6
class _Sneaky:
    """Unpickling this would call _touch: a weights_only load must refuse it instead."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (_touch, (self.path,))


def _touch(path: str) -> None:
    Path(path).write_text("code ran")


def _train_config(tmp_path: Path) -> Path:
    config = {
        "model": {"name": "usef_conformer", "args": {"preset": "tiny"}},
        "data": {"type": "dynamic_mix", "speech": str(tmp_path / "speech.npz")},
        "train": {"device": "cpu", "max_steps": 2, "num_workers": 0},
        "dev": {"n_items": 0},
    }
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("content", ["garbage", "foreign_object"])
def test_resume_from_a_corrupt_train_state_is_a_clear_error(tmp_path, content, capsys):
    from usef.bin.train import main as train_main
    from usef.train import state

    step = tmp_path / "exp" / "checkpoints" / "step_2"
    step.mkdir(parents=True)
    bad = step / state.STATE_FILE
    marker = tmp_path / "marker"
    if content == "garbage":
        bad.write_bytes(b"\x80\x04 this is not a torch file")
    else:
        torch.save({"version": state.STATE_VERSION, "x": _Sneaky(str(marker))}, bad)
    with pytest.raises(ValueError, match="train_state.pt") as info:
        state.load_train_state(step)
    assert "--resume" in str(info.value) and str(step) in str(info.value)
    assert train_main([str(_train_config(tmp_path)), "--exp-dir", str(tmp_path / "exp"), "--resume",
                       "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err
    assert not marker.exists()  # nothing beyond weights_only unpickling ran


# ----------------------------------------------------------------------------- task 7
def test_oversized_config_is_refused_before_the_model_is_built(tmp_path, tiny_model_dir, monkeypatch):
    from usef.checkpoint import CheckpointError, load_pretrained
    from usef.models.usef import UsefExtractor

    directory = tmp_path / "huge"
    shutil.copytree(tiny_model_dir, directory)
    config = yaml.safe_load((directory / "config.yaml").read_text())
    # ~47 G parameters (190 GB) if it were really built
    config["args"]["separator_args"].update(dim=2 ** 16, ffn_dim=2 ** 16)
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    original = UsefExtractor.__init__

    @functools.wraps(original)
    def guarded(self, *args, **kwargs):
        if torch.empty(0).device.type != "meta":
            raise AssertionError("the oversized model was built for real")
        original(self, *args, **kwargs)

    monkeypatch.setattr(UsefExtractor, "__init__", guarded)
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=r"config\.yaml.*shape mismatch|shape mismatch.*config\.yaml"):
        load_pretrained(directory)
    assert time.monotonic() - start < 30
    import usef

    with pytest.raises(ValueError, match="weights do not match"):
        usef.load_model(directory, device="cpu")


def test_cli_chunk_floor_is_the_apis():
    # the CLI keeps its own copy so that `usef extract --help` does not import torch
    from usef import api
    from usef.bin import extract

    assert extract.MIN_CHUNK_SECONDS == api.MIN_CHUNK_SECONDS


def test_chunk_progress_counts_up_to_the_total(capsys):
    # an hour-long single file ran 3.5 minutes with no sign of life
    from usef.bin.extract import ChunkProgress

    bar = ChunkProgress(disable=False)
    for done in (2, 4, 5):
        bar(done, 5)
    assert bar.bar.n == 5 and bar.bar.total == 5
    bar.close()
    ChunkProgress().close()  # a short file: no bar was made
