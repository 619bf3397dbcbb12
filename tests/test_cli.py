"""The `mixinr` entry point: every command registers, and a closed output pipe gives no traceback."""

import subprocess
import sys

from mixinr.cli import build_parser


def test_every_command_registers():
    """All subcommands named by the issues are present (a missing module fails loudly, not silently)."""
    choices = build_parser()._subparsers._group_actions[0].choices
    for command in ["encode", "decode", "info", "demo", "compare", "reproduce", "encode-collection"]:
        assert command in choices


def test_broken_pipe_prints_no_traceback():
    """Regression: `mixinr ... | head` used to end in a BrokenPipeError traceback."""
    code = ("import argparse, sys; from mixinr import cli\n"
            "def boom(args): raise BrokenPipeError\n"
            "argparse.ArgumentParser.parse_args = lambda self, argv=None: argparse.Namespace(run=boom)\n"
            "sys.exit(cli.main([]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "Traceback" not in r.stderr
    assert r.returncode == 141
