"""The command line as a user drives it: `python -m mixinr ...` in a subprocess, on tiny images with short
schedules. --psnr, --threads, -q / -v, decoding one image to a file or to stdout, the --grid contact sheet,
the usage line, and help texts for every option (derived from the schedule's constants)."""

import argparse
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import smooth_image
from PIL import Image

from mixinr.cli import build_parser, times
from mixinr.images import read_image, write_png
from mixinr.metrics import psnr
from mixinr.settings import FitSchedule

FAST = ["--epochs", "30", "--lbfgs-steps", "20", "--qat-epochs", "6", "--device", "cpu"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")


def mixinr(*argv, check=True):
    proc = subprocess.run([sys.executable, "-m", "mixinr", *map(str, argv)], capture_output=True, env=ENV,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr.decode()
    return proc


def one_line_error(proc) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """Two 16x16 images in a folder, encoded at 12 bpp with --threads 1 --json."""
    root = tmp_path_factory.mktemp("user")
    folder = root / "photos"
    for i, name in enumerate(["a.png", "b.png"]):
        write_png(folder / name, smooth_image(16, 16, i))
    archive = root / "p.mixinr"
    report = json.loads(mixinr("encode", folder, "-o", archive, "--bpp", "12", "--threads", "1", *FAST,
                               "--json").stdout)
    return folder, archive, report


def test_usage_line_and_bpp_or_psnr_required(tmp_path):
    """The usage line says a budget, a target or a fixed network is needed; without one, or with both
    --bpp and --psnr, encode stops with exit 2 before any work."""
    out = mixinr("encode", "--help").stdout.decode()
    assert "(--bpp B | --psnr DB | --depth D --width W)" in out.splitlines()[0]
    img = tmp_path / "x.png"
    write_png(img, smooth_image(8, 8, 0))
    err = one_line_error(mixinr("encode", img, "-o", tmp_path / "x.mixinr", check=False))
    assert "--bpp" in err and "--psnr" in err
    both = mixinr("encode", img, "-o", tmp_path / "x.mixinr", "--bpp", "2", "--psnr", "30", check=False)
    assert both.returncode == 2 and b"not allowed with" in both.stderr
    assert not (tmp_path / "x.mixinr").exists()
    mixinr("encode", img, "-o", tmp_path / "x.mixinr", "--depth", "2", "--width", "4", *FAST)  # fixed, no budget
    assert (tmp_path / "x.mixinr").exists()


def test_psnr_target(encoded, tmp_path):
    """--psnr DB: the archive's mean PSNR (as decode gives it) reaches DB, and no probe with fewer bytes
    reached it; the probes are reported; -q prints nothing on stderr."""
    folder, _, _ = encoded
    out = tmp_path / "t.mixinr"
    proc = mixinr("encode", folder, "-o", out, "--psnr", "24", *FAST, "--json", "-q")
    report = json.loads(proc.stdout)
    assert proc.stderr == b""
    assert report["psnr_mean"] >= 24 and len(report["probes"]) >= 2
    assert report["bytes"] == out.stat().st_size
    reached = [p for p in report["probes"] if p["psnr"] >= 24]
    assert min(p["bpp"] for p in reached) == report["bpp"]
    mixinr("decode", out, "-o", tmp_path / "dec")
    decoded = [psnr(read_image(tmp_path / "dec" / n), read_image(folder / n)) for n in ("a.png", "b.png")]
    assert np.mean(decoded) == pytest.approx(report["psnr_mean"])


def test_budget_too_small_names_the_bpp(encoded, tmp_path):
    """A budget too small says which --bpp would work, and that one does."""
    folder, _, _ = encoded
    err = one_line_error(mixinr("encode", folder, "-o", tmp_path / "s.mixinr", "--bpp", "0.05", *FAST, check=False))
    bpp = float(err.split("use --bpp ")[1].split()[0])
    report = json.loads(mixinr("encode", folder, "-o", tmp_path / "s.mixinr", "--bpp", bpp, *FAST, "--json").stdout)
    assert report["bpp"] <= bpp


def test_threads(encoded, tmp_path):
    """--threads N sets torch's threads for the run (the report says so); 0 is refused with exit 2."""
    folder, _, report = encoded
    assert report["threads"] == 1
    two = json.loads(mixinr("encode", folder, "-o", tmp_path / "2.mixinr", "--bpp", "12", "--threads", "2",
                            *FAST, "--json").stdout)
    assert two["threads"] == 2
    bad = mixinr("decode", tmp_path / "2.mixinr", "-o", tmp_path / "d", "--threads", "0", check=False)
    assert bad.returncode == 2 and not (tmp_path / "d").exists()


def test_decode_one_image_to_a_file(encoded, tmp_path):
    """-o FILE.png --index I writes that image to that file and nothing else; its PSNR is what encode
    reported. Several images into one file is an error that writes nothing."""
    folder, archive, report = encoded
    target = tmp_path / "second.png"
    mixinr("decode", archive, "-o", target, "--index", "1")
    assert [p.name for p in tmp_path.iterdir()] == ["second.png"]
    assert psnr(read_image(target), read_image(folder / "b.png")) == report["images"][1]["psnr"]
    err = one_line_error(mixinr("decode", archive, "-o", tmp_path / "all.png", check=False))
    assert "--index" in err and not (tmp_path / "all.png").exists()


def test_decode_to_stdout(encoded, tmp_path):
    """-o - writes one image's PNG on stdout (the same pixels as a file decode); the report goes to stderr."""
    _, archive, _ = encoded
    proc = mixinr("decode", archive, "-o", "-", "--name", "b.png")
    assert proc.stdout.startswith(b"\x89PNG")
    mixinr("decode", archive, "-o", tmp_path / "b.png", "--name", "b.png")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(proc.stdout))), read_image(tmp_path / "b.png"))
    assert b"stdout" in proc.stderr
    one_line_error(mixinr("decode", archive, "-o", "-", check=False))  # two images, one stdout


def test_grid_contact_sheet(encoded, tmp_path):
    """--grid writes one PNG holding originals beside decodes (enlarged 16x16 tiles), and with --originals the
    JSON gives each image's PSNR, equal to encode's report."""
    folder, archive, report = encoded
    sheet = tmp_path / "sheet.png"
    out = json.loads(mixinr("decode", archive, "--grid", sheet, "--originals", folder, "--json").stdout)
    img = read_image(sheet)
    assert img.shape[0] > 128 and img.shape[1] > 2 * 128  # two tiles enlarged to >= 128 px side by side
    assert [d["psnr"] for d in out["images"]] == [im["psnr"] for im in report["images"]]
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]  # no per-image files without -o
    err = one_line_error(mixinr("decode", archive, "--grid", tmp_path / "s2.png", "--originals", tmp_path,
                                check=False))
    assert "no original" in err and not (tmp_path / "s2.png").exists()


def test_verbose_and_singular(tmp_path):
    """-v says what happens on stderr (each fit, each network tried) even without a terminal; the report
    of one image says "1 image"."""
    img = tmp_path / "one.png"
    write_png(img, smooth_image(16, 16, 3))
    proc = mixinr("encode", img, "-o", tmp_path / "one.mixinr", "--bpp", "16", *FAST, "-v")
    err = proc.stderr.decode()
    assert "mixinr: fitted 5x" in err and " B, " in err
    assert "1 image in" in proc.stdout.decode() and "1 images" not in proc.stdout.decode()


def test_every_option_has_help_and_schedule_text_is_derived():
    """Every option of every command has a help text; compare, demo and encode-collection state the L-BFGS
    multiple the code uses; encode-collection has encode's schedule options."""
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    epochs = {n: next(a for a in commands[n]._actions if "--epochs" in a.option_strings) for n in commands
              if any("--epochs" in a.option_strings for a in commands[n]._actions)}
    assert "twice as many L-BFGS" not in epochs["compare"].help
    assert times(FitSchedule().lbfgs_share) in epochs["compare"].help
    options = {n: {o for a in p._actions for o in a.option_strings} for n, p in commands.items()}
    schedule = {"--epochs", "--lbfgs-steps", "--qat-epochs", "--psnr", "--bpp", "--seed", "--device"}
    assert schedule <= options["encode"] and schedule <= options["encode-collection"]
    for name in ("encode", "decode", "demo", "compare", "reproduce", "encode-collection"):
        assert "--threads" in options[name] and {"-q", "-v"} <= options[name]


def test_demo_imports_only_what_its_extra_installs():
    """`pip install -e ".[demo]"` (the README's try-it line) is enough for `mixinr demo`: a fresh interpreter
    that loads the demo's tiles, the codec and the report's tables imports none of the modules only the
    compare, ray or test extras bring (a whole demo run imported no other distribution either: NOTES.md)."""
    code = ("import sys\n"
            "from mixinr.cli import build_parser; build_parser()\n"
            "from mixinr.cli.demo import demo_images; import mixinr.codec, rich.console, rich.table\n"
            "assert demo_images()[2].startswith('matplotlib')\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, env=ENV, timeout=300, text=True)
    assert proc.returncode == 0, proc.stderr
    imported = set(proc.stdout.split())
    assert {"matplotlib", "torch", "constriction", "PIL"} <= imported
    extras_only = {"imagecodecs", "pillow_heif", "pytorch_msssim", "bjontegaard", "scipy", "ray", "pytest",
                   "hypothesis", "xdist"}
    assert not imported & extras_only
