"""``usef export``: write a model in a deployment format (ONNX).

Exit codes: 0 written, 2 usage or configuration error (unknown model, a model that cannot be
exported, a non-empty output folder without --overwrite, onnx/onnxruntime not installed).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from usef.bin import HelpFormatter, UsageError, run_command

logger = logging.getLogger("usef.export")

EPILOG = """\
examples:
  usef export usef-conformer-8k --onnx onnx/usef-conformer-8k
  usef export exp/my-model --onnx onnx/my-model --overwrite
  usef extract --backend onnx --model onnx/usef-conformer-8k mixture.wav reference.wav -o out.wav

The folder gets reference.onnx (reference spectrum -> attention keys/values), extract.onnx
(mixture spectrum + keys/values -> estimate spectrum) and config.json (rate, STFT, opset,
versions). The STFT, iSTFT and level normalisation run outside the graphs, in NumPy
(usef.onnx_runtime.OnnxExtractor: no torch needed). Needs `pip install 'usef[onnx]'`.
Only USEF models with a Conformer separator (usef_conformer) can be exported.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usef export",
        description="Export a model to ONNX for torch-free inference.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("model", help="bundled name (usef-conformer-8k ...), model directory, or default")
    parser.add_argument("--onnx", required=True, metavar="OUT_DIR", help="folder to write the ONNX files into")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (at least 17)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the onnxruntime-vs-torch check of the written graphs")
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that has files")
    return parser


def _export(args: argparse.Namespace) -> int:
    out_dir = Path(args.onnx)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--onnx {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not args.overwrite:
        raise UsageError(f"--onnx {out_dir} is not empty; pass --overwrite to write into it")
    if args.opset < 17:
        raise UsageError(f"--opset must be at least 17, got {args.opset}")
    try:
        import onnx  # noqa: F401 (torch.onnx.export needs it)
        if not args.no_verify:
            import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"ONNX export needs the onnx extra: pip install 'usef[onnx]' ({exc})") from exc
    from usef import hub
    from usef.checkpoint import load_pretrained
    from usef.onnx_export import check_exportable, export_onnx

    try:
        path = hub.resolve_model(args.model)
        model = load_pretrained(path, device="cpu")
        check_exportable(model)
    except Exception as exc:
        raise UsageError(f"cannot export model {args.model!r}: {type(exc).__name__}: {exc}") from exc
    try:
        export_onnx(model, out_dir, name=path.name, opset=args.opset, verify=not args.no_verify)
    except OSError as exc:
        raise UsageError(f"cannot write {out_dir}: {exc}") from exc
    logger.info("%s: %s exported (reference.onnx, extract.onnx, config.json)", out_dir, path.name)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``usef export``; returns the exit code."""
    return run_command(build_parser(), argv, _export)


if __name__ == "__main__":
    sys.exit(main())
