"""usef.report.studies and `usef study reference-length`: crops, files, known SI-SDRi, exit codes."""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import usef
from usef.bin import study as study_cli
from usef.bin.main import main as usef_main
from usef.evaluate import read_eval_list
from usef.metrics import si_sdr, summarize
from usef.report.studies import crop_reference, reference_length_study

SR = 8000
REF_SECONDS = {"long": 3.0, "mid": 1.5, "short": 0.6}


def _tone(seconds: float, f0: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 8))
    return (0.2 * wave * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float64)


def _orthogonal(target: np.ndarray, seed: int) -> np.ndarray:
    """Zero-mean noise orthogonal to the zero-mean target, same energy (input SI-SDR 0 dB)."""
    noise = np.random.default_rng(seed).standard_normal(target.size)
    noise -= noise.mean()
    tgt = target - target.mean()
    noise -= np.dot(noise, tgt) / np.dot(tgt, tgt) * tgt
    return noise * np.sqrt(np.dot(tgt, tgt) / np.dot(noise, noise))


def _write(path: Path, wave: np.ndarray) -> str:
    sf.write(str(path), np.asarray(wave, dtype=np.float32), SR, subtype="FLOAT")
    return str(path)


def _write_list(path: Path, rows: list[dict], columns: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def dataset(tmp_path):
    """Three good items with 3.0 / 1.5 / 0.6 s ramp references, one with a missing mixture.

    A ramp reference (sample k = k / 100000) tells from its first sample where a crop began.
    """
    wav = tmp_path / "wav"
    wav.mkdir()
    rows, interferers = [], {}
    for seed, (name, seconds) in enumerate(REF_SECONDS.items()):
        target = _tone(1.0, 120 + 20 * seed, seed)
        interferer = _orthogonal(target, seed + 10)
        mixture = (target + interferer).astype(np.float32)
        ramp = np.arange(round(seconds * SR)) / 100000.0
        rows.append({
            "id": name,
            "mixture": _write(wav / f"{name}_mix.wav", mixture),
            "reference": _write(wav / f"{name}_ref.wav", ramp),
            "target": _write(wav / f"{name}_tgt.wav", target),
            "interferer": _write(wav / f"{name}_itf.wav", interferer),
        })
        # the fake extractor sees the mixture as read back from the file
        interferers[sf.read(rows[-1]["mixture"], dtype="float32")[0].tobytes()] = interferer
    rows.append({**rows[0], "id": "broken", "mixture": str(wav / "absent.wav")})
    columns = ["id", "mixture", "reference", "target", "interferer"]
    csv_path = _write_list(tmp_path / "eval.csv", rows, columns)
    return {"items": read_eval_list(csv_path), "csv": csv_path, "interferers": interferers}


class FakeExtractor:
    """Records (reference length, first sample) and returns an estimate of known SI-SDRi.

    ``confuse=False``: target + g * interferer with g = 10 ** (-actual_seconds / 10), so
    SI-SDRi = 2 * actual reference seconds (input SI-SDR is 0 dB). ``confuse=True``:
    interferer + 0.1 * target, closer to the interferer (negative SI-SDRi, confused).
    """

    def __init__(self, interferers: dict, confuse: bool = False):
        self.interferers, self.confuse, self.calls = interferers, confuse, []

    def __call__(self, mixture, reference, sample_rate):
        assert sample_rate == SR
        self.calls.append((reference.shape[0], float(reference[0])))
        interferer = self.interferers[mixture.tobytes()]
        target = mixture - interferer
        if self.confuse:
            return interferer + 0.1 * target
        return target + 10 ** (-reference.shape[0] / SR / 10) * interferer


def test_crop_reference_known_answers():
    ref = np.arange(100, dtype=np.float32)
    crop, offset = crop_reference(ref, 10, 3.0)
    assert offset == 0 and crop.tolist() == list(range(30))
    crop, offset = crop_reference(ref, 10, 3.0, "center")
    assert offset == 35 and crop.tolist() == list(range(35, 65))
    crop, offset = crop_reference(ref, 10, 20.0, "random", np.random.default_rng(0))
    assert offset == 0 and crop is ref  # shorter than asked: whole
    a = [crop_reference(ref, 10, 2.0, "random", np.random.default_rng(s))[1] for s in range(20)]
    b = [crop_reference(ref, 10, 2.0, "random", np.random.default_rng(s))[1] for s in range(20)]
    assert a == b and len(set(a)) > 5 and all(0 <= o <= 80 for o in a)
    with pytest.raises(ValueError, match="rng"):
        crop_reference(ref, 10, 2.0, "random")
    with pytest.raises(ValueError, match="crop"):
        crop_reference(ref, 10, 2.0, "end")
    with pytest.raises(ValueError, match="seconds"):
        crop_reference(ref, 10, 0.0)


def test_start_crops_rows_summary_and_known_si_sdri(dataset, tmp_path):
    good = FakeExtractor(dataset["interferers"])
    bad = FakeExtractor(dataset["interferers"], confuse=True)
    out = tmp_path / "study"
    lengths = [2, 0.5, 1]  # sorted by the study
    summary = reference_length_study({"good": good, "bad": bad}, dataset["items"], lengths, out)

    # every model saw exactly min(reference, L) samples from sample 0, per item and length
    expected = [min(round(REF_SECONDS[name] * SR), round(length * SR))
                for name in REF_SECONDS for length in (0.5, 1, 2)]
    assert sorted(n for n, _ in good.calls) == sorted(expected)
    assert good.calls == bad.calls and all(first == 0.0 for _, first in good.calls)

    rows = _read_csv(out / "reference_length.csv")
    assert list(rows[0]) == ["model", "length_s", "actual_length_s", "offset_s", "id",
                             "si_sdr_imp", "confused", "error"]
    assert len(rows) == 2 * 3 * 4
    assert [(r["model"], float(r["length_s"])) for r in rows[:4]] == [("good", 0.5)] * 4
    for row in rows:
        if row["id"] == "broken":
            assert "FileNotFoundError" in row["error"] and row["si_sdr_imp"] == "nan"
            continue
        actual = min(REF_SECONDS[row["id"]], float(row["length_s"]))
        assert float(row["actual_length_s"]) == pytest.approx(actual)
        if row["model"] == "good":
            assert float(row["si_sdr_imp"]) == pytest.approx(2 * actual, abs=1e-3)
            assert row["confused"] == "False"
        else:
            assert float(row["si_sdr_imp"]) == pytest.approx(-20.0, abs=1e-3)
            assert row["confused"] == "True"

    table = _read_csv(out / "summary.csv")
    assert list(table[0])[:8] == ["model", "length_s", "n", "mean", "ci95_low", "ci95_high",
                                  "failure_rate", "n_shorter"]
    assert [(r["model"], float(r["length_s"])) for r in table] == [
        (m, v) for m in ("good", "bad") for v in (0.5, 1, 2)]
    assert [int(r["n_shorter"]) for r in table] == [0, 1, 2] * 2
    assert all(int(r["n"]) == 3 and int(r["n_errors"]) == 1 for r in table)
    assert [float(r["failure_rate"]) for r in table] == [0.0] * 3 + [1.0] * 3
    assert [float(r["confusion_rate"]) for r in table] == [0.0] * 3 + [1.0] * 3
    # mean at 2 s: references of 2, 1.5 and 0.6 s -> 2 * (2 + 1.5 + 0.6) / 3
    assert float(table[2]["mean"]) == pytest.approx(2 * 4.1 / 3, abs=1e-3)
    assert summary[2]["mean"] == pytest.approx(2 * 4.1 / 3, abs=1e-3)

    # CI columns agree with usef.metrics.summarize of the per-item rows
    for entry in table:
        values = [float(r["si_sdr_imp"]) for r in rows
                  if r["model"] == entry["model"] and r["length_s"] == entry["length_s"] and not r["error"]]
        stats = summarize(values)
        for key in ("mean", "ci95_low", "ci95_high"):
            assert float(entry[key]) == pytest.approx(stats[key], rel=1e-4, abs=1e-4)

    settings = json.loads((out / "study.json").read_text())
    assert settings["lengths_s"] == [0.5, 1.0, 2.0] and settings["crop"] == "start"
    assert settings["models"] == ["good", "bad"] and settings["n_errors"] == 2 * 3
    assert (out / "reference_length.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _offsets(out: Path) -> dict[tuple[str, str, str], float]:
    return {(r["model"], r["length_s"], r["id"]): float(r["offset_s"])
            for r in _read_csv(out / "reference_length.csv") if not r["error"]}


def test_random_crops_are_seeded_shared_and_exact(dataset, tmp_path):
    items = dataset["items"][:3]
    runs = {}
    for tag, seed in (("a", 7), ("b", 7), ("c", 8)):
        fakes = {"m1": FakeExtractor(dataset["interferers"]), "m2": FakeExtractor(dataset["interferers"])}
        reference_length_study(fakes, items, [0.5, 1, 2], tmp_path / tag, seed=seed, crop="random")
        runs[tag] = (fakes, _offsets(tmp_path / tag))
    fakes, offsets = runs["a"]
    assert offsets == runs["b"][1]  # same seed, same crops
    assert offsets != runs["c"][1]  # another seed, other crops
    assert fakes["m1"].calls == fakes["m2"].calls  # every model hears the same crop
    for (model, length, item_id), offset in offsets.items():
        if REF_SECONDS[item_id] <= float(length):
            assert offset == 0.0  # used whole
        assert 0.0 <= offset <= max(0.0, REF_SECONDS[item_id] - float(length)) + 1e-9
    # the recorded first sample of each crop is the ramp value at the recorded offset
    order = [(item_id, length) for item_id in REF_SECONDS for length in ("0.5", "1", "2")]
    for (item_id, length), (n, first) in zip(order, fakes["m1"].calls):
        offset = round(offsets[("m1", length, item_id)] * SR)
        assert n == min(round(REF_SECONDS[item_id] * SR), round(float(length) * SR))
        assert first == pytest.approx(offset / 100000.0, abs=1e-7)
    assert any(v > 0 for v in offsets.values())

    center = FakeExtractor(dataset["interferers"])
    reference_length_study({"m": center}, items[:1], [1], tmp_path / "center", crop="center")
    assert center.calls == [(SR, pytest.approx((3 * SR - SR) // 2 / 100000.0, abs=1e-7))]


def test_study_rejects_bad_arguments(dataset, tmp_path):
    fake = {"m": FakeExtractor(dataset["interferers"])}
    with pytest.raises(ValueError, match="lengths"):
        reference_length_study(fake, dataset["items"], [1, 1], tmp_path)
    with pytest.raises(ValueError, match="lengths"):
        reference_length_study(fake, dataset["items"], [0, 1], tmp_path)
    with pytest.raises(ValueError, match="crop"):
        reference_length_study(fake, dataset["items"], [1], tmp_path, crop="end")
    with pytest.raises(ValueError, match="items"):
        reference_length_study(fake, [], [1], tmp_path)
    with pytest.raises(ValueError, match="extractors"):
        reference_length_study({}, dataset["items"], [1], tmp_path)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Two tiny usef_conformer models saved with save_pretrained (folder names alpha, beta)."""
    from usef.models import build_model

    root = tmp_path_factory.mktemp("study_models")
    dirs = []
    for seed, name in enumerate(("alpha", "beta")):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = build_model("usef_conformer", preset="tiny")
        model.save_pretrained(root / name)
        dirs.append(root / name)
    return dirs


def test_real_models_match_direct_extraction_and_plot(dataset, model_dirs, tmp_path):
    extractors = {}
    for directory in model_dirs:
        extractor = usef.load_model(directory, device="cpu")
        extractors[extractor.name] = extractor
    items = dataset["items"][1:3]  # mid (1.5 s) and short (0.6 s)
    summary = reference_length_study(extractors, items, [0.5, 1], tmp_path / "real")
    assert [(r["model"], r["length_s"]) for r in summary] == [
        ("alpha", 0.5), ("alpha", 1.0), ("beta", 0.5), ("beta", 1.0)]
    assert [r["n_shorter"] for r in summary] == [0, 1, 0, 1]

    rows = _read_csv(tmp_path / "real" / "reference_length.csv")
    assert len(rows) == 2 * 2 * 2 and not any(r["error"] for r in rows)
    row = next(r for r in rows if (r["model"], r["length_s"], r["id"]) == ("beta", "1", "short"))
    mixture = sf.read(items[1]["mixture"], dtype="float32")[0]
    target = sf.read(items[1]["target"], dtype="float32")[0]
    reference = sf.read(items[1]["reference"], dtype="float32")[0]
    estimate = extractors["beta"].extract(mixture, reference, sample_rate=SR)
    expected = si_sdr(estimate, target) - si_sdr(mixture, target)
    assert float(row["si_sdr_imp"]) == pytest.approx(expected, abs=1e-3)
    assert float(row["actual_length_s"]) == pytest.approx(0.6)

    from matplotlib.image import imread

    image = imread(tmp_path / "real" / "reference_length.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.01  # something was drawn


def _cli(model_dirs, csv_path, out, *extra):
    return ["reference-length", "--model", str(model_dirs[0]), "--model", str(model_dirs[1]),
            "--list", str(csv_path), "--lengths", "0.5", "1", "--out-dir", str(out), *extra]


def test_cli_exit_codes_and_outputs(dataset, model_dirs, tmp_path, capsys):
    good_csv = _write_list(tmp_path / "good.csv",
                           dataset["items"][1:3],
                           ["id", "mixture", "reference", "target", "interferer"])
    out = tmp_path / "cli"
    assert usef_main(["study", *_cli(model_dirs, good_csv, out, "--crop", "random", "--seed", "3")]) == 0
    printed = capsys.readouterr().out
    assert "alpha" in printed and "beta" in printed and "95% CI" in printed
    settings = json.loads((out / "study.json").read_text())
    assert settings["seed"] == 3 and settings["crop"] == "random" and settings["device"] == "cpu"
    assert settings["requested_models"] == {"alpha": str(model_dirs[0]), "beta": str(model_dirs[1])}
    assert "reference-length" in settings["command"]
    assert {p.name for p in out.iterdir()} >= {"reference_length.csv", "summary.csv",
                                               "reference_length.png", "study.json"}

    # the list with a missing mixture: recorded, not fatal, exit 1
    assert study_cli.main(_cli(model_dirs, dataset["csv"], tmp_path / "broken")) == 1
    rows = _read_csv(tmp_path / "broken" / "reference_length.csv")
    assert sum(1 for r in rows if r["error"]) == 2 * 2

    # usage errors: exit 2 and nothing written
    assert study_cli.main(_cli([tmp_path / "nope", model_dirs[1]], good_csv, tmp_path / "x")) == 2
    assert "cannot load model" in capsys.readouterr().err
    no_target = _write_list(tmp_path / "bad.csv", [{"mixture": "a.wav", "reference": "b.wav"}],
                            ["mixture", "reference"])
    assert study_cli.main(_cli(model_dirs, no_target, tmp_path / "x")) == 2
    assert "target" in capsys.readouterr().err
    assert study_cli.main(_cli(model_dirs, tmp_path / "absent.csv", tmp_path / "x")) == 2
    assert study_cli.main(_cli(model_dirs, good_csv, tmp_path / "x", "--lengths", "0")) == 2
    assert study_cli.main(["reference-length", "--list", str(good_csv)]) == 2
    assert not (tmp_path / "x").exists()


def test_help_epilog_example_parses(capsys):
    assert study_cli.main(["reference-length", "--help"]) == 0
    text = capsys.readouterr().out
    assert "usef study reference-length --model" in text
    epilog = text[text.index("example:"):]
    example = epilog[epilog.index("usef study reference-length"):].split("\n\n")[0]
    argv = shlex.split(example.replace("\\\n", " "))[2:]
    args = study_cli.build_parser().parse_args(argv)
    assert args.lengths == [0.5, 1, 2, 4] and args.crop == "random"
    # the example names bundled models, so it runs as printed once the list exists
    assert set(args.model) <= set(usef.list_models())
