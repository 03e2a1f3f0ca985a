"""Write a band-ensemble checkpoint from a wide-band and a narrow-band model folder.

    python tools/make_band_ensemble.py --wide pretrained/usef-conformer-16k \
        --narrow pretrained/usef-conformer-8k --narrow-weight 0.6 --narrow-shifts 3 --shifts 2 \
        --out pretrained/usef-conformer-16k-ensemble

Members whose checkpoints both say ``output_level: calibrated`` (trained to output the target's
level, e.g. with target-absent mixtures) are averaged as they come and the ensemble keeps that
level rule; otherwise each member's output is first fitted to its mixture (``fit_levels``). If
only the narrow member is calibrated, the average then takes its level (``level_from_narrow``) and
the ensemble is calibrated too: silent where the narrow member says the talker is absent. A
confidence map is not carried over: fit the ensemble's own (``tools/fit_confidence.py``).

The folder holds both members' weights (one ``model.safetensors``, keys ``wide.*`` and
``narrow.*``) and a ``config.yaml`` that rebuilds them (:class:`usef.models.BandEnsemble`), so it
loads and travels like any other checkpoint. With ``--link-members`` it holds no copy: its
``config.yaml`` links the member folders (relative paths and the SHA-256 of their weights), so it
loads only beside them, and refuses to if a member's weights change; the bundled ensembles are
written so (no second copy of their members in the package). Measure it before bundling (``usef eval`` +
``usef compare`` against the wide model alone).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from usef.checkpoint import load_pretrained, read_config, save_pretrained
from usef.models import BandEnsemble


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wide", required=True, help="wide-band model folder (the ensemble's rate)")
    parser.add_argument("--narrow", required=True, help="narrow-band model folder")
    parser.add_argument("--narrow-weight", type=float, default=0.5, help="narrow model's weight on the shared band")
    parser.add_argument("--narrow-shifts", type=int, default=1, help="frame-grid passes of the narrow model")
    parser.add_argument("--shifts", type=int, default=None,
                        help="the wide model's passes written as the ensemble's default (default: the wide card's)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--link-members", action="store_true",
                        help="link the member folders instead of copying their weights (see above)")
    args = parser.parse_args(argv)
    wide, narrow = load_pretrained(args.wide), load_pretrained(args.narrow)
    wide_calibrated, narrow_calibrated = (read_config(folder).get("output_level") == "calibrated"
                                          for folder in (args.wide, args.narrow))
    calibrated = narrow_calibrated  # both, or the narrow one lends the ensemble its level
    ensemble = BandEnsemble(wide, narrow, narrow_weight=args.narrow_weight, narrow_shifts=args.narrow_shifts,
                            fit_levels=not (wide_calibrated and narrow_calibrated),
                            level_from_narrow=narrow_calibrated and not wide_calibrated)
    shifts = args.shifts if args.shifts is not None else getattr(wide, "inference_shifts", None)
    extra = {"members": {"wide": Path(args.wide).name, "narrow": Path(args.narrow).name}}
    if calibrated:
        extra["output_level"] = "calibrated"
    if shifts:
        extra["shifts"] = int(shifts)
    link = {"wide": args.wide, "narrow": args.narrow} if args.link_members else None
    return save_pretrained(ensemble, args.out, extra, link=link)


if __name__ == "__main__":
    print(main())
