"""tools/subset_scores.py: per-subset means, rates and paired differences of two eval folders."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("subset_scores", REPO / "tools" / "subset_scores.py")
subset_scores = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(subset_scores)


def _eval_dir(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.mkdir()
    lines = ["id,model,si_sdr_imp,confused,error"] + [f"{i},m,{v},{c}," for i, v, c in rows]
    (path / "metrics.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_subsets_paired_and_rates_known_answers(tmp_path):
    speakers = tmp_path / "speakers.csv"
    speakers.write_text("id,target_speaker,reference_source\n"
                        "000000,a,other recording\n000001,a,other recording\n"
                        "000002,b,same recording\n000003,b,same recording\n000004,c,same recording\n",
                        encoding="utf-8")
    first = _eval_dir(tmp_path / "first", [("000000", "2.0", "False"), ("000001", "-1.0", "True"),
                                           ("000002", "4.0", "False"), ("000003", "6.0", "False"),
                                           ("000004", "", "")])  # target absent: no SI-SDRi
    second = _eval_dir(tmp_path / "second", [("000000", "3.0", "False"), ("000001", "1.0", "False"),
                                             ("000002", "3.0", "False"), ("000003", "8.0", "True"),
                                             ("000004", "", "")])
    out = tmp_path / "subsets.json"
    assert subset_scores.main(["--speakers", str(speakers), str(first), str(second), "--json", str(out)]) == 0
    table = json.loads(out.read_text())["subsets"]
    assert set(table) == {"other recording", "same recording"}
    other, same = table["other recording"], table["same recording"]
    assert other["n"] == 2 and same["n"] == 2  # the absent item is left out
    assert other["folders"][str(first)]["mean"] == pytest.approx(0.5)
    assert other["folders"][str(first)]["failure_rate"] == pytest.approx(0.5)
    assert other["folders"][str(first)]["confusion_rate"] == pytest.approx(0.5)
    assert other["paired"]["mean_delta"] == pytest.approx(1.5)  # (+1 and +2) / 2
    assert other["paired"]["second_wins"] == pytest.approx(1.0)
    # usef compare's bootstrap: two deltas, so resampled means are only -1, 0.5 or 2 (a quarter,
    # half, quarter of draws): the 95 % interval is [-1, 2]; for deltas +1 and +2 it is [1, 2]
    assert same["paired"]["mean_delta"] == pytest.approx(0.5)
    assert [same["paired"]["ci95_low"], same["paired"]["ci95_high"]] == pytest.approx([-1.0, 2.0])
    assert [other["paired"]["ci95_low"], other["paired"]["ci95_high"]] == pytest.approx([1.0, 2.0])
    # each folder's mean: 4 and 6 -> 5, sd 1.4142, t(0.975, 1) = 12.706 -> half-width 12.706
    assert same["folders"][str(first)]["ci95_high"] - 5.0 == pytest.approx(12.706, abs=0.001)
    assert same["folders"][str(second)]["confusion_rate"] == pytest.approx(0.5)


def test_missing_column_is_a_clear_error(tmp_path, capsys):
    speakers = tmp_path / "speakers.csv"
    speakers.write_text("id,target_speaker\n000000,a\n", encoding="utf-8")
    first = _eval_dir(tmp_path / "e", [("000000", "1.0", "False")])
    second = _eval_dir(tmp_path / "f", [("000000", "2.0", "False")])
    assert subset_scores.main(["--speakers", str(speakers), str(first), str(second)]) == 1
    assert "reference_source" in capsys.readouterr().err
