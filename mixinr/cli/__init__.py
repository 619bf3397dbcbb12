"""The `mixinr` command. Each subcommand lives in its own module with `register(subparsers)`;
the module sets `run` on its parser. User errors (MixinrError) become one line and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from mixinr import __version__, jsonout
from mixinr.errors import MixinrError

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
    return parser


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def emit(args, payload, human) -> None:
    """Print `payload` as JSON with --json, else call `human(payload)` (a rich table or lines)."""
    if getattr(args, "json", False):
        print(jsonout.dumps(payload, indent=None, default=str))
    else:
        human(payload)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = lambda msg, *a, **k: f"mixinr: warning: {msg}\n"
    try:
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
