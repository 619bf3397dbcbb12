"""Hostile archives and careless arguments (issue 21): each ends in exit code 2 and one line on stderr,
without a traceback, without torch being imported where nothing needs computing, and with nothing
written. Each case of the issue's table is one test here, run as a user runs it (a subprocess)."""

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import smooth_image

from mixinr import bitstream
from mixinr.bitstream import Header, TensorCode
from mixinr.images import write_png

ROOT = Path(__file__).resolve().parents[1]
# After the command, report whether torch got imported (a CLI error must not pay for it).
RUN = ("import sys, runpy; sys.argv = ['mixinr'] + sys.argv[1:]\n"
       "try:\n    runpy.run_module('mixinr', run_name='__main__')\n"
       "finally:\n    sys.stderr.write('torch imported\\n' if 'torch' in sys.modules else '')\n")


def mixinr(*argv, cwd=None, timeout=120):
    """Run the CLI in a fresh interpreter: (exit code, stdout, stderr lines without the torch marker,
    whether torch was imported). The timeout only guards against a hang."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", RUN, *map(str, argv)], capture_output=True, text=True, cwd=cwd,
                       env=env, timeout=timeout)
    lines = r.stderr.splitlines()
    torch_imported = "torch imported" in lines
    return r.returncode, r.stdout, [x for x in lines if x != "torch imported"], torch_imported


def assert_refused(result, *words, torch_free=True):
    """Exit 2, one `mixinr: error:` line holding `words`, no traceback (and no torch import)."""
    code, _, err, torch_imported = result
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("mixinr: error: "), err
    for w in words:
        assert w in err[0], err
    if torch_free:
        assert not torch_imported


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def hostile_archive(path: Path) -> Path:
    """A 64-byte quantised archive with a valid checksum whose header claims a 2x4000 network with
    K = 4: 64 million weights from 8 bytes of stream."""
    h = Header(2, 4000, 4, 30.0, 30.0, "linear", "q8", [(8, 8)], ["a.png"], [TensorCode(0, 0.5, 3.0)] * 6)
    path.write_bytes(_with_crc(bitstream.MAGIC + bytes([1]) + bitstream.encode_header(h) + b"\x01\x02\x03\x04" * 2))
    return path


def small_archive(path: Path, sizes, names) -> Path:
    """A valid fp16 archive of a 1x2 network (K = 1) holding images of `sizes` (no fit needed)."""
    h = Header(1, 2, 1, 30.0, 30.0, "linear", "fp16", list(sizes), list(names))
    path.write_bytes(bitstream.write(h, None, bytes(2 * h.n_params())))
    return path


def test_hostile_header_is_refused_before_decoding(tmp_path):
    """A tiny archive declaring 64M weights: info and decode refuse it (declared work over what the
    stream can hold) without decoding, torch or output."""
    bad = hostile_archive(tmp_path / "big.mixinr")
    assert bad.stat().st_size == 64
    assert_refused(mixinr("info", bad), "big.mixinr", "cannot hold 64112012 values")
    assert_refused(mixinr("decode", bad, "-o", tmp_path / "out"), "cannot hold")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_info_of_an_endless_device_ends_at_its_first_bytes():
    """`mixinr info /dev/zero` is refused from the first bytes (wrong magic), not read forever."""
    assert_refused(mixinr("info", "/dev/zero"), "/dev/zero", "not a mixinr archive")


def test_file_over_the_archive_cap_is_refused_unread(tmp_path):
    """A file larger than the format's largest archive is refused from its size (sparse file, no bytes read)."""
    big = tmp_path / "huge.mixinr"
    with open(big, "wb") as f:
        f.write(bitstream.MAGIC + b"\x01")
        f.truncate(bitstream.MAX_ARCHIVE_BYTES + 1)
    assert_refused(mixinr("info", big), "larger than an archive can be")


@pytest.mark.parametrize("scale", ["1e308", "nan", "inf", "-1", "0"])
def test_decode_scale_must_be_finite_and_positive(tmp_path, scale):
    """--scale 1e308 (an OverflowError once), NaN, inf, negative and zero: refused, nothing written."""
    arc = small_archive(tmp_path / "a.mixinr", [(8, 8)], ["x.png"])
    assert_refused(mixinr("decode", arc, "-o", tmp_path / "out", "--scale", scale), "--scale" if scale in
                   ("nan", "inf", "-1", "0") else "out of range")
    assert not (tmp_path / "out").exists()


def test_decode_into_a_file_path(tmp_path):
    """-o existing_file/sub (a NotADirectoryError traceback once): one line naming the file in the way."""
    arc = small_archive(tmp_path / "a.mixinr", [(8, 8)], ["x.png"])
    (tmp_path / "file").write_text("keep")
    assert_refused(mixinr("decode", arc, "-o", tmp_path / "file" / "sub"), "is a file, not a folder")
    assert_refused(mixinr("decode", arc, "-o", tmp_path / "file"), "not a folder")
    assert (tmp_path / "file").read_text() == "keep"


def test_decode_checks_every_output_size_before_the_first_file(tmp_path):
    """An archive of an 8x8 and a 700x8 image at --scale 100: the second is over the side cap, so
    nothing is written (the first PNG was written once before the failure)."""
    arc = small_archive(tmp_path / "a.mixinr", [(8, 8), (700, 8)], ["small.png", "tall.png"])
    out = tmp_path / "out"
    assert_refused(mixinr("decode", arc, "-o", out, "--scale", "100"), "image 1 (tall.png): output size 70000x800 out of range")
    assert not out.exists()


def test_decode_render_cost_is_capped(tmp_path):
    """Pixels x network size over the decoder's cap is refused even when the pixel count is allowed."""
    from mixinr.validate import MAX_DECODE_PIXELS, MAX_RENDER_WORK

    h = Header(2, 256, 1, 30.0, 30.0, "linear", "fp16", [(8, 8)], ["x.png"])
    arc = tmp_path / "wide.mixinr"
    arc.write_bytes(bitstream.write(h, None, bytes(2 * h.n_params())))
    side = 8000  # 64M pixels, under the pixel cap; x 67k multiply-adds per pixel, over the work cap
    assert side * side <= MAX_DECODE_PIXELS and side * side * h.madds_per_pixel() > MAX_RENDER_WORK
    assert_refused(mixinr("decode", arc, "-o", tmp_path / "out", "--size", f"{side}x{side}"), "decoder's cap")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, words", [
    (["--depth", "64", "--width", "4096"], ["64x4096", "over the format's"]),
    (["--depth", "2", "--width", "5000"], ["--width must be between 1 and 4096"]),
    (["--bpp", "2", "--omega", "nan"], ["--omega must be a positive number"]),
    (["--bpp", "2", "--omega", "1e9"], ["--omega"]),
    (["--bpp", "nan"], ["--bpp must be a positive number"]),
    (["--bpp", "-1"], ["--bpp"]),
    (["--bpp", "2", "--sets", "0"], ["--sets"]),
    (["--bpp", "2", "--epochs", "0"], ["--epochs"]),
    (["--bpp", "2", "--precision", "q99"], ["--precision"]),
    (["--bpp", "2", "--seed", str(1 << 70)], ["--seed"]),
])
def test_encode_arguments_checked_before_any_work(tmp_path, flags, words):
    """Out-of-range encode flags (a 64x4096 network once fitted for minutes in 2 GB; --omega nan
    fitted anyway): refused before torch is imported or any image read, nothing written."""
    write_png(tmp_path / "a.png", smooth_image(8, 8, 0))
    out = tmp_path / "o.mixinr"
    assert_refused(mixinr("encode", tmp_path / "a.png", "-o", out, *flags), *words)
    assert not out.exists()


def test_encode_fixed_network_against_the_budget(tmp_path):
    """A fixed width whose weights cannot fit the budget even at the format's fewest bytes is refused
    before fitting."""
    write_png(tmp_path / "a.png", smooth_image(8, 8, 0))
    out = tmp_path / "o.mixinr"
    assert_refused(mixinr("encode", tmp_path / "a.png", "-o", out, "--bpp", "1", "--depth", "3", "--width", "1000"),
                   "budget too small", "at least")
    assert not out.exists()


def test_encode_output_in_a_missing_or_file_folder(tmp_path):
    """-o under an existing file is refused before the images are read."""
    write_png(tmp_path / "a.png", smooth_image(8, 8, 0))
    (tmp_path / "f").write_text("x")
    assert_refused(mixinr("encode", tmp_path / "a.png", "-o", tmp_path / "f" / "o.mixinr", "--bpp", "2"),
                   "is a file, not a folder")


def test_decompression_bomb_is_one_line(tmp_path):
    """A PNG whose header claims 30000x30000 pixels (a DecompressionBombError traceback once)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    out = tmp_path / "o.mixinr"
    assert_refused(mixinr("encode", bomb, "-o", out, "--bpp", "2"), "bomb.png", "too large")
    assert not out.exists()


def test_truncated_image_is_one_line(tmp_path):
    """A PNG cut in half: "image file is truncated", one line, nothing written."""
    write_png(tmp_path / "full.png", np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    out = tmp_path / "o.mixinr"
    assert_refused(mixinr("encode", tmp_path / "cut.png", "-o", out, "--bpp", "2"), "cut.png", "truncated")
    assert not out.exists()


def test_collection_bpp_checked_before_the_manifest(tmp_path):
    """encode-collection --bpp -1 once left a "failed" manifest that refused the corrected rerun: now
    refused before anything is written."""
    (tmp_path / "in").mkdir()
    write_png(tmp_path / "in" / "a.png", smooth_image(8, 8, 0))
    out = tmp_path / "out"
    assert_refused(mixinr("encode-collection", tmp_path / "in", "-o", out, "--group-size", "2", "--bpp", "-1"),
                   "--bpp must be a positive number")
    assert not out.exists()


def test_json_output_is_strict_json(capsys):
    """emit --json turns a lossless (infinite) PSNR into null instead of printing Infinity."""
    import argparse

    from mixinr.cli import emit

    emit(argparse.Namespace(json=True), {"psnr": float("inf"), "images": [{"psnr": np.float64("nan")}]}, print)
    out = capsys.readouterr().out

    def refuse(name):
        raise AssertionError(f"not JSON: {name}")

    assert json.loads(out, parse_constant=refuse) == {"psnr": None, "images": [{"psnr": None}]}


def test_encode_json_of_a_flat_image_is_strict(tmp_path):
    """encode --json of a flat image (decoded losslessly: PSNR infinite) prints strict JSON, PSNR null."""
    write_png(tmp_path / "flat.png", np.full((8, 8, 3), 128, np.uint8))
    r = subprocess.run([sys.executable, "-m", "mixinr", "encode", str(tmp_path / "flat.png"), "-o",
                        str(tmp_path / "f.mixinr"), "--depth", "1", "--width", "2", "--epochs", "30",
                        "--lbfgs-steps", "0", "--qat-epochs", "0", "--device", "cpu", "--json"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
                       timeout=300)
    assert r.returncode == 0, r.stderr

    def refuse(name):
        raise AssertionError(f"not JSON: {name}")

    report = json.loads(r.stdout, parse_constant=refuse)
    psnr = report["images"][0]["psnr"]
    assert psnr is None or np.isfinite(psnr)


def test_compare_with_colliding_names_keeps_mixinr(tmp_path):
    """Two folders holding the same file name: mixinr is measured (names made unique), not dropped."""
    for folder, seed in (("a", 0), ("b", 1)):
        write_png(tmp_path / "in" / folder / "x.png", smooth_image(16, 16, seed))
    r = subprocess.run([sys.executable, "-m", "mixinr", "compare", str(tmp_path / "in"), "--out", str(tmp_path / "c"),
                        "--codecs", "mixinr", "--bpp", "8", "--epochs", "20", "--device", "cpu", "--json"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
                       timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert [c["name"] for c in res["codecs"]] == ["mixinr"] and res["codecs"][0]["settings"] == [8.0]
    assert sorted(im["name"] for im in res["images"]) == ["a__x.png", "b__x.png"]


def test_unique_names_stay_plain_file_names():
    """Colliding names become folder__name, and a name that still repeats gets a counter."""
    from mixinr.cli.compare import unique_names

    names = unique_names([Path("/d/a/x.png"), Path("/d/b/x.png"), Path("/d/a__x.png"), Path("/d/c/y.png")])
    assert names == ["a__x.png", "b__x.png", "a__x-1.png", "y.png"]
    assert all(bitstream.check_name(n) is None for n in names)


def test_help_and_argument_errors_do_not_import_torch():
    """--help, encode --help and an argparse error answer without importing torch (it takes seconds)."""
    for argv in (["--help"], ["encode", "--help"], ["decode", "--help"]):
        code, out, _, torch_imported = mixinr(*argv)
        assert code == 0 and "usage" in out and not torch_imported
    code, _, err, torch_imported = mixinr("decode")
    assert code == 2 and not torch_imported and "Traceback" not in "\n".join(err)


def test_info_reads_the_header_without_torch(tmp_path):
    """info --json describes an archive from its header alone: the same fields, torch never imported."""
    arc = small_archive(tmp_path / "a.mixinr", [(8, 8), (4, 6)], ["x.png", "y.png"])
    code, out, err, torch_imported = mixinr("info", arc, "--json")
    assert code == 0 and not torch_imported, err
    info = json.loads(out)
    assert info["images_count"] == 2 and info["arch"]["width"] == 2 and info["bytes"] == arc.stat().st_size
    assert [(i["name"], i["height"], i["width"]) for i in info["images"]] == [("x.png", 8, 8), ("y.png", 4, 6)]
    assert sum(info["sections"].values()) == arc.stat().st_size


GRID_ARCHIVE = ROOT / "tests" / "data" / "golden-grid-context.mixinr"  # version 2: e.png 12x16, f.png 9x14


def test_info_and_decode_planning_of_a_grid_archive_do_not_import_torch(tmp_path):
    """A version-2 (grid) archive: info --json reads its header alone (no latents decoded, torch never
    imported), and decode's planning (image index, output size against the caps, a file in the way)
    refuses before torch loads, nothing written; torch comes only when pixels are rendered."""
    code, out, err, torch_imported = mixinr("info", GRID_ARCHIVE, "--json")
    assert code == 0 and not torch_imported, err
    info = json.loads(out)
    assert info["version"] == 2 and info["images_count"] == 2 and info["bytes"] == GRID_ARCHIVE.stat().st_size
    assert [(i["name"], i["height"], i["width"]) for i in info["images"]] == [("e.png", 12, 16), ("f.png", 9, 14)]
    assert sum(info["sections"].values()) == GRID_ARCHIVE.stat().st_size
    out_dir = tmp_path / "out"
    assert_refused(mixinr("decode", GRID_ARCHIVE, "-o", out_dir, "--size", "70000x8"),
                   "image 0 (e.png): output size 70000x8 out of range")
    assert_refused(mixinr("decode", GRID_ARCHIVE, "-o", out_dir, "--index", "2"), "no image 2")
    (tmp_path / "f.png").write_bytes(b"keep")
    assert_refused(mixinr("decode", GRID_ARCHIVE, "-o", tmp_path / "f.png", "--index", "1"), "already exists")
    assert not out_dir.exists() and (tmp_path / "f.png").read_bytes() == b"keep"
    code, _, err, torch_imported = mixinr("decode", GRID_ARCHIVE, "-o", out_dir, "--index", "1")
    assert code == 0 and torch_imported and (out_dir / "f.png").is_file(), err


def test_unknown_format_version_is_one_line_without_torch(tmp_path):
    """info and decode of an archive of version 7 (valid magic and checksum): the codec's one-line
    "unknown format version" error, torch never imported, nothing written."""
    arc = tmp_path / "v7.mixinr"
    arc.write_bytes(_with_crc(bitstream.MAGIC + b"\x07" + bytes(16)))
    assert_refused(mixinr("info", arc), "v7.mixinr: unknown format version 7 (this mixinr reads 1, 2)")
    assert_refused(mixinr("decode", arc, "-o", tmp_path / "out"), "unknown format version 7")
    assert not (tmp_path / "out").exists()
