"""tools/plot_learning_curves.py: which rows and values make a curve."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_tool

plot = load_tool("plot_learning_curves")


def _log(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_curves_by_step_offset_minutes_and_key(tmp_path):
    log = _log(tmp_path / "log.jsonl", [
        {"step": 10, "step_time": 6.0, "loss": -1.0},
        {"step": 20, "step_time": 3.0, "dev_si_sdr_imp": 4.5, "dev_raw_si_sdr_imp": 4.25},
        {"step": 40, "step_time": 1.5, "dev_si_sdr_imp": 5.0},
    ])
    assert plot.read_curve(f"a={log}") == ("a", [(20, 4.5), (40, 5.0)])
    assert plot.read_curve(f"a={log}+100")[1] == [(120.0, 4.5), (140.0, 5.0)]
    # minutes: 10 x 6 s + 10 x 3 s = 1.5 min at step 20, + 20 x 1.5 s = 2.0 min at step 40
    assert plot.read_curve(f"a={log}", "minutes")[1] == [(1.5, 4.5), (2.0, 5.0)]
    assert plot.read_curve(f"raw={log}#dev_raw_si_sdr_imp") == ("raw", [(20, 4.25)])
    with pytest.raises(ValueError, match="no rows with 'dev_missing'"):
        plot.read_curve(f"a={log}#dev_missing")
    svg = plot.svg_plot([plot.read_curve(f"a={log}"), plot.read_curve(f"b={log}#dev_raw_si_sdr_imp")], "t")
    assert svg.count("<polyline") == 2 and ">a</text>" in svg and ">b</text>" in svg
