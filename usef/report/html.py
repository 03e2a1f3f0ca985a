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
import json
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

from usef.evaluate import read_eval_list, safe_name
from usef.metrics import summarize
from usef.report.compare import ItemMismatchError, load_eval
from usef.report.spectrogram import _require_matplotlib, write_spectrogram_png

logger = logging.getLogger(__name__)

__all__ = ["build_report"]

PathLike = str | os.PathLike[str]
ProgressFn = Callable[[int, int], None]

METRIC = "si_sdr_imp"
SOURCE_ROLES = ("mixture", "reference", "target")
THUMB_WIDTH, THUMB_HEIGHT = 200, 80

# Layout: the items table has a fixed layout over the full page width, numeric columns
# of fixed width and the audio columns sharing the rest, so two systems fit a 1280 px
# window with players and thumbnails shrunk to their column. With more systems the
# table's min-width (set per page) keeps the players usable and the table scrolls inside
# its own box (both ways, so the sticky header still works), never the page.
# Model names stay on one line, cut with an ellipsis; the full name is the title.
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1em 1.5em;color:#222}
h1{font-size:1.4em}table{border-collapse:collapse}
th,td{border:1px solid #ccc;padding:4px 6px;vertical-align:top}
th{background:#f2f2f2;position:sticky;top:0;z-index:1}
th[data-type]{cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.nw{white-space:nowrap}.name{display:block;max-width:100%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
#summary .name{max-width:22em}#summary td.dir{overflow-wrap:anywhere;font-size:.9em}
.scroll{overflow:auto;max-height:calc(100vh - 2em);max-width:100%}
#items{table-layout:fixed;width:100%}
#items td,#items th{overflow:hidden}
#items td.id{overflow-wrap:anywhere;font-size:.85em}
td.clip img{display:block;width:100%;max-width:200px;height:auto;background:#000}
td.clip audio{display:block;width:100%;max-width:200px;height:32px}
.note{background:#fff7d6;border:1px solid #e6d48a;padding:6px 10px;margin:8px 0}
.err{color:#b00020}.badge{background:#b00020;color:#fff;border-radius:3px;padding:0 3px;font-size:.8em}
td.clip.err{overflow-wrap:anywhere}td.num .badge{display:table;margin:2px 0 0 auto}
.muted{color:#777}
"""
# column widths of the items table (em); audio columns take what is left, at least CLIP_MIN_EM
INDEX_EM, ID_EM, NUMBER_EM, CLIP_MIN_EM = 2.5, 8.0, 6.0, 10.0

_HINT = ('<p class="muted">Click a metric header to sort; click again to reverse. '
         "Spectrograms: log magnitude, 80 dB range, each scaled to its own peak.</p>")

# Sort rows by a header's column: numbers numerically, text by localeCompare,
# missing values last in both directions; a second click reverses the order.
_JS = """
(function(){
var table=document.getElementById("items"),body=table.tBodies[0],heads=table.tHead.rows[0].cells;
function key(row,col,num){var v=row.cells[col].getAttribute("data-v");
 if(v===null){v=row.cells[col].textContent;}
 if(!num){return v;} if(v===""){return null;} var x=parseFloat(v); return isNaN(x)?null:x;}
function sortBy(th,col){
 var num=th.getAttribute("data-type")==="num",asc=th.getAttribute("aria-sort")!=="ascending";
 for(var i=0;i<heads.length;i++){if(heads[i].hasAttribute("data-type")){heads[i].setAttribute("aria-sort","none");}}
 th.setAttribute("aria-sort",asc?"ascending":"descending");
 var rows=Array.prototype.slice.call(body.rows);
 rows.sort(function(a,b){var x=key(a,col,num),y=key(b,col,num);
  if(x===null||y===null){return x===null?(y===null?0:1):-1;}
  var c=num?x-y:x.localeCompare(y);return asc?c:-c;});
 rows.forEach(function(r){body.appendChild(r);});}
Array.prototype.forEach.call(heads,function(th,col){
 if(!th.hasAttribute("data-type")){return;}
 th.addEventListener("click",function(){sortBy(th,col);});
 th.addEventListener("keydown",function(e){if(e.key==="Enter"||e.key===" "){e.preventDefault();sortBy(th,col);}});
});
})();
"""


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


def _display_names(systems: Sequence[dict[str, Any]]) -> list[str]:
    """Model names; folder names when models repeat; numbered as a last resort."""
    for key in ("name", "folder"):
        names = [str(s[key]) for s in systems]
        if len(set(names)) == len(names):
            return names
    return [f"{s['folder']} ({k + 1})" for k, s in enumerate(systems)]


def _check_same_ids(systems: Sequence[dict[str, Any]], names: Sequence[str]) -> None:
    first = set(systems[0]["ids"])
    details: dict[str, list[str]] = {}
    parts = []
    for system, name in zip(systems[1:], names[1:]):
        ids = set(system["ids"])
        extra = [i for i in system["ids"] if i not in first]
        missing = [i for i in systems[0]["ids"] if i not in ids]
        for label, found in (("only in", extra), ("missing from", missing)):
            if found:
                details[f"{label} {name}"] = found
                shown = ", ".join(found[:5]) + (f", ... ({len(found) - 5} more)" if len(found) > 5 else "")
                parts.append(f"{len(found)} ids {label} {name} ({system['dir']}): {shown}")
    if parts:
        raise ItemMismatchError(
            f"the eval folders do not cover the same items as {names[0]} ({systems[0]['dir']}): "
            + "; ".join(parts),
            details,
        )


def _system_summary(system: dict[str, Any]) -> dict[str, Any]:
    rows = [system["rows"][i] for i in system["ids"]]
    values = [r.get(METRIC, math.nan) for r in rows if not r["error"]]
    values = [v for v in values if math.isfinite(v)]
    stats = summarize(values)
    flags = [r["confused"] for r in rows if r.get("confused") is not None and not r["error"]]
    return {
        "mean": stats["mean"], "ci95": (stats["ci95_low"], stats["ci95_high"]), "n": stats["n"],
        "n_items": len(rows), "n_failed_items": sum(bool(r["error"]) for r in rows),
        "failure_rate": (sum(v < 0.0 for v in values) / len(values)) if values else None,
        "confusion_rate": (sum(flags) / len(flags)) if flags else None,
        "values": values,
    }


def _source_items(
    systems: Sequence[dict[str, Any]], eval_list: PathLike | None
) -> tuple[dict[str, dict[str, str]] | None, str | None]:
    """Item dicts by id from ``eval_list`` or the list recorded in a summary.json."""
    if eval_list is not None:
        return {item["id"]: item for item in read_eval_list(eval_list)}, None
    for system in systems:
        summary_path = Path(system["dir"]) / "summary.json"
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        recorded = (summary.get("data") or {}).get("list") if isinstance(summary, dict) else None
        if not recorded:
            continue
        found = _recorded_list(str(recorded), summary_path.parent)
        if found is not None:
            return {item["id"]: item for item in read_eval_list(found)}, None
        return None, (f"the item list {recorded} recorded in {summary_path} was not found (neither as "
                      "given nor next to the summary); mixture, reference and target audio are omitted "
                      "(pass --list).")
    return None, ("no item list is recorded in the eval folders' summary.json; mixture, "
                  "reference and target audio are omitted (pass --list eval.csv).")


def _recorded_list(recorded: str, summary_dir: Path) -> Path | None:
    """The item list a summary.json names: an absolute path as is; a relative one first
    against the summary's folder (independent of where the report is built), then against
    the current folder (older ``usef eval`` recorded the path as typed where it ran)."""
    path = Path(recorded)
    candidates = [path] if path.is_absolute() else [summary_dir / path, path]
    return next((c for c in candidates if c.is_file()), None)


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
        f"<title>{_esc(page_title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(page_title)}</h1>",
        _summary_table(summaries, names, systems), histogram,
        *[f'<p class="note">{_esc(note)}</p>' for note in notes],
        _HINT,
        f'<div class="scroll"><table id="items" style="min-width:{min_width:g}em">{colgroup}<thead><tr>'
        + "".join(head) + "</tr></thead><tbody>",
        *body, "</tbody></table></div>", f"<script>{_JS}</script>", "</body></html>", "",
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
