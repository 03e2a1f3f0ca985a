"""usef.bin.results: the recipes' RESULTS.md table."""

import json


def test_results_markdown_table(tmp_path):
    from usef.bin.results import main as results_main

    summary = {
        "metrics": {"si_sdr_imp": {"mean": 4.5, "ci95_low": 4.1, "ci95_high": 4.9, "median": 4.7, "n": 300}},
        "failure_rate": 0.073, "n_items": 300, "n_failed_items": 0,
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert results_main([str(tmp_path / "summary.json"), "--out", str(tmp_path / "R.md"), "--title", "T"]) == 0
    text = (tmp_path / "R.md").read_text()
    assert "| si_sdr_imp | 4.50 | [4.10, 4.90] | 4.70 | 300 |" in text and "| failure_rate | 7.30 % |" in text
    assert results_main([str(tmp_path / "missing.json"), "--out", str(tmp_path / "x.md")]) == 2
