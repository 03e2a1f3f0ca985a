"""usef report: static HTML listening report over eval folders (known metrics, real browser)."""

from __future__ import annotations

import csv
import struct
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("matplotlib", reason="usef[report] extra (matplotlib) not installed")

from usef.bin.main import main as usef_main
from usef.bin.report import main as report_main
from usef.evaluate import evaluate_list, read_eval_list
from usef.report.compare import ItemMismatchError
from usef.report.html import build_report
from usef.report.spectrogram import spectrogram_image, write_spectrogram_png

SR = 8000
# SI-SDR (dB) of each system's estimate per item; the input SI-SDR is 0 dB throughout.
# None: system A raises on that item; "confused": system B returns the interferer + 0.3 target.
PLAN_A = [12.0, 2.0, 8.0, 5.0, 15.0, None]
PLAN_B = [10.0, 6.0, 9.0, "confused", 3.0, 7.0]
CONFUSED_SI_SDR = 20 * np.log10(0.3)  # target share 0.3 of an orthogonal, equal-power interferer
IDS = [f"utt{k}" for k in range(len(PLAN_A))]


def _speech(seed: int) -> np.ndarray:
    t = np.arange(SR) / SR
    f0 = 110.0 + 15.0 * seed
    phase = 2 * np.pi * np.cumsum(f0 + 20 * np.sin(2 * np.pi * 0.8 * t)) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t))
    return 0.3 * x / np.abs(x).max()


def _orthogonal(target: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """Zero-mean noise orthogonal to the zero-mean target: SI-SDR(target + noise) = snr_db."""
    noise = np.random.default_rng(seed).standard_normal(target.size)
    noise -= noise.mean()
    noise -= np.dot(noise, target) / np.dot(target, target) * target
    return noise * np.sqrt(np.dot(target, target) / np.dot(noise, noise) / 10 ** (snr_db / 10))


class _Oracle:
    """extract_fn returning a prepared estimate per mixture (raises for unknown ones)."""

    def __init__(self) -> None:
        self.estimates: dict[bytes, np.ndarray] = {}

    def __call__(self, mixture: np.ndarray, reference: np.ndarray, rate: int) -> np.ndarray:
        key = mixture.astype(np.float32).tobytes()
        if key not in self.estimates:
            raise RuntimeError("model exploded")
        return self.estimates[key]


@pytest.fixture(scope="module")
def evals(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report")
    oracle_a, oracle_b = _Oracle(), _Oracle()
    rows = []
    for k, item_id in enumerate(IDS):
        target = _speech(k) - _speech(k).mean()
        interferer = _orthogonal(target, 0.0, 100 + k)
        mixture = (target + interferer).astype(np.float32)
        paths = {}
        for role, wave in (("mixture", mixture), ("target", target), ("interferer", interferer),
                           ("reference", _speech(k + 7)[: SR // 2])):
            paths[role] = root / "wav" / f"{item_id}_{role}.wav"
            paths[role].parent.mkdir(exist_ok=True)
            sf.write(str(paths[role]), np.asarray(wave, np.float32), SR, subtype="FLOAT")
        rows.append({"id": item_id, **{r: f"wav/{p.name}" for r, p in paths.items()}})
        key = mixture.tobytes()
        if PLAN_A[k] is not None:
            oracle_a.estimates[key] = (target + _orthogonal(target, PLAN_A[k], k)).astype(np.float32)
        if PLAN_B[k] == "confused":
            oracle_b.estimates[key] = (interferer + 0.3 * target).astype(np.float32)
        else:
            oracle_b.estimates[key] = (target + _orthogonal(target, PLAN_B[k], 50 + k)).astype(np.float32)
    eval_csv = root / "eval.csv"
    with open(eval_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    items = read_eval_list(eval_csv)
    # A records its list (as 'usef eval --list' does), B does not
    evaluate_list(items, oracle_a, root / "eval_a", with_pesq=False,
                  metadata={"model": {"name": "sysA"}, "data": {"list": str(eval_csv)}})
    evaluate_list(items, oracle_b, root / "eval_b", with_pesq=False,
                  metadata={"model": {"name": "sysB"}})
    evaluate_list(items[:4], oracle_b, root / "eval_short", with_pesq=False,
                  metadata={"model": {"name": "short"}})
    out = root / "out_ab"
    result = build_report([root / "eval_a", root / "eval_b"], out, title="AB report")
    return {"root": root, "a": root / "eval_a", "b": root / "eval_b", "short": root / "eval_short",
            "csv": eval_csv, "out": out, "result": result}


class _Page(HTMLParser):
    """Rows of table#items (cells with their attributes, media srcs), every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[dict]] = []
        self.headers: list[str] = []
        self.links: list[str] = []
        self.images: list[str] = []
        self.audio: list[str] = []
        self.notes: list[str] = []
        self._in_items = self._in_body = self._in_note = False
        self._cell: dict | None = None
        self._th: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs:
                self.links.append(attrs[key])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "audio":
            self.audio.append(attrs["src"])
            assert attrs.get("preload") == "none"
        if tag == "table" and attrs.get("id") == "items":
            self._in_items = True
        if self._in_items and tag == "th":
            self._th = []
        if self._in_items and tag == "tbody":
            self._in_body = True
        if self._in_body and tag == "tr":
            self.rows.append([])
        if self._in_body and tag == "td":
            self._cell = {"attrs": attrs, "text": "", "audio": [], "img": []}
            self.rows[-1].append(self._cell)
        if self._cell is not None and tag in ("audio", "img"):
            self._cell[tag].append(attrs["src"])
        if tag == "p" and "note" in (attrs.get("class") or ""):
            self._in_note = True
            self.notes.append("")

    def handle_endtag(self, tag):
        if tag == "th" and self._th is not None:
            self.headers.append(" ".join(self._th))
            self._th = None
        if tag == "td":
            self._cell = None
        if tag == "table":
            self._in_items = self._in_body = False
        if tag == "p":
            self._in_note = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._th is not None:
            self._th.append(data.strip())
        if self._in_note:
            self.notes[-1] += data


def _parse(out: Path) -> tuple[_Page, str]:
    text = (out / "index.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    return page, text


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _column(page: _Page, title: str) -> int:
    matches = [k for k, h in enumerate(page.headers) if h == title]
    assert len(matches) == 1, (title, page.headers)
    return matches[0]


def test_spectrogram_thumbnail_puts_a_tone_at_its_frequency(tmp_path):
    t = np.arange(SR) / SR
    image = spectrogram_image(np.sin(2 * np.pi * 1000.0 * t), SR, width=200, height=80)
    assert image.shape == (80, 200)
    # 1 kHz of 0..4 kHz, counted from the bottom row: row 80 - 1 - 20 = 59
    assert np.argmax(image.mean(axis=1)) == 59
    assert image.max() == 1.0
    assert spectrogram_image(np.zeros(300), SR).max() == 0.0  # silence is black, not peak
    png = write_spectrogram_png(np.sin(2 * np.pi * 300.0 * t), SR, tmp_path / "s.png", 120, 40)
    assert _png_size(png) == (120, 40)


def test_report_page_structure_and_files(evals):
    out, result = evals["out"], evals["result"]
    page, text = _parse(out)
    assert "http" not in text and "<title>AB report</title>" in text
    assert [row[1]["text"] for row in page.rows] == IDS
    # every src is relative, stays inside the report folder and exists
    assert page.links and all(":" not in s and not s.startswith("/") and ".." not in s
                              for s in page.links)
    for src in page.links:
        assert (out / src).is_file(), src
    for src in page.images:
        size = _png_size(out / src)
        assert size == (200, 80) or not src.startswith("spec/"), (src, size)
    assert "histogram.png" in page.images
    # sources x 6 items, A's estimate on 5 items (it failed on utt5), B's on 6
    assert len(page.audio) == 3 * 6 + 5 + 6
    assert len(page.images) == 1 + 2 * 6 + 5 + 6
    failed = page.rows[5][_column(page, "estimate sysA")]
    assert "failed" in failed["text"] and "model exploded" in failed["text"] and not failed["audio"]

    # copies are 16-bit PCM of the originals
    mix_src = page.rows[2][_column(page, "mixture")]["audio"][0]
    copy, rate = sf.read(str(out / mix_src), dtype="float32")
    assert sf.info(str(out / mix_src)).subtype == "PCM_16" and rate == SR
    original, _ = sf.read(str(evals["root"] / "wav" / "utt2_mixture.wav"), dtype="float32")
    np.testing.assert_allclose(copy, original, atol=1.0 / 32768)

    # metrics: designed SI-SDRi per item and the A - B delta
    col_a, col_b = _column(page, "SI-SDRi sysA"), _column(page, "SI-SDRi sysB")
    col_d = _column(page, "Δ SI-SDRi sysA − sysB")
    for k, row in enumerate(page.rows):
        if PLAN_A[k] is None:
            assert row[col_a]["attrs"]["data-v"] == "" and row[col_d]["attrs"]["data-v"] == ""
            continue
        b = CONFUSED_SI_SDR if PLAN_B[k] == "confused" else PLAN_B[k]
        assert float(row[col_a]["attrs"]["data-v"]) == pytest.approx(PLAN_A[k], abs=0.05)
        assert float(row[col_d]["attrs"]["data-v"]) == pytest.approx(PLAN_A[k] - b, abs=0.1)
    assert "confused" in page.rows[3][col_b]["text"]
    sys_a, sys_b = result["systems"]
    assert sys_a["mean"] == pytest.approx(np.mean([v for v in PLAN_A if v is not None]), abs=0.05)
    assert sys_a["n"] == 5 and sys_b["n"] == 6
    assert sys_b["failure_rate"] == pytest.approx(1 / 6) and sys_b["confusion_rate"] == pytest.approx(1 / 6)
    assert sys_a["confusion_rate"] == 0.0 and sys_a["failure_rate"] == 0.0
    assert f"{sys_a['mean']:.2f}" in text and "16.7 %" in text
    assert result["notes"] == []


def test_worst_shows_only_the_lowest_items_of_the_first_system(evals, tmp_path):
    result = build_report([evals["a"], evals["b"]], tmp_path / "worst", worst=3)
    page, _ = _parse(tmp_path / "worst")
    # A's SI-SDRi 2 < 5 < 8; utt5 failed in A and is not ranked
    assert [row[1]["text"] for row in page.rows] == ["utt1", "utt3", "utt2"]
    assert result["n_shown"] == 3 and result["n_items"] == 6
    assert any("lowest SI-SDRi of sysA" in note and "3 items" in note and "1 items" in note
               for note in page.notes)
    assert 'aria-sort="ascending"' in (tmp_path / "worst" / "index.html").read_text()
    # B ranks first when given first: 3 < 6 < 7 (its confused item is lowest of all)
    build_report([evals["b"], evals["a"]], tmp_path / "worst_b", worst=4)
    page, _ = _parse(tmp_path / "worst_b")
    assert [row[1]["text"] for row in page.rows] == ["utt3", "utt4", "utt1", "utt5"]


def test_without_item_list_sources_are_omitted_with_a_note(evals, tmp_path):
    result = build_report([evals["b"]], tmp_path / "b_only")
    page, _ = _parse(tmp_path / "b_only")
    assert len(page.rows) == 6 and len(page.audio) == 6  # estimates only
    assert page.rows[0][_column(page, "mixture")]["text"] == "no item list"
    assert any("no item list" in note and "--list" in note for note in page.notes)
    assert result["notes"]
    # --list brings them back
    build_report([evals["b"]], tmp_path / "b_list", eval_list=evals["csv"])
    page, _ = _parse(tmp_path / "b_list")
    assert len(page.audio) == 6 * 4 and not page.notes


def test_mismatched_items_are_refused(evals, tmp_path, capsys):
    with pytest.raises(ItemMismatchError, match="2 ids missing from short.*utt4, utt5"):
        build_report([evals["a"], evals["short"]], tmp_path / "bad")
    assert not (tmp_path / "bad" / "index.html").exists()
    assert report_main([str(evals["a"]), str(evals["short"]), "--out", str(tmp_path / "bad")]) == 2
    assert "do not cover the same items" in capsys.readouterr().err
    with pytest.raises(ValueError, match="worst"):
        build_report([evals["a"]], tmp_path / "bad", worst=0)


def test_cli(evals, tmp_path, capsys):
    out = tmp_path / "cli"
    code = usef_main(["report", str(evals["a"]), str(evals["b"]), "--out", str(out),
                      "--worst", "2", "--title", "CLI <page>"])
    assert code == 0
    assert f"wrote {out / 'index.html'} (2 of 6 items, 2 systems)" in capsys.readouterr().out
    assert "<title>CLI &lt;page&gt;</title>" in (out / "index.html").read_text()
    assert report_main([str(evals["a"]), "--out", str(out), "--worst", "0"]) == 2
    assert report_main([str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def _chrome(tmp_path: Path):
    missing = [p for p in ("/usr/bin/chromium", "/usr/bin/chromedriver") if not Path(p).exists()]
    if missing:
        pytest.skip(f"chromium/chromedriver not installed: {', '.join(missing)} missing")
    try:
        from selenium import webdriver
    except ImportError:
        pytest.skip("chromium/chromedriver not installed: the selenium package is missing")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--no-first-run",
                "--disable-sync", "--window-size=1600,1000", f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path="/usr/bin/chromedriver")
    return webdriver.Chrome(options=options, service=service)


def _wait(driver, script: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not driver.execute_script(script):
        assert time.monotonic() < deadline, f"timed out waiting for: {script}"
        time.sleep(0.1)


def test_page_works_in_headless_chromium(evals, tmp_path):
    driver = _chrome(tmp_path)
    try:
        driver.get((evals["out"] / "index.html").as_uri())
        # lazy images load only near the viewport: make them eager and visit each one
        driver.execute_script(
            "document.querySelectorAll('img').forEach(function(i){i.loading='eager';i.scrollIntoView();});"
        )
        _wait(driver, "return Array.from(document.images).every(function(i){return i.complete;});")
        images = driver.execute_script(
            "return Array.from(document.images).map(function(i){return [i.getAttribute('src'), i.naturalWidth];});"
        )
        assert len(images) == 24 and all(width > 0 for _, width in images), images

        driver.execute_script(
            "document.querySelectorAll('audio').forEach(function(a){a.preload='metadata';a.load();});"
        )
        _wait(driver, "return Array.from(document.querySelectorAll('audio'))"
                      ".every(function(a){return a.readyState >= 1 || a.error !== null;});")
        audio = driver.execute_script(
            "return Array.from(document.querySelectorAll('audio')).map(function(a){"
            "return [a.getAttribute('src'), a.readyState, a.error && a.error.code, a.duration];});"
        )
        assert len(audio) == 29
        for src, ready, error, duration in audio:
            assert error is None and ready >= 1, (src, ready, error)
            assert duration == pytest.approx(0.5 if "reference" in src else 1.0, abs=0.01), src

        column = driver.execute_script(
            "var h=document.querySelectorAll('#items thead th');"
            "for(var i=0;i<h.length;i++){if(h[i].textContent==='SI-SDRisysB'){return i;}} return -1;"
        )
        assert column >= 0
        read = ("return Array.from(document.querySelectorAll('#items tbody tr')).map(function(r){"
                f"return [r.cells[1].textContent, r.cells[{column}].getAttribute('data-v')];}});")
        assert [i for i, _ in driver.execute_script(read)] == IDS
        header = driver.find_elements("css selector", "#items thead th")[column]
        header.click()
        ascending = driver.execute_script(read)
        values = [float(v) for _, v in ascending]
        assert values == sorted(values) and ascending[0][0] == "utt3"
        assert header.get_attribute("aria-sort") == "ascending"
        header.click()
        descending = driver.execute_script(read)
        assert [float(v) for _, v in descending] == sorted(values, reverse=True)
        assert descending[0][0] == "utt0"  # B's best: 10 dB
        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()


def _copy_eval(src: Path, dst: Path, **summary_changes) -> Path:
    """A copy of an eval folder whose summary.json has top-level keys replaced."""
    import json
    import shutil

    shutil.copytree(src, dst)
    summary = json.loads((dst / "summary.json").read_text(encoding="utf-8"))
    summary.update(summary_changes)
    (dst / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return dst


def test_recorded_item_list_is_found_from_any_working_folder(evals, tmp_path, monkeypatch):
    import os

    csv_path = evals["csv"].resolve()
    relative = _copy_eval(evals["a"], tmp_path / "evals" / "rel", data={
        "list": os.path.relpath(csv_path, tmp_path / "evals" / "rel")})  # relative to the summary
    absolute = _copy_eval(evals["a"], tmp_path / "evals" / "abs", data={"list": str(csv_path)})
    lost = _copy_eval(evals["a"], tmp_path / "evals" / "lost", data={"list": "gone/eval.csv"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither the eval folders' nor the list's folder
    for folder in (relative, absolute):
        out = tmp_path / f"out_{folder.name}"
        result = build_report([folder], out)
        page, _ = _parse(out)
        assert result["notes"] == [] and len(page.audio) == 3 * 6 + 5, folder  # sources + A's estimates
        for src in page.audio:
            assert (out / src).is_file()
    result = build_report([lost], tmp_path / "out_lost")
    assert len(result["notes"]) == 1 and "gone/eval.csv" in result["notes"][0]
    assert "neither as given nor next to the summary" in result["notes"][0]
    # an old summary with the path as typed where `usef eval` ran still works from that folder
    monkeypatch.chdir(csv_path.parent)
    legacy = _copy_eval(evals["a"], tmp_path / "evals" / "legacy", data={"list": csv_path.name})
    assert build_report([legacy], tmp_path / "out_legacy")["notes"] == []


def test_page_fits_a_1280_px_window(evals, tmp_path):
    """Two systems with long model names: every column on screen, names on one line."""
    long_a = "usef-tfgridnet-8k-libri2mix-average-best5-of-a-long-run"
    long_b = "embedding-tfgridnet-8k-libri2mix-average-best5-of-a-long-run"
    dir_a = _copy_eval(evals["a"], tmp_path / "a", model={"name": long_a})
    dir_b = _copy_eval(evals["b"], tmp_path / "b", model={"name": long_b})
    out = tmp_path / "long"
    build_report([dir_a, dir_b], out)
    driver = _chrome(tmp_path)
    try:
        driver.set_window_size(1280, 900)
        inner = driver.execute_script("return window.innerWidth;")
        if inner != 1280:  # window decorations: make the page itself 1280 px wide
            driver.set_window_size(1280 + (1280 - inner), 900)
        for page in (out, evals["out"]):
            driver.get((page / "index.html").as_uri())
            assert driver.execute_script("return window.innerWidth;") == 1280
            width = driver.execute_script("return document.documentElement.clientWidth;")
            assert driver.execute_script("return document.documentElement.scrollWidth;") <= width
            beyond = driver.execute_script(
                "var w=arguments[0],out=[];document.querySelectorAll('body *').forEach(function(e){"
                "var r=e.getBoundingClientRect();if(r.width>0&&r.right>w+0.5){"
                "out.push(e.tagName+' '+(e.textContent||'').slice(0,40)+' '+r.right);}});return out;", width)
            assert beyond == [], beyond
            names = driver.execute_script(
                "return Array.from(document.querySelectorAll('#items thead .name')).map(function(e){"
                "return [e.getAttribute('title'), e.getBoundingClientRect().height,"
                " parseFloat(getComputedStyle(e).lineHeight)];});")
            assert len(names) == 2 + 2 + 2  # SI-SDRi, Δ (two names), estimate
            for title, height, line in names:
                assert height < 1.5 * line, (title, height, line)  # one line each
            headers = driver.execute_script(
                "return Array.from(document.querySelectorAll('#items thead th')).map(function(t){"
                "return t.textContent;});")
            assert headers[-1] == "target" and sum(h.startswith("estimate") for h in headers) == 2
        # full names stay available on hover
        assert {t for t, _, _ in names} >= {"sysA", "sysB", "− sysB"}
        driver.get((out / "index.html").as_uri())
        titles = driver.execute_script(
            "return Array.from(document.querySelectorAll('#items thead .name')).map(function(e){"
            "return e.getAttribute('title');});")
        assert long_a in titles and long_b in titles
    finally:
        driver.quit()
