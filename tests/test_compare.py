"""usef compare: paired bootstrap / Wilcoxon comparison of two eval folders, known answers."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from usef.bin.compare import main as compare_main
from usef.report.compare import (
    ItemMismatchError,
    format_table,
    load_eval,
    paired_compare,
    wilcoxon_signed_rank,
)

COLUMNS = ["id", "input_si_sdr", "si_sdr", "si_sdr_imp", "sdr", "sdr_imp", "pesq", "stoi"]


def write_eval(
    folder: Path,
    imps: list[float] | np.ndarray,
    name: str | None = "usef_conformer",
    ids: list[str] | None = None,
    confused: list[bool] | None = None,
    errors: dict[str, str] | None = None,
) -> Path:
    """An eval folder laid out like usef.evaluate writes it (failed rows have empty metrics)."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = ids or [f"utt{i:03d}" for i in range(len(imps))]
    columns = COLUMNS + (["si_sdr_interferer", "confused"] if confused is not None else []) + ["error"]
    with open(folder / "metrics.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for k, (item_id, imp) in enumerate(zip(ids, imps)):
            error = (errors or {}).get(item_id, "")
            row = {"id": item_id, "error": error}
            if not error:
                row.update(input_si_sdr="0", si_sdr=repr(float(imp)), si_sdr_imp=repr(float(imp)),
                           sdr="1.5", sdr_imp="1.5", pesq="nan", stoi="0.9")
                if confused is not None:
                    row.update(si_sdr_interferer="-3", confused=str(bool(confused[k])))
            writer.writerow(row)
    summary = {"n_items": len(ids)}
    if name is not None:
        summary["model"] = {"name": name, "sample_rate": 8000}
    (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return folder


def shifted_pair(tmp_path: Path, n: int = 30) -> tuple[Path, Path]:
    # quarter-dB steps are exact in binary, so A - B is exactly 1.0 for every item
    a = 5.0 + 0.25 * np.arange(n)
    return (write_eval(tmp_path / "eval_a", a, name="usef_conformer"),
            write_eval(tmp_path / "eval_b", a - 1.0, name="embedding_film"))


def test_constant_shift_gives_exact_answer(tmp_path: Path) -> None:
    dir_a, dir_b = shifted_pair(tmp_path)
    result = paired_compare(dir_a, dir_b, n_bootstrap=2000)
    assert result["n"] == 30
    assert result["mean_delta"] == pytest.approx(1.0, abs=1e-12)
    assert result["ci95"] == pytest.approx([1.0, 1.0], abs=1e-12)
    assert result["win_rate"] == 1.0
    assert result["p_value"] < 1e-3
    assert result["a"]["mean"] == pytest.approx(5.0 + 0.25 * 14.5)
    assert result["b"]["mean"] == pytest.approx(4.0 + 0.25 * 14.5)
    assert (result["a"]["name"], result["b"]["name"]) == ("usef_conformer", "embedding_film")
    assert result["n_dropped"] == 0
    json.dumps(result, allow_nan=False)  # strict JSON
    table = format_table(result)
    assert "usef_conformer" in table and "+1.000" in table and "100.0%" in table


def test_symmetric_differences_are_not_significant(tmp_path: Path) -> None:
    b = 3.0 + 0.5 * np.arange(30)
    a = b + np.array([1.0, -1.0] * 15)
    result = paired_compare(write_eval(tmp_path / "a", a), write_eval(tmp_path / "b", b),
                            n_bootstrap=2000)
    assert result["mean_delta"] == pytest.approx(0.0, abs=1e-12)
    low, high = result["ci95"]
    assert low < 0.0 < high
    assert result["p_value"] == pytest.approx(1.0, abs=1e-6)
    assert result["win_rate"] == 0.5


def test_ties_count_half_in_win_rate(tmp_path: Path) -> None:
    b = np.zeros(4)
    a = np.array([1.0, 0.0, 0.0, -1.0])  # one win, two ties, one loss
    result = paired_compare(write_eval(tmp_path / "a", a), write_eval(tmp_path / "b", b),
                            n_bootstrap=100)
    assert result["win_rate"] == 0.5


def test_bootstrap_is_seeded_and_sensible(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    b = rng.normal(10.0, 3.0, 200)
    delta = rng.normal(0.5, 2.0, 200)
    dir_a = write_eval(tmp_path / "a", b + delta)
    dir_b = write_eval(tmp_path / "b", b)
    first = paired_compare(dir_a, dir_b, seed=0, n_bootstrap=3000)
    again = paired_compare(dir_a, dir_b, seed=0, n_bootstrap=3000)
    other = paired_compare(dir_a, dir_b, seed=1, n_bootstrap=3000)
    assert first["ci95"] == again["ci95"]
    assert first["ci95"] != other["ci95"]
    assert np.allclose(first["ci95"], other["ci95"], atol=0.05)
    # the percentile CI of a mean of 200 values is close to the normal-theory one
    d = np.array([load_eval(dir_a)["rows"][i]["si_sdr_imp"] for i in load_eval(dir_a)["ids"]]) - b
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert np.allclose(first["ci95"], [d.mean() - half, d.mean() + half], atol=0.06)
    assert first["ci95"][0] < first["mean_delta"] < first["ci95"][1]


def test_own_wilcoxon_agrees_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    plain = rng.normal(0.3, 1.0, 40)
    tied = np.round(rng.normal(0.2, 1.0, 60) * 2) / 2  # ties and exact zeros
    for sample in (plain, tied, np.array([1.0, 2.0, 0.0, 3.0])):
        expected = stats.wilcoxon(sample, method="approx").pvalue
        assert wilcoxon_signed_rank(sample) == pytest.approx(expected, abs=1e-3)
    assert wilcoxon_signed_rank(np.zeros(5)) == 1.0
    assert wilcoxon_signed_rank(-plain) == pytest.approx(wilcoxon_signed_rank(plain))


def test_fallback_without_scipy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dir_a, dir_b = shifted_pair(tmp_path)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # import now raises ImportError
    result = paired_compare(dir_a, dir_b, n_bootstrap=100)
    assert result["p_value_method"] == "normal approximation"
    assert result["p_value"] < 1e-3


def test_mismatched_items_refused_then_intersected(tmp_path: Path, capsys) -> None:
    values = np.linspace(1.0, 8.0, 12)
    ids = [f"utt{i:03d}" for i in range(12)]
    dir_a = write_eval(tmp_path / "a", values, ids=ids, errors={"utt002": "RuntimeError: boom"})
    dir_b = write_eval(tmp_path / "b", np.r_[values[:10] - 0.5, 0.0],
                       ids=ids[:10] + ["extra_b"], name="embedding_film")
    with pytest.raises(ItemMismatchError) as info:
        paired_compare(dir_a, dir_b)
    message = str(info.value)
    assert "utt010" in message and "utt011" in message and "extra_b" in message
    assert "utt002" in message and "--intersect" in message
    assert info.value.details["failed_in_a_only"] == ["utt002"]

    assert compare_main([str(dir_a), str(dir_b)]) == 2
    assert "utt010" in capsys.readouterr().err

    result = paired_compare(dir_a, dir_b, intersect=True, n_bootstrap=200)
    assert result["n"] == 9
    assert result["n_dropped"] == 4
    assert result["dropped"] == {"only_in_a": 2, "only_in_b": 1, "failed_in_a_only": 1,
                                 "failed_in_b_only": 0, "failed_in_both": 0}
    assert result["mean_delta"] == pytest.approx(0.5)


def test_failed_in_both_is_left_out_without_intersect(tmp_path: Path) -> None:
    errors = {"utt001": "ValueError: bad file"}
    dir_a = write_eval(tmp_path / "a", [3.0, 0.0, 5.0], errors=errors)
    dir_b = write_eval(tmp_path / "b", [2.0, 0.0, 4.0], errors=errors)
    result = paired_compare(dir_a, dir_b, n_bootstrap=100)
    assert result["n"] == 2 and result["dropped"]["failed_in_both"] == 1


def test_failure_and_confusion_rates(tmp_path: Path) -> None:
    a = [5.0, -1.0, 3.0, 4.0, 6.0, 7.0, 8.0, -2.0, 9.0, 1.0]  # 2 of 10 below 0 dB
    b = [4.0, -2.0, -3.0, -4.0, 2.0, 1.0, 0.5, -0.5, 0.0, 3.0]  # 4 below 0 dB (0.0 is not)
    conf_a = [False] * 9 + [True]
    conf_b = [True, True, True] + [False] * 7
    result = paired_compare(write_eval(tmp_path / "a", a, confused=conf_a),
                            write_eval(tmp_path / "b", b, confused=conf_b), n_bootstrap=100)
    assert result["a"]["failure_rate"] == pytest.approx(0.2)
    assert result["b"]["failure_rate"] == pytest.approx(0.4)
    assert result["a"]["confusion_rate"] == pytest.approx(0.1)
    assert result["b"]["confusion_rate"] == pytest.approx(0.3)
    # no confused column -> no confusion rate
    plain = paired_compare(write_eval(tmp_path / "c", a), write_eval(tmp_path / "d", b),
                           n_bootstrap=100)
    assert plain["a"]["confusion_rate"] is None
    assert "-" in format_table(plain)


def test_names_fall_back_to_folders(tmp_path: Path) -> None:
    same_a = write_eval(tmp_path / "run1", [1.0, 2.0], name="usef_conformer")
    same_b = write_eval(tmp_path / "run2", [0.0, 1.0], name="usef_conformer")
    result = paired_compare(same_a, same_b, n_bootstrap=10)
    assert (result["a"]["name"], result["b"]["name"]) == ("run1", "run2")
    unnamed = write_eval(tmp_path / "nameless", [0.0, 1.0], name=None)
    assert load_eval(unnamed)["name"] == "nameless"


def test_bad_arguments(tmp_path: Path) -> None:
    dir_a, dir_b = shifted_pair(tmp_path)
    with pytest.raises(ValueError, match="metric 'nope'"):
        paired_compare(dir_a, dir_b, metric="nope")
    with pytest.raises(ValueError, match="n_bootstrap"):
        paired_compare(dir_a, dir_b, n_bootstrap=0)
    with pytest.raises(ValueError, match="no item has a finite 'pesq'"):
        paired_compare(dir_a, dir_b, metric="pesq")  # all nan, as with --no-pesq
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        load_eval(tmp_path)
    assert compare_main([str(dir_a), str(tmp_path / "missing")]) == 2
    assert compare_main([str(dir_a), str(dir_b), "--metric", "nope"]) == 2


def test_cli_end_to_end(tmp_path: Path, capsys) -> None:
    dir_a, dir_b = shifted_pair(tmp_path)
    assert compare_main([str(dir_a), str(dir_b), "--bootstrap", "500", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "embedding_film" in printed and "Wilcoxon" in printed
    written = json.loads((dir_a / "compare_embedding_film.json").read_text())
    assert written["mean_delta"] == pytest.approx(1.0)
    assert written["seed"] == 3 and written["n_bootstrap"] == 500 and written["n"] == 30

    out = tmp_path / "reports" / "cmp.json"
    assert compare_main([str(dir_a), str(dir_b), "--metric", "sdr_imp", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["mean_delta"] == 0.0  # sdr_imp equal in both

    from usef.bin.main import main as usef_main

    assert usef_main(["compare", str(dir_a), str(dir_b), "--bootstrap", "50"]) == 0
    assert compare_main(["--help"]) == 0
    assert "usef compare exp/eval_usef exp/eval_film" in capsys.readouterr().out


def test_reads_folders_written_by_evaluate(tmp_path: Path) -> None:
    """Guards against format drift: load what usef.evaluate really writes."""
    sf = pytest.importorskip("soundfile")
    from usef.evaluate import evaluate_list

    rng = np.random.default_rng(0)
    items = []
    for k in range(4):
        target = rng.normal(0, 0.1, 4000).astype(np.float32)
        interferer = rng.normal(0, 0.1, 4000).astype(np.float32)
        paths = {}
        for key, wave in (("target", target), ("interferer", interferer),
                          ("mixture", target + interferer), ("reference", target)):
            paths[key] = str(tmp_path / f"{key}{k}.wav")
            sf.write(paths[key], wave, 8000, subtype="FLOAT")
        items.append({"id": f"m{k}", **paths})
    items.append({"id": "broken", "mixture": str(tmp_path / "none.wav"),
                  "reference": str(tmp_path / "none.wav"), "target": str(tmp_path / "none.wav")})

    def half_clean(mixture, reference, rate):
        return 0.5 * mixture + 0.5 * reference  # reference is the target here

    evaluate_list(items, lambda m, r, sr: m, tmp_path / "mix", with_pesq=False,
                  write_estimates=False, metadata={"model": {"name": "passthrough"}})
    # usef eval records which model served each item in a text column: compare must read past it
    evaluate_list(items, lambda m, r, sr: (half_clean(m, r, sr), {"model": "half-clean-8k"}), tmp_path / "half",
                  with_pesq=False, write_estimates=False, metadata={"model": {"name": "half_clean"}})
    loaded = load_eval(tmp_path / "half")
    assert loaded["name"] == "half_clean" and loaded["rows"]["broken"]["error"]
    assert loaded["rows"]["m0"]["model"] == "half-clean-8k"
    assert loaded["rows"]["m0"]["confused"] is False
    result = paired_compare(tmp_path / "half", tmp_path / "mix", n_bootstrap=200)
    assert result["n"] == 4 and result["dropped"]["failed_in_both"] == 1
    assert result["mean_delta"] > 3.0 and result["win_rate"] == 1.0
    assert result["b"]["mean"] == pytest.approx(0.0, abs=1e-3)  # passthrough: no improvement
    assert result["a"]["confusion_rate"] == 0.0
