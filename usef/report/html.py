"""Static HTML listening report over one or more ``usef eval`` folders.

The page (``index.html``) needs no server and loads nothing from the network: CSS
and the column-sorting script are inline, and every audio file and picture it
shows is copied under the output folder and linked by a relative path, so the
folder can be moved or zipped as a whole. Layout of ``out_dir``::

    index.html
    histogram.png                   SI-SDRi per system
    audio/<nnnn>_<id>/<role>.wav    mixture, reference, target, est<k> (16-bit PCM)
    spec/<nnnn>_<id>/<role>.png     spectrogram thumbnails

Audio is rewritten as 16-bit PCM WAV (every browser plays it; estimates are stored
as float WAV by ``usef eval``), scaled down only when its peak exceeds full scale.
"""

from __future__ import annotations

import html
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import soundfile as sf

from usef.evaluate_io import safe_name
from usef.report.compare import load_eval
from usef.report.html_assets import (
    CLIP_MIN_EM,
    CSS,
    ID_EM,
    INDEX_EM,
    JS,
    NUMBER_EM,
    SORT_HINT,
)
from usef.report.html_systems import (
    METRIC,
    PathLike,
    _check_same_ids,
    _display_names,
    _source_items,
    _system_summary,
)
from usef.report.spectrogram import _require_matplotlib, write_spectrogram_png

logger = logging.getLogger(__name__)

__all__ = ["build_report"]

ProgressFn = Callable[[int, int], None]

SOURCE_ROLES = ("mixture", "reference", "target")
THUMB_WIDTH, THUMB_HEIGHT = 200, 80


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _href(path: str) -> str:
    return html.escape(quote(path), quote=True)


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text  # no "-0.00"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100.0 * value:.1f} %"


def _name(name: str) -> str:
    """A model name on one line, cut with an ellipsis when too long, the full name on hover."""
    return f'<span class="name" title="{_esc(name)}">{_esc(name)}</span>'


def _copy_clip(src: Path, wav_dst: Path, png_dst: Path | None) -> None:
    """Rewrite ``src`` as 16-bit PCM WAV and draw its spectrogram from the same samples."""
    wave, rate = sf.read(str(src), dtype="float32", always_2d=True)
    mono = wave.mean(axis=1)
    if mono.size == 0:
        raise ValueError(f"empty audio file: {src}")
    peak = float(np.max(np.abs(mono)))
    if peak > 1.0:  # PCM would clip: scale the clip down instead
        mono = mono / peak
    wav_dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(wav_dst), mono, rate, format="WAV", subtype="PCM_16")
    if png_dst is not None:
        write_spectrogram_png(mono, rate, png_dst, THUMB_WIDTH, THUMB_HEIGHT)


def _clip_cell(
    src: Path | None, out: Path, folder: str, role: str, with_image: bool, missing: str
) -> str:
    if src is None:
        return f'<td class="clip muted">{_esc(missing)}</td>'
    wav_rel, png_rel = f"audio/{folder}/{role}.wav", f"spec/{folder}/{role}.png"
    try:
        _copy_clip(src, out / wav_rel, out / png_rel if with_image else None)
    except (OSError, ValueError, RuntimeError) as exc:  # soundfile raises RuntimeError subclasses
        logger.warning("cannot copy %s: %s", src, exc)
        return f'<td class="clip err">cannot read {_esc(src.name)}: {_esc(exc)}</td>'
    image = (f'<img src="{_href(png_rel)}" width="{THUMB_WIDTH}" height="{THUMB_HEIGHT}" '
             f'loading="lazy" alt="{_esc(role)} spectrogram">') if with_image else ""
    return (f'<td class="clip">{image}<audio controls preload="none" '
            f'src="{_href(wav_rel)}"></audio></td>')


def _num_cell(value: float | None, extra: str = "") -> str:
    finite = value is not None and math.isfinite(value)
    return f'<td class="num" data-v="{repr(float(value)) if finite else ""}">{_fmt(value)}{extra}</td>'


def _histogram(summaries: Sequence[dict[str, Any]], names: Sequence[str], path: Path) -> bool:
    """Overlaid SI-SDRi histograms on shared bins; False when there is nothing to draw."""
    _require_matplotlib()
    from matplotlib.figure import Figure

    every = np.concatenate([np.asarray(s["values"], dtype=np.float64) for s in summaries])
    if every.size == 0:
        return False
    bins = np.histogram_bin_edges(every, bins=int(np.clip(every.size // 3, 5, 40)))
    fig = Figure(figsize=(7.0, 2.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for summary, name in zip(summaries, names):
        if summary["values"]:
            ax.hist(summary["values"], bins=bins, histtype="step", linewidth=1.6, label=name)
    ax.axvline(0.0, color="0.4", linewidth=0.8, linestyle="--")
    ax.set_xlabel("SI-SDRi (dB)")
    ax.set_ylabel("items")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize="small")
    fig.savefig(str(path), format="png")
    return True


def _summary_table(summaries: Sequence[dict[str, Any]], names: Sequence[str],
                   systems: Sequence[dict[str, Any]]) -> str:
    rows = []
    for summary, name, system in zip(summaries, names, systems):
        low, high = summary["ci95"]
        ci = f"[{_fmt(low)}, {_fmt(high)}]" if math.isfinite(low) else "–"
        failed = f" ({summary['n_failed_items']} failed)" if summary["n_failed_items"] else ""
        rows.append(
            f'<tr><td>{_name(name)}</td><td class="dir">{_esc(system["dir"])}</td>'
            f'<td class="num">{_fmt(summary["mean"])}</td><td class="num">{ci}</td>'
            f'<td class="num">{_pct(summary["failure_rate"])}</td>'
            f'<td class="num">{_pct(summary["confusion_rate"])}</td>'
            f'<td class="num">{summary["n"]} / {summary["n_items"]}{failed}</td></tr>'
        )
    return ('<table id="summary"><thead><tr><th>system</th><th>eval folder</th><th>mean SI-SDRi (dB)</th>'
            "<th>95% CI</th><th>failure rate<br>(SI-SDRi &lt; 0)</th><th>confusion rate</th>"
            "<th>n scored / items</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def build_report(
    eval_dirs: Sequence[PathLike],
    out_dir: PathLike,
    worst: int | None = None,
    title: str | None = None,
    eval_list: PathLike | None = None,
    progress: ProgressFn | None = None,
    extra_columns: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """Write a static HTML listening report of ``eval_dirs`` (same items) into ``out_dir``.

    Args:
        eval_dirs: ``usef eval`` output folders scored on the same item ids; the
            first is the reference system for ``worst`` and the delta column.
        out_dir: created if needed; ``index.html``, ``audio/`` and ``spec/`` are
            (over)written there.
        worst: show only the ``worst`` items with the lowest SI-SDRi of the first
            system, lowest first (items it failed on are not ranked).
        title: page title (default ``"usef listening report"``).
        eval_list: evaluation list CSV giving each item's mixture, reference and
            target; default: the list recorded in summary.json (``data.list``),
            absolute or relative to that summary's folder (or, for older
            summaries, to the current folder). Without one those players are
            left out and the page says so.
        progress: called as ``progress(done, total)`` after each item row.
        extra_columns: column title -> {item id: number}, sortable columns after the
            input SI-SDR (e.g. ``{"similarity": ...}`` from ``usef study similarity``);
            an id without a value shows a dash.

    Returns:
        ``{"index": path of index.html, "n_items", "n_shown", "systems": [{name,
        dir, mean, ci95, failure_rate, confusion_rate, n}], "notes": [str]}``.

    Raises ValueError for bad arguments, ItemMismatchError (a ValueError) when the
    folders' item ids differ, FileNotFoundError for a missing folder or list, and
    ImportError when matplotlib (``usef[report]``) is missing.
    """
    if not eval_dirs:
        raise ValueError("eval_dirs must name at least one eval folder")
    if worst is not None and (isinstance(worst, bool) or not isinstance(worst, int) or worst < 1):
        raise ValueError(f"worst must be a positive integer or None, got {worst!r}")
    _require_matplotlib()
    systems = [load_eval(d) for d in eval_dirs]
    names = _display_names(systems)
    _check_same_ids(systems, names)
    sources, source_note = _source_items(systems, eval_list)
    notes = [source_note] if source_note else []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    all_ids = list(systems[0]["ids"])
    position = {item_id: k for k, item_id in enumerate(all_ids)}
    first_rows = systems[0]["rows"]
    if worst is not None:
        ranked = [i for i in all_ids
                  if not first_rows[i]["error"] and math.isfinite(first_rows[i].get(METRIC, math.nan))]
        shown = sorted(ranked, key=lambda i: first_rows[i][METRIC])[:worst]
        unranked = len(all_ids) - len(ranked)
        notes.insert(0, f"Showing only the {len(shown)} items with the lowest SI-SDRi of "
                     f"{names[0]}, worst first, out of {len(all_ids)} items"
                     + (f" ({unranked} items it has no SI-SDRi for are not ranked)" if unranked else "")
                     + ". The summary above covers all items.")
    else:
        shown = all_ids
    if sources is not None:
        unlisted = [i for i in shown if i not in sources]
        if unlisted:
            notes.append(f"{len(unlisted)} items are not in the item list; their mixture, "
                         f"reference and target audio are omitted (e.g. {unlisted[0]}).")

    summaries = [_system_summary(s) for s in systems]
    has_histogram = _histogram(summaries, names, out / "histogram.png")

    head = ['<th data-type="num" aria-sort="none" tabindex="0">#</th>',
            '<th data-type="text" aria-sort="none" tabindex="0">id</th>',
            '<th data-type="num" aria-sort="none" tabindex="0">input <span class="nw">SI-SDR</span></th>']
    extra = dict(extra_columns or {})
    head += [f'<th data-type="num" aria-sort="none" tabindex="0">{_name(column)}</th>' for column in extra]
    for column, values in extra.items():
        missing = [i for i in shown if i not in values]
        if missing:
            notes.append(f"{len(missing)} items have no {column} value (e.g. {missing[0]}).")
    for k, name in enumerate(names):
        state = "ascending" if worst is not None and k == 0 else "none"
        head.append(f'<th data-type="num" aria-sort="{state}" tabindex="0">'
                    f'<span class="nw">SI-SDRi</span>{_name(name)}</th>')
    if len(systems) > 1:
        head.append(f'<th data-type="num" aria-sort="none" tabindex="0">Δ <span class="nw">SI-SDRi</span>'
                    f'{_name(names[0])}{_name("− " + names[1])}</th>')
    head += ["<th>mixture</th>", "<th>reference</th>"]
    head += [f"<th>estimate{_name(name)}</th>" for name in names]
    head.append("<th>target</th>")
    n_numbers = 1 + len(extra) + len(systems) + (len(systems) > 1)
    n_clips = len(SOURCE_ROLES) + len(systems)
    columns = [INDEX_EM, ID_EM] + [NUMBER_EM] * n_numbers
    colgroup = "<colgroup>" + "".join(f'<col style="width:{w:g}em">' for w in columns) + \
        "<col>" * n_clips + "</colgroup>"
    min_width = sum(columns) + CLIP_MIN_EM * n_clips

    body = []
    for done, item_id in enumerate(shown, start=1):
        folder = f"{position[item_id]:04d}_" + (re.sub(r"[^A-Za-z0-9._-]+", "_", item_id)[:60] or "item")
        item = sources.get(item_id) if sources is not None else None
        no_source = "not in the item list" if sources is not None else "no item list"
        source_cells = {
            role: _clip_cell(Path(item[role]) if item else None, out, folder, role,
                             role != "reference", no_source)
            for role in SOURCE_ROLES
        }
        number = position[item_id] + 1
        cells = [f'<td class="num" data-v="{number}">{number}</td>', f'<td class="id">{_esc(item_id)}</td>',
                 _num_cell(first_rows[item_id].get("input_si_sdr"))]
        cells += [_num_cell(values.get(item_id)) for values in extra.values()]
        imps = []
        for system in systems:
            row = system["rows"][item_id]
            imp = None if row["error"] else row.get(METRIC)
            imps.append(imp)
            badge = ' <span class="badge" title="closer to the interferer than to the target">' \
                    'confused</span>' if row.get("confused") else ""
            cells.append(_num_cell(imp, badge))
        if len(systems) > 1:
            a, b = imps[0], imps[1]
            cells.append(_num_cell(a - b if a is not None and b is not None else None))
        cells += [source_cells["mixture"], source_cells["reference"]]
        for k, system in enumerate(systems):
            row = system["rows"][item_id]
            src = Path(system["dir"]) / "estimates" / f"{safe_name(item_id)}.wav"
            if row["error"]:
                cells.append(f'<td class="clip err" title="{_esc(row["error"])}">failed: '
                             f'{_esc(row["error"][:120])}</td>')
            else:
                cells.append(_clip_cell(src if src.is_file() else None, out, folder, f"est{k}",
                                        True, "no estimate file"))
        cells.append(source_cells["target"])
        body.append("<tr>" + "".join(cells) + "</tr>")
        if progress is not None:
            progress(done, len(shown))

    page_title = title or "usef listening report"
    histogram = ('<p><img src="histogram.png" alt="histogram of SI-SDRi per system"></p>'
                 if has_histogram else '<p class="muted">no finite SI-SDRi to plot</p>')
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(page_title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_esc(page_title)}</h1>",
        _summary_table(summaries, names, systems), histogram,
        *[f'<p class="note">{_esc(note)}</p>' for note in notes],
        SORT_HINT,
        f'<div class="scroll"><table id="items" style="min-width:{min_width:g}em">{colgroup}<thead><tr>'
        + "".join(head) + "</tr></thead><tbody>",
        *body, "</tbody></table></div>", f"<script>{JS}</script>", "</body></html>", "",
    ])
    index = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, index)
    logger.info("wrote %s (%d of %d items, %d systems)", index, len(shown), len(all_ids), len(systems))
    return {
        "index": str(index), "n_items": len(all_ids), "n_shown": len(shown), "notes": notes,
        "systems": [
            {"name": name, "dir": s["dir"], "mean": m["mean"], "ci95": list(m["ci95"]),
             "failure_rate": m["failure_rate"], "confusion_rate": m["confusion_rate"], "n": m["n"]}
            for name, s, m in zip(names, systems, summaries)
        ],
    }
