"""``usef train``: train a model from one YAML config.

Exit codes: 0 finished (max_steps reached or the max_minutes budget used up, with a
checkpoint saved), 2 usage or configuration error.
Under ``torchrun --nproc_per_node=N`` it runs DistributedDataParallel; only rank 0 prints.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from usef.bin import UsageError, add_threads_option, apply_threads

EPILOG = """\
examples:
  usef train egs/libri2mix/conf/usef_conformer.yaml --exp-dir exp/usef_conformer
  usef train conf.yaml train.lr=3e-4 train.max_steps=20000 --resume
  # torchrun starts a module, not the usef console script:
  torchrun --nproc_per_node=4 -m usef.bin.train conf.yaml --exp-dir exp/x --resume

overrides are dotted keys parsed as YAML: train.lr=3e-4  data.mix.sir_range=[-5,5]
outputs in EXP: checkpoints/step_<n>/, best/ + best.json, log.jsonl, log.csv, train_config.yaml
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usef train", description="Train a target speech extractor.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", type=Path, help="training YAML (model, data, train, dev, init_from)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    parser.add_argument("--exp-dir", type=Path, default=None,
                        help="experiment directory (default: exp_dir of the config, else exp/<config name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue exactly from the latest checkpoint of the experiment directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--prepare", action="store_true",
                        help="only check the data (metadata, missing files, one decoded example), write the "
                        "dev enrollment list and EXP/data_summary.json, then exit")
    parser.add_argument("--write-dev-set", type=Path, default=None, metavar="DIR",
                        help="only write the fixed dev examples (dev.n_items, dev.seed) as WAVs + DIR/eval.csv "
                        "for `usef eval --list`, then exit")
    add_threads_option(parser)  # overrides train.threads of the config
    return parser


class _Progress:
    """tqdm bar fed by trainer events (rank 0 only; the trainer never calls it elsewhere)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "start" and self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=event["max_steps"], initial=event["step"], unit="step", dynamic_ncols=True)
        elif kind == "step" and self.bar is not None:
            self.bar.update(1)
            if "loss" in event:
                self.bar.set_postfix(loss=f"{event['loss']:.2f}", lr=f"{event['lr']:.2e}")
        elif kind == "dev":
            self._write(f"step {event['step']}: dev SI-SDRi {event['si_sdr_imp']:.2f} dB, "
                        f"failure rate {event['failure_rate']:.3f} ({event['n']} items)")
        elif kind == "end":
            if self.bar is not None:
                self.bar.close()
            best = event.get("best")
            suffix = f"; best dev SI-SDRi {best['si_sdr_imp']:.2f} dB at step {best['step']}" if best else ""
            print(f"stopped at step {event['step']} ({event['stopped']}){suffix}")

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s")
    from usef.train.trainer import (  # after logging: imports torch (slow)
        load_config,
        prepare_data,
        train,
        write_dev_set,
    )

    try:
        apply_threads(args.threads)
        config = load_config(args.config, args.overrides)
    except (OSError, ValueError, TypeError, UsageError) as error:
        print(f"usef train: error: {error}", file=sys.stderr)
        return 2
    if args.threads is not None:  # the trainer sets torch's threads from the config: the flag wins
        if not isinstance(config.get("train"), dict):
            config["train"] = {}
        config["train"]["threads"] = args.threads
    exp_dir = args.exp_dir or Path(config.pop("exp_dir", None) or Path("exp") / args.config.stem)
    config.pop("exp_dir", None)
    if args.prepare:
        return _prepare(config, exp_dir, prepare_data)
    if args.write_dev_set is not None:
        try:
            csv_path = write_dev_set(config, args.write_dev_set)
        except (FileNotFoundError, ValueError, TypeError, KeyError) as error:
            print(f"usef train: error: {error}", file=sys.stderr)
            return 2
        print(f"wrote {csv_path}")
        return 0
    try:
        train(config, exp_dir, resume=args.resume, callback=_Progress(rank == 0 and not args.quiet))
    except (FileNotFoundError, ValueError, TypeError, KeyError) as error:
        logging.getLogger("usef.train").debug("configuration error", exc_info=True)
        print(f"usef train: error: {error}", file=sys.stderr)
        return 2
    return 0


def _prepare(config: dict, exp_dir: Path, prepare_data: Any) -> int:
    try:
        summary = prepare_data(config, exp_dir)
    except (FileNotFoundError, ValueError, TypeError, KeyError) as error:
        print(f"usef train: error: data check failed: {error}", file=sys.stderr)
        return 2
    for key, value in summary.items():
        print(f"{key}: {value}")
    if summary["missing_files"]:
        print(f"usef train: error: {summary['missing_files']} audio files listed in the metadata are missing, "
              f"e.g. {summary['missing_examples'][0]}", file=sys.stderr)
        return 2
    print(f"data OK; summary in {exp_dir / 'data_summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
