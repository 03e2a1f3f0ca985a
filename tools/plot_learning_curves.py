#!/usr/bin/env python
"""Dev SI-SDRi against training steps for several runs, as a dependency-free SVG.

Reads the ``log.jsonl`` files the trainer writes (rows with ``dev_si_sdr_imp``). A run that
continued another (e.g. CPU fine-tuning after a GPU run) is given as ``LABEL=LOG+OFFSET`` so its
steps are shifted by OFFSET. ``LABEL=LOG#KEY`` plots another logged value, e.g. the raw weights of
a run that kept a weight average (``#dev_raw_si_sdr_imp``, ``train.ema_decay``).

    python tools/plot_learning_curves.py --out docs/learning_curves.svg \\
        USEF=docs/training/gpu_usef_conformer_8k.jsonl \\
        "joint embedding=docs/training/gpu_embedding_conformer_8k.jsonl"
    python tools/plot_learning_curves.py --out ema.svg "average=exp/run/log.jsonl" \
        "raw weights=exp/run/log.jsonl#dev_raw_si_sdr_imp"
"""

from __future__ import annotations

import argparse
import json
import sys
from html import escape

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def read_curve(spec: str, x_axis: str = "step") -> tuple[str, list[tuple[float, float]]]:
    """``x_axis`` "step", or "minutes": training time summed from the logged step times (the
    dev passes left out), so that runs of different step costs compare per CPU-minute."""
    label, _, rest = spec.partition("=")
    rest, _, key = rest.partition("#")
    path, _, offset = rest.partition("+")
    key = key or "dev_si_sdr_imp"
    points, minutes, last_step = [], 0.0, 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("step_time") is not None:
                minutes += float(row["step_time"]) * (int(row["step"]) - last_step) / 60.0
                last_step = int(row["step"])
            if row.get(key) is not None:
                x = row["step"] + float(offset or 0) if x_axis == "step" else minutes
                points.append((x, float(row[key])))
    if not points:
        raise ValueError(f"{path}: no rows with {key!r}")
    return label, points


def svg_plot(curves: list[tuple[str, list[tuple[float, float]]]], title: str, x_label: str = "training step") -> str:
    width, height, left, right, top, bottom = 640, 400, 60, 20, 40, 50
    xs = [x for _, pts in curves for x, _ in pts] or [0, 1]
    ys = [y for _, pts in curves for _, y in pts] or [0, 1]
    x_max = max(xs) * 1.05
    y_lo, y_hi = min(0.0, min(ys)) - 0.5, max(ys) + 0.5

    def px(x: float) -> float:
        return left + (width - left - right) * x / x_max

    def py(y: float) -> float:
        return top + (height - top - bottom) * (y_hi - y) / (y_hi - y_lo)

    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12"><rect width="100%" height="100%" fill="white"/>'),
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>']
    for k in range(6):
        y = y_lo + (y_hi - y_lo) * k / 5
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.1f}</text>')
        x = x_max * k / 5
        out.append(f'<text x="{px(x):.1f}" y="{height - bottom + 18}" text-anchor="middle">{x:.0f}</text>')
    out.append(f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text x="15" y="{height / 2}" transform="rotate(-90 15 {height / 2})" '
               f'text-anchor="middle">dev SI-SDRi (dB)</text>')
    for i, (label, pts) in enumerate(curves):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(pts))
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        out.extend(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>' for x, y in pts)
        out.append(f'<rect x="{left + 10}" y="{top + 8 + 18 * i}" width="14" height="4" fill="{colour}"/>'
                   f'<text x="{left + 30}" y="{top + 14 + 18 * i}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="LABEL=LOG.jsonl[+STEP_OFFSET][#KEY] (KEY: dev_si_sdr_imp)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--title", default="Dev SI-SDRi on held-out speakers")
    parser.add_argument("--x", choices=("step", "minutes"), default="step",
                        help="x axis: training step, or training minutes summed from the logged step times")
    args = parser.parse_args(argv)
    curves = [read_curve(spec, args.x) for spec in args.runs]
    x_label = "training step" if args.x == "step" else "training minutes (logged step times, dev passes excluded)"
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.write(svg_plot(curves, args.title, x_label))
    for label, pts in curves:
        print(f"{label}: " + ", ".join(f"{x:.0f}:{y:.2f}" for x, y in pts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
