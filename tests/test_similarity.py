"""usef.report.similarity and `usef study similarity`: bins, bootstrap, known tables, files, exit codes."""

from __future__ import annotations

import csv
import json
import logging
import math
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import speechlike

import usef
from usef.bin import study as study_cli
from usef.evaluate import read_eval_list
from usef.metrics import si_sdr
from usef.report.similarity import (
    bootstrap_mean,
    quantile_bins,
    resolve_kind,
    similarity_study,
    similarity_table,
    slope_bootstrap,
)

SR = 8000
TARGET_F0 = 120.0
INTERFERER_F0 = (124.0, 140.0, 170.0, 240.0)  # 0.57, 2.67, 6.03, 12 semitones from the target


def _semitones(f0: float) -> float:
    return abs(12 * math.log2(f0 / TARGET_F0))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _write_list(path: Path, rows: list[dict], columns: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


# --- pure functions on constructed data -------------------------------------------------


def test_quantile_bins_equal_counts_ties_and_unknowns():
    values = np.arange(100.0)[::-1]  # order must not matter
    index, edges = quantile_bins(values, 4)
    assert index.tolist() == (values // 25).astype(int).tolist()
    assert edges.tolist() == [0.0, 24.75, 49.5, 74.25, 99.0]

    index, edges = quantile_bins([1.0, math.nan, 3.0, 2.0, math.inf], 3)
    assert index.tolist() == [0, -1, 2, 1, -1]

    # many equal values: the quantiles 0, 0.25, 0.5 all sit at 0 and merge, so 2 bins come back for 4
    index, edges = quantile_bins([0.0] * 6 + [1.0, 2.0], 4)
    assert edges.tolist() == [0.0, 0.25, 2.0] and index.tolist() == [0] * 6 + [1, 1]
    index, edges = quantile_bins([5.0, 5.0, 5.0], 4)
    assert index.tolist() == [0, 0, 0] and edges.tolist() == [5.0, 5.0]

    with pytest.raises(ValueError, match="n_bins"):
        quantile_bins([1.0, 2.0], 0)
    with pytest.raises(ValueError, match="finite"):
        quantile_bins([math.nan], 2)


def test_bootstrap_mean_is_seeded_and_covers_the_known_mean():
    values = np.random.default_rng(1).normal(3.0, 2.0, size=400)
    a = bootstrap_mean(values, seed=5)
    assert a == bootstrap_mean(values, seed=5)  # reproducible
    assert a != bootstrap_mean(values, seed=6)
    assert a["n"] == 400 and a["mean"] == pytest.approx(values.mean())
    assert a["ci95_low"] < 3.0 < a["ci95_high"]
    # the percentile interval of a mean of 400 normals is close to the t interval
    half = 1.966 * values.std(ddof=1) / math.sqrt(400)
    assert (a["ci95_high"] - a["ci95_low"]) / 2 == pytest.approx(half, rel=0.15)
    assert a["ci95_low"] < a["mean"] < a["ci95_high"]

    constant = bootstrap_mean([2.5] * 10 + [math.nan])
    assert constant == {"n": 10, "mean": 2.5, "ci95_low": 2.5, "ci95_high": 2.5}
    one = bootstrap_mean([1.0])
    assert one["mean"] == 1.0 and math.isnan(one["ci95_low"])
    assert bootstrap_mean([])["n"] == 0


def test_slope_bootstrap_exact_line_and_noise():
    x = np.linspace(0, 12, 50)
    exact = slope_bootstrap(x, 3.0 - 0.25 * x)
    assert exact["slope"] == pytest.approx(-0.25)
    # every resample of an exact line has the same slope
    assert exact["ci95_low"] == pytest.approx(-0.25) and exact["ci95_high"] == pytest.approx(-0.25)
    y = 1.0 + 0.5 * x + np.random.default_rng(0).normal(0, 1, x.size)
    noisy = slope_bootstrap(x, y, seed=2)
    fit, intercept = np.polyfit(x, y, 1)
    assert noisy["slope"] == pytest.approx(fit) and noisy["ci95_low"] < fit < noisy["ci95_high"]
    # the pairs bootstrap is close to the textbook standard error of the slope
    residual = y - (fit * x + intercept)
    se = math.sqrt(residual @ residual / (x.size - 2) / np.sum((x - x.mean()) ** 2))
    assert (noisy["ci95_high"] - noisy["ci95_low"]) / 2 == pytest.approx(1.96 * se, rel=0.25)
    flat = slope_bootstrap([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    assert math.isnan(flat["slope"])


def test_similarity_table_known_answer():
    """80 items, similarity = F0 distance 0..12; B loses to A by 3 - 0.25 * distance exactly.

    An 81st item has an unknown similarity: it counts in "all" only.
    """
    n = 81
    distance = np.append(np.linspace(0.0, 12.0, 80), 6.0)
    a = 4.0 + np.random.default_rng(0).normal(0.0, 1.0, n)
    b = a - (3.0 - 0.25 * distance)
    b[5] = math.nan  # B failed on item 5 (bin 0)
    confused_b = [bool(d < 1.5) for d in distance]
    sim = distance.copy()
    sim[80] = math.nan
    table = similarity_table(sim, {"A": a, "B": b}, {"A": [False] * n, "B": confused_b},
                             n_bins=4, seed=3, n_boot=500)

    expected_bin = np.array([k // 20 for k in range(80)] + [-1])  # quartiles of 80 sorted values
    assert table["bin"] == expected_bin.tolist()
    rows = table["rows"]
    assert [(r["bin"], r["series"], r["kind"]) for r in rows] == [
        (k, s, kind) for k in (0, 1, 2, 3, "all")
        for s, kind in (("A", "model"), ("B", "model"), ("A - B", "difference"))]
    for row in rows:
        member = np.ones(n, bool) if row["bin"] == "all" else expected_bin == row["bin"]
        values = {"A": a, "B": b, "A - B": a - b}[row["series"]][member]
        ok = values[np.isfinite(values)]
        assert row["n"] == ok.size
        assert row["mean"] == pytest.approx(ok.mean())
        assert row["ci95_low"] <= row["mean"] <= row["ci95_high"]
        if row["series"] == "A - B":  # the difference is exactly 3 - 0.25 d per item
            d = distance[member][np.isfinite(b[member])]
            assert row["mean"] == pytest.approx(np.mean(3.0 - 0.25 * d))
        if row["bin"] != "all":
            known = sim[member]
            assert (row["similarity_low"], row["similarity_high"]) == (known.min(), known.max())
            assert row["similarity_centre"] == pytest.approx(np.median(known))
        if row["kind"] == "model":
            assert row["failure_rate"] == pytest.approx(np.mean(ok < 0))
        if row["series"] == "B":
            flags = np.array(confused_b)[member & np.isfinite(b)]
            assert row["confusion_rate"] == pytest.approx(flags.mean())
    by_key = {(r["bin"], r["series"]): r for r in rows}
    assert by_key[(0, "B")]["n"] == 19 and by_key[(0, "A")]["n"] == 20 and by_key[("all", "A")]["n"] == 81
    assert by_key[(3, "B")]["confusion_rate"] == 0.0 and by_key[(0, "B")]["confusion_rate"] == pytest.approx(9 / 19)  # d < 1.5: items 0-9 less 5
    # the difference shrinks bin by bin, and the trend is the exact slope
    assert [by_key[(k, "A - B")]["mean"] for k in range(4)] == sorted(
        (by_key[(k, "A - B")]["mean"] for k in range(4)), reverse=True)
    (trend,) = table["trend"]
    assert trend["series"] == "A - B" and trend["n"] == 79
    assert trend["slope"] == pytest.approx(-0.25)
    assert trend["ci95_low"] == pytest.approx(-0.25) and trend["ci95_high"] == pytest.approx(-0.25)

    # a bin's interval depends on (seed, bin, series) only: adding a model leaves A's rows alone
    more = similarity_table(sim, {"A": a, "B": b, "C": b + 1.0}, n_bins=4, seed=3, n_boot=500)
    assert [r["ci95_low"] for r in more["rows"] if r["series"] == "A"] == [
        r["ci95_low"] for r in rows if r["series"] == "A"]
    assert {r["series"] for r in more["rows"]} == {"A", "B", "C", "A - B", "A - C"}

    with pytest.raises(ValueError, match="items"):
        similarity_table(sim, {"A": a[:10]})
    with pytest.raises(ValueError, match="model"):
        similarity_table(sim, {})


def test_auto_without_resemblyzer_is_pitch(monkeypatch):
    monkeypatch.setitem(sys.modules, "resemblyzer", None)
    assert resolve_kind("auto") == "pitch"
    assert resolve_kind("dvector") == "dvector"
    with pytest.raises(ValueError, match="kind"):
        resolve_kind("timbre")


# --- the study on files -------------------------------------------------------------------


@pytest.fixture
def pitch_items(tmp_path):
    """Four 2 s items, target at 120 Hz, interferers at INTERFERER_F0 (known semitone distances)."""
    wav = tmp_path / "wav"
    wav.mkdir()
    rows = []
    for k, f0 in enumerate(INTERFERER_F0):
        target = speechlike(2.0, SR, seed=10 + k, f0=TARGET_F0)
        interferer = speechlike(2.0, SR, seed=20 + k, f0=f0)
        reference = speechlike(1.0, SR, seed=30 + k, f0=TARGET_F0)
        paths = {}
        for role, wave in (("mixture", target + interferer), ("target", target),
                           ("interferer", interferer), ("reference", reference)):
            paths[role] = str(wav / f"{k}_{role}.wav")
            sf.write(paths[role], wave.astype(np.float32), SR, subtype="FLOAT")
        rows.append({"id": f"item{k}", **paths})
    columns = ["id", "mixture", "reference", "target", "interferer"]
    csv_path = _write_list(tmp_path / "eval.csv", rows, columns)
    return {"csv": csv_path, "items": read_eval_list(csv_path), "columns": columns}


def _fake_models():
    """'clean': target + 0.1 interferer (never confused); 'swap': interferer + 0.1 target (confused).

    They find target and interferer by reading the item's files again (same float32 samples).
    """
    sources: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def register(item):
        mixture = sf.read(item["mixture"], dtype="float32")[0]
        target = sf.read(item["target"], dtype="float32")[0]
        interferer = sf.read(item["interferer"], dtype="float32")[0]
        sources[mixture.tobytes()] = (target, interferer)

    def clean(mixture, reference, rate):
        target, interferer = sources[mixture.tobytes()]
        return target + 0.1 * interferer

    def swap(mixture, reference, rate):
        target, interferer = sources[mixture.tobytes()]
        return interferer + 0.1 * target

    return register, {"clean": clean, "swap": swap}


def test_pitch_study_files_and_known_values(pitch_items, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # the no-extra path
    register, models = _fake_models()
    for item in pitch_items["items"]:
        register(item)
    out = tmp_path / "study"
    record = similarity_study(models, pitch_items["items"], out, n_bins=2, seed=1, n_boot=200,
                              settings={"command": "test"})
    assert record["similarity"]["kind"] == "pitch" and record["similarity"]["alike"] == "smaller"
    assert record["models"] == ["clean", "swap"] and record["command"] == "test"
    assert record["n_items"] == 4 and record["n_errors"] == 0 and record["n_unknown_similarity"] == 0

    rows = _read_csv(out / "similarity.csv")
    assert list(rows[0]) == ["id", "similarity", "bin", "target_f0", "interferer_f0", "input_si_sdr",
                             "si_sdr_imp[clean]", "confused[clean]", "si_sdr_imp[swap]", "confused[swap]",
                             "error"]
    assert [r["id"] for r in rows] == ["item0", "item1", "item2", "item3"]
    for row, item, f0 in zip(rows, pitch_items["items"], INTERFERER_F0):
        assert float(row["target_f0"]) == pytest.approx(TARGET_F0, rel=0.04)
        assert float(row["interferer_f0"]) == pytest.approx(f0, rel=0.04)
        assert float(row["similarity"]) == pytest.approx(_semitones(f0), abs=0.6)
        mixture = sf.read(item["mixture"], dtype="float32")[0]
        target = sf.read(item["target"], dtype="float32")[0]
        expected = si_sdr(models["clean"](mixture, None, SR), target) - si_sdr(mixture, target)
        assert float(row["si_sdr_imp[clean]"]) == pytest.approx(expected, abs=1e-3)
        assert float(row["input_si_sdr"]) == pytest.approx(si_sdr(mixture, target), abs=1e-4)
        assert row["confused[clean]"] == "False" and row["confused[swap]"] == "True"
        assert float(row["si_sdr_imp[swap]"]) < 0
    assert [r["bin"] for r in rows] == ["0", "0", "1", "1"]  # distances are increasing

    table = _read_csv(out / "similarity_bins.csv")
    assert [(r["bin"], r["series"]) for r in table] == [
        (k, s) for k in ("0", "1", "all") for s in ("clean", "swap", "clean - swap")]
    swap_rows = [r for r in table if r["series"] == "swap"]
    assert all(float(r["failure_rate"]) == 1.0 and float(r["confusion_rate"]) == 1.0 for r in swap_rows)
    assert all(int(r["n"]) == 2 for r in table if r["bin"] != "all")
    assert json.loads((out / "similarity.json").read_text())["rows"][0]["series"] == "clean"
    assert (out / "similarity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dvector_study_uses_the_embedder_cosine(pitch_items, tmp_path):
    """A fake embedder maps each file's samples to a known unit vector: the cosine is exact."""
    register, models = _fake_models()
    vectors = {}
    angles = (0.1, 0.5, 1.0, 1.4)
    for item, angle in zip(pitch_items["items"], angles):
        register(item)
        vectors[sf.read(item["target"], dtype="float32")[0].tobytes()] = np.array([1.0, 0.0])
        vectors[sf.read(item["interferer"], dtype="float32")[0].tobytes()] = np.array(
            [math.cos(angle), math.sin(angle)]) * 3.0  # not unit: the cosine normalises

    def embedder(wave, rate):
        assert rate == SR
        return vectors[np.asarray(wave, dtype=np.float32).tobytes()]

    record = similarity_study(models, pitch_items["items"], tmp_path / "dv", kind="dvector", n_bins=2,
                              embedder=embedder, n_boot=100)
    assert record["similarity"]["kind"] == "dvector" and record["similarity"]["alike"] == "larger"
    rows = _read_csv(tmp_path / "dv" / "similarity.csv")
    assert "target_f0" not in rows[0]
    assert [float(r["similarity"]) for r in rows] == pytest.approx([math.cos(a) for a in angles], abs=1e-5)
    assert [r["bin"] for r in rows] == ["1", "1", "0", "0"]  # cosine falls as the angle grows


def test_study_refuses_before_extracting(pitch_items, tmp_path, monkeypatch):
    calls = []

    def model(mixture, reference, rate):
        calls.append(1)
        return mixture

    no_interferer = [{k: v for k, v in item.items() if k != "interferer"} for item in pitch_items["items"]]
    with pytest.raises(ValueError, match="interferer"):
        similarity_study({"m": model}, no_interferer, tmp_path / "a")
    monkeypatch.setitem(sys.modules, "resemblyzer", None)
    with pytest.raises(ImportError, match="resemblyzer"):
        similarity_study({"m": model}, pitch_items["items"], tmp_path / "b", kind="dvector")
    with pytest.raises(ValueError, match="n_bins"):
        similarity_study({"m": model}, pitch_items["items"], tmp_path / "c", n_bins=0)
    with pytest.raises(ValueError, match="extractors"):
        similarity_study({}, pitch_items["items"], tmp_path / "d")
    assert calls == [] and not (tmp_path / "b").exists()


def test_plot_is_skipped_without_matplotlib(pitch_items, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    caplog.set_level(logging.INFO, logger="usef.report.similarity")
    record = similarity_study({"m": lambda mixture, reference, rate: mixture}, pitch_items["items"],
                              tmp_path / "noplot", n_bins=2, kind="pitch", n_boot=50)
    assert "similarity.png" not in record["files"]
    assert not (tmp_path / "noplot" / "similarity.png").exists()
    assert (tmp_path / "noplot" / "similarity.json").is_file()
    assert "not drawn" in caplog.text
    # the identity model improves nothing: SI-SDRi 0 everywhere
    assert all(abs(r["mean"]) < 1e-3 for r in record["rows"])


# --- the command line ---------------------------------------------------------------------


def _cli(models, lists, out, *extra):
    argv = ["similarity", "--model", str(models[0]), "--model", str(models[1])]
    for path in lists:
        argv += ["--list", str(path)]
    return argv + ["--out-dir", str(out), "--bins", "2", "--bootstrap", "200", "--threads", "1", *extra]


def test_cli_end_to_end_with_tiny_models(pitch_items, tiny_model_dir, near_identity_model_dir, tmp_path,
                                         capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "resemblyzer", None)
    models = [tiny_model_dir, near_identity_model_dir]
    # the same list twice, from two folders: pooled ids carry the folder name
    other = tmp_path / "copy"
    other.mkdir()
    copy = _write_list(other / "eval.csv", pitch_items["items"][:2], pitch_items["columns"])
    out = tmp_path / "cli"
    assert study_cli.main(_cli(models, [pitch_items["csv"], copy], out)) == 0
    printed = capsys.readouterr().out
    assert "similarity: pitch" in printed and "smaller = more alike" in printed
    assert "dB per semitone" in printed
    rows = _read_csv(out / "similarity.csv")
    assert [r["id"] for r in rows] == [f"{tmp_path.name}/item{k}" for k in range(4)] + [
        "copy/item0", "copy/item1"]
    record = json.loads((out / "similarity.json").read_text())
    assert record["requested_similarity"] == "auto" and record["similarity"]["kind"] == "pitch"
    assert "similarity" in record["command"] and record["n_items"] == 6
    name = record["models"][0]
    assert record["requested_models"][name] == str(tiny_model_dir)

    # one row against a direct extraction with the same model
    extractor = usef.load_model(tiny_model_dir, device="cpu")
    item = pitch_items["items"][2]
    mixture, target, reference = (sf.read(item[r], dtype="float32")[0] for r in ("mixture", "target", "reference"))
    estimate = extractor.extract(mixture, reference, sample_rate=SR)
    expected = si_sdr(estimate, target) - si_sdr(mixture, target)
    assert float(rows[2][f"si_sdr_imp[{name}]"]) == pytest.approx(expected, abs=1e-3)
    assert {p.name for p in out.iterdir()} >= {"similarity.csv", "similarity_bins.csv", "similarity.json",
                                               "similarity.png"}

    # a missing mixture: recorded, not fatal, exit 1
    broken = _write_list(tmp_path / "broken.csv",
                         [*pitch_items["items"][:3], {**pitch_items["items"][3], "mixture": "absent.wav"}],
                         pitch_items["columns"])
    assert study_cli.main(_cli(models, [broken], tmp_path / "broken_out")) == 1
    assert "FileNotFoundError" in _read_csv(tmp_path / "broken_out" / "similarity.csv")[3]["error"]

    # usage errors: exit 2, a clear message, nothing written
    no_itf = _write_list(tmp_path / "noitf.csv", pitch_items["items"], ["id", "mixture", "reference", "target"])
    assert study_cli.main(_cli(models, [no_itf], tmp_path / "x")) == 2
    assert "interferer" in capsys.readouterr().err
    assert study_cli.main(_cli(models, [pitch_items["csv"]], tmp_path / "x", "--similarity", "dvector")) == 2
    assert "resemblyzer" in capsys.readouterr().err
    assert study_cli.main(_cli(models, [pitch_items["csv"], pitch_items["csv"]], tmp_path / "x")) == 2
    assert "twice" in capsys.readouterr().err
    assert study_cli.main(_cli(models, [pitch_items["csv"]], tmp_path / "x", "--bins", "0")) == 2
    assert study_cli.main(_cli([tmp_path / "nope", models[1]], [pitch_items["csv"]], tmp_path / "x")) == 2
    assert not (tmp_path / "x").exists()


def test_similarity_help_epilog_example_parses(capsys):
    assert study_cli.main(["similarity", "--help"]) == 0
    text = capsys.readouterr().out
    epilog = text[text.index("example:"):]
    example = epilog[epilog.index("usef study similarity"):].split("\n\n")[0]
    args = study_cli.build_parser().parse_args(shlex.split(example.replace("\\\n", " "))[2:])
    assert args.bins == 4 and args.similarity == "auto" and args.threads == 1
    assert set(args.model) <= set(usef.list_models())


def test_report_gets_a_sortable_similarity_column(pitch_items, tmp_path, capsys):
    from usef.bin import report as report_cli
    from usef.evaluate import evaluate_list
    from usef.report.similarity import read_similarity

    register, models = _fake_models()
    for item in pitch_items["items"]:
        register(item)
    for name, fn in models.items():
        evaluate_list(pitch_items["items"], fn, tmp_path / name, with_pesq=False,
                      metadata={"model": {"name": name}, "data": {"list": str(pitch_items["csv"])}})
    similarity_study(models, pitch_items["items"][:3], tmp_path / "sim", kind="pitch", n_bins=1, n_boot=50)
    values, title = read_similarity(tmp_path / "sim" / "similarity.csv")
    assert title == "similarity (pitch)" and sorted(values) == ["item0", "item1", "item2"]

    out = tmp_path / "report"
    argv = [str(tmp_path / "clean"), str(tmp_path / "swap"), "--out", str(out),
            "--similarity", str(tmp_path / "sim" / "similarity.csv")]
    assert report_cli.main(argv) == 0
    assert "1 items have no similarity (pitch) value (e.g. item3)" in capsys.readouterr().out
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'title="similarity (pitch)"' in page
    for item_id, value in values.items():  # the cell after the input SI-SDR holds the exact value
        row = page[page.index(f'<td class="id">{item_id}</td>'):]
        cells = row.split("<td")[1:4]
        assert f'data-v="{float(value)!r}"' in cells[2]
    row = page[page.index('<td class="id">item3</td>'):]
    assert row.split("<td")[3].startswith(' class="num" data-v=""')

    with pytest.raises(ValueError, match="similarity"):
        read_similarity(pitch_items["csv"])
    assert report_cli.main([*argv[:4], "--similarity", str(tmp_path / "absent.csv")]) == 2
