"""The `mixinr` command. Each subcommand lives in its own module with `register(subparsers)`;
the module sets `run` on its parser. User errors (MixinrError) become one line and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import warnings

from mixinr import __version__, jsonout
from mixinr.errors import MixinrError
from mixinr.progress import plural  # noqa: F401 - the commands import it from here

COMMAND_MODULES = [
    "mixinr.cli.codec",  # encode, decode, info
    "mixinr.cli.demo",
    "mixinr.cli.compare",
    "mixinr.cli.reproduce",
    "mixinr.cli.collection",  # encode-collection
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixinr", description="Many images, one small network.")
    parser.add_argument("--version", action="version", version=f"mixinr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for command in sub.choices.values():  # every command: -q / -v
        talk = command.add_mutually_exclusive_group()
        talk.add_argument("-q", "--quiet", action="store_true",
                          help="print nothing but errors (and --json's output): no progress, notices or report")
        talk.add_argument("-v", "--verbose", action="store_true",
                          help="say what happens, step by step, on stderr (each fit, each network and budget "
                               "tried; a line every 20 s where no bar can be drawn)")
    return parser


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_threads_flag(parser) -> None:
    """--threads N for a command that computes in this process (torch's intra-op threads)."""
    parser.add_argument("--threads", dest="torch_threads", type=positive_int, metavar="N",
                        help="CPU threads torch may use (default: all cores; fits too small to share run on "
                             "one, and on a busy machine decoding does too)")


def times(share: float) -> str:
    """'twice', 'four times', '2.5 times': how help texts say a multiple (of the epochs)."""
    words = {2: "twice", 3: "three times", 4: "four times", 5: "five times", 6: "six times"}
    return words.get(share, f"{share:g} times") if float(share).is_integer() else f"{share:g} times"


def emit(args, payload, human) -> None:
    """Print `payload` as JSON with --json, else call `human(payload)` (a rich table or lines) unless -q."""
    if getattr(args, "json", False):
        print(jsonout.dumps(payload, indent=None, default=str))
    elif not getattr(args, "quiet", False):
        human(payload)


class _StderrHandler(logging.Handler):
    """Log lines on whatever sys.stderr is when they are written (rich's live display swaps it)."""

    def emit(self, record):
        print(f"mixinr: {self.format(record)}", file=sys.stderr, flush=True)


_HANDLER = _StderrHandler()


@contextlib.contextmanager
def _output(args):
    """-q / -v and --threads for this run: the progress default, the "mixinr" logger's level, warnings and
    torch's threads, restored afterwards (tests call main() many times in one process)."""
    from mixinr import progress

    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    progress.configure(False if quiet else None)
    logger = logging.getLogger("mixinr")
    if _HANDLER not in logger.handlers:
        logger.addHandler(_HANDLER)
        logger.propagate = False
    logger.setLevel(logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING)
    threads = getattr(args, "torch_threads", None)
    saved = None
    try:
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            if threads:
                import torch

                saved = torch.get_num_threads()
                torch.set_num_threads(threads)
            yield
    finally:
        progress.configure(None)
        if saved is not None:
            import torch

            torch.set_num_threads(saved)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = lambda msg, *a, **k: f"mixinr: warning: {msg}\n"
    try:
        with _output(args):
            return args.run(args) or 0
    except MixinrError as e:
        print(f"mixinr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mixinr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`mixinr ... --json | head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
