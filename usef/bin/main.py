"""``usef`` console entry point: dispatches to ``usef.bin.<subcommand>.main(argv)``.

Subcommand modules are imported only when used, so one that is missing or broken
does not stop the others from working.
"""

from __future__ import annotations

import importlib
import sys

from usef import __version__

SUBCOMMANDS = {
    "extract": "extract a target talker from mixtures (one pair or a CSV list)",
    "enroll": "prepare a speaker once from clips, for extract --enrollment",
    "stream": "extract block-online with a bounded latency (a file or raw PCM on stdin)",
    "eval": "evaluate a model on a list and write metrics",
    "train": "train a model",
    "average": "average checkpoints into one model",
    "demo": "run the bundled example with the bundled default model",
    "compare": "compare two eval folders item by item (bootstrap CI, Wilcoxon)",
    "results": "write a Markdown table of an eval summary",
    "report": "write a static HTML listening report of eval folders",
    "study": "sweep the reference length over a list and plot SI-SDRi per model",
    "export": "export a model to ONNX for torch-free inference (usef[onnx])",
}

USAGE = """usage: usef [--version] [-h] <command> [<args>]

commands:
{commands}

Run 'usef <command> --help' for the options of one command.

examples:
  usef demo -o estimate.wav
  usef extract mixture.wav enrolment.wav -o target.wav --model usef-conformer-8k
"""


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = [f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Run ``usef``; returns the exit code (0 ok, 1 failures, 2 usage errors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(), end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"usef {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(f"usef: error: unknown command {command!r}; choose one of: "
              f"{', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module_name = f"usef.bin.{command}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(f"usef: error: the '{command}' command is not available in this installation",
              file=sys.stderr)
        return 2
    try:
        code = module.main(rest)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except KeyboardInterrupt:
        print("usef: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
