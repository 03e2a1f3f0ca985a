"""Command-line programs: ``usef <subcommand>`` (argument parsing, progress, exit codes)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence


class UsageError(Exception):
    """A problem with the command line or its inputs: exit code 2."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the epilog's line breaks (its examples) and show only the defaults that say something."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class ItemProgress:
    """A tqdm bar on stderr usable as the ``progress(done, total, ...)`` callback of library loops.

    Hidden when stderr is not a terminal (tqdm's ``disable=None``).
    """

    def __init__(self, total: int | None = None, unit: str = "item") -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit=unit, disable=None, file=sys.stderr)

    def __call__(self, done: int, total: int | None = None, *_: object) -> None:
        if total is not None and self.bar.total != total:
            self.bar.total = total
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def rate_of(path) -> int | None:
    """Sample rate of an audio file, or None when it cannot be read (``--model default`` is then
    picked without a rate; the bad file is reported where it is processed)."""
    from usef.audio import audio_info  # lazy: keeps --help fast

    try:
        return audio_info(path, "mixture")[0]
    except (ValueError, OSError):
        return None


def load_model_or_usage_error(spec: str, device: str | None = None, sample_rate: int | None = None):
    """``usef.load_model`` for a command line: any failure to load (unknown name, bad folder, bad
    device) is a configuration problem of the user's, so it becomes a :class:`UsageError`."""
    import usef  # lazy: keeps --help fast; looked up on the package, where tests substitute a fake

    try:
        return usef.load_model(spec, device=device, sample_rate=sample_rate)
    except Exception as exc:
        raise UsageError(f"cannot load model {spec!r}: {type(exc).__name__}: {exc}") from exc


def run_command(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    command: Callable[[argparse.Namespace], int],
    errors: tuple[type[Exception], ...] = (),
    log_level: int = logging.INFO,
) -> int:
    """Parse ``argv`` and return ``command(args)``: the one place a subcommand's errors become exit codes.

    argparse's own exit stays (0 for --help, 2 for a usage error); :class:`UsageError` and
    ``errors`` print ``<prog>: error: <message>`` and give 2; Ctrl-C gives 130. Other exceptions
    are bugs and keep their traceback. Logging is set up only where the caller has not done it.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors; main() returns instead
        return int(exc.code or 0)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return command(args)
    except (UsageError, *errors) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
