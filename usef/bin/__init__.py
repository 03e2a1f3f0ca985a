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


def load_model_or_usage_error(spec: str, device: str | None = None, sample_rate: int | None = None,
                              **options):
    """``usef.load_model`` for a command line: any failure to load (unknown name, bad folder, bad
    device) is a configuration problem of the user's, so it becomes a :class:`UsageError`.
    ``options`` are :class:`usef.Extractor` settings (e.g. ``level``)."""
    import usef  # lazy: keeps --help fast; looked up on the package, where tests substitute a fake

    try:
        return usef.load_model(spec, device=device, sample_rate=sample_rate, **options)
    except Exception as exc:
        raise UsageError(f"cannot load model {spec!r}: {type(exc).__name__}: {exc}") from exc


class ModelsByRate:
    """The model for each input: ``--model default`` picks per item by its rate (8 kHz model
    below 16 kHz, 16 kHz model from 16 kHz up, :func:`usef.hub.default_model_name`), loading
    each bundled default once, when first needed; any other spec is one model for all items.

    ``models(rate)`` returns the :class:`usef.Extractor`; its ``name`` says which one served.
    """

    def __init__(self, spec: str, device: str | None = None, need_confidence: bool = False, **options) -> None:
        self.spec, self.device, self.options = spec, device, options
        self.need_confidence = need_confidence  # --confidence: "default" must have a confidence map
        self._loaded: dict[str, object] = {}

    def __call__(self, sample_rate: int | None):
        key = self.spec
        if self.spec == "default":
            from usef.hub import default_model_name  # lazy: keeps --help fast

            try:
                key = default_model_name(sample_rate, self.need_confidence)
            except ValueError:  # none installed: load_model says so below
                key = f"default@{sample_rate}"
        if key not in self._loaded:
            # "default" is resolved by usef.load_model itself: the one place the rule lives
            self._loaded[key] = load_model_or_usage_error(self.spec, device=self.device, sample_rate=sample_rate,
                                                          need_confidence=self.need_confidence, **self.options)
        return self._loaded[key]


def check_output_file(output, overwrite: bool, example: str):
    """The one rule for a command's single output file: ``-o`` must name a file, and an existing
    one is replaced only with ``--overwrite``. Returns it as a Path; raises :class:`UsageError`."""
    from pathlib import Path

    output = Path(output)
    if output.is_dir():
        raise UsageError(f"-o {output} is a folder; give a file name such as {output / example}")
    if output.exists() and not overwrite:
        raise UsageError(f"{output} exists; pass --overwrite to replace it")
    return output


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's CPU threads for this command."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: torch's choice, all cores). On a busy machine "
                             "1 is often fastest; also set OMP_WAIT_POLICY=PASSIVE")


# usef.api.PRECISIONS, spelled out so that --help need not import torch (a test keeps them equal)
PRECISION_CHOICES = ("fp32", "bf16")


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    """``--precision``: the arithmetic of the model passes (:class:`usef.Extractor`'s ``precision``)."""
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32",
                        help="bf16: the model passes under bfloat16 autocast, about 1.4x faster on long files "
                             "on CPUs with AVX-512 BF16 or AMX (and recent GPUs), slower on short files of new "
                             "lengths and on CPUs without bf16 (default fp32)")


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op threads; raises :class:`UsageError` for a count below 1."""
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    import torch  # lazy: keeps --help fast

    torch.set_num_threads(int(threads))


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
