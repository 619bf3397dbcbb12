"""`mixinr encode / decode / info` called in-process through mixinr.cli.main: JSON keys, PNGs named
after the originals whose PSNR equals what encode reported, single-image and resized decoding,
collection manifests, and every user error giving exit code 2, one line and no partial output.
One subprocess test checks that a bad archive prints no traceback."""

import gc
import json
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_image

from mixinr import codec
from mixinr.cli import main
from mixinr.images import read_image, write_png
from mixinr.metrics import psnr

FAST = ["--epochs", "40", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """A folder of three 12x12 images (named out of order) and its archive encoded at 8 bpp."""
    root = tmp_path_factory.mktemp("enc")
    folder = root / "imgs"
    for i, name in enumerate(["b.png", "a.png", "c.png"]):
        write_png(folder / name, smooth_image(12, 12, i))
    out = root / "g.mixinr"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    code, report = _run_json(["encode", str(folder), "-o", str(out), "--bpp", "8", *FAST])
    torch.set_num_threads(before)
    assert code == 0
    return folder, out, report


def _run_json(argv):
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv + ["--json"])
    return code, (json.loads(buf.getvalue()) if code == 0 else None)


def test_encode_json(encoded):
    """encode --json has the contract's keys, inputs sorted by name, bpp from the real file size."""
    folder, out, report = encoded
    assert {"archive", "bytes", "bpp", "psnr_mean", "seconds", "images"} <= report.keys()
    assert [im["name"] for im in report["images"]] == ["a.png", "b.png", "c.png"]
    assert all({"name", "width", "height", "psnr"} <= im.keys() for im in report["images"])
    assert report["bytes"] == out.stat().st_size
    assert report["bpp"] == out.stat().st_size * 8 / (3 * 144) <= 8


def test_decode_reproduces_reported_psnr(encoded, tmp_path):
    """decode writes <stem>.png for every image, and their PSNR is exactly what encode reported."""
    folder, out, report = encoded
    code, dec = _run_json(["decode", str(out), "-o", str(tmp_path)])
    assert code == 0 and len(dec["images"]) == 3
    for im in report["images"]:
        png = tmp_path / im["name"]
        assert png.exists()
        assert psnr(read_image(png), read_image(folder / im["name"])) == im["psnr"]


def test_decode_one_image_and_sizes(encoded, tmp_path):
    """--index writes only the chosen images; --size and --scale set the output resolution."""
    _, out, _ = encoded
    code, dec = _run_json(["decode", str(out), "-o", str(tmp_path / "one"), "--index", "1"])
    assert code == 0 and [p.name for p in (tmp_path / "one").iterdir()] == ["b.png"]
    code, _ = _run_json(["decode", str(out), "-o", str(tmp_path / "big"), "--index", "0", "2", "--size", "30x20"])
    assert code == 0 and read_image(tmp_path / "big" / "c.png").shape == (30, 20, 3)
    code, _ = _run_json(["decode", str(out), "-o", str(tmp_path / "half"), "--scale", "0.5", "--name", "a"])
    assert code == 0 and read_image(tmp_path / "half" / "a.png").shape == (6, 6, 3)


def test_info(encoded, capsys):
    """info --json: version, architecture, K, N, scheme, precision, sizes, and sections summing to the file."""
    _, out, report = encoded
    code, info = _run_json(["info", str(out)])
    assert code == 0
    # The codec's defaults (docs/rd.md) are what the archive says it holds.
    assert info["version"] == 1 and info["sets"] == codec.EncodeConfig().sets and info["images_count"] == 3
    assert info["arch"]["width"] == report["width"] and info["coeffs"] == report["coeffs"] == "per-layer"
    assert info["arch"]["omega"] == info["arch"]["omega_first"] == codec.EncodeConfig().omega
    assert info["precision"] == report["precision"]
    assert sum(info["sections"].values()) == out.stat().st_size
    assert [(i["name"], i["height"], i["width"]) for i in info["images"]] == [(f"{c}.png", 12, 12) for c in "abc"]
    assert main(["info", str(out)]) == 0
    assert "precision" in capsys.readouterr().out


def test_manifest_decode(encoded, tmp_path):
    """A collection manifest decodes the named images from their archives (paths relative to it)."""
    _, out, _ = encoded
    (tmp_path / "group-0000.mixinr").write_bytes(out.read_bytes())
    manifest = {"format": "mixinr-manifest", "version": 1,
                "groups": [{"archive": "group-0000.mixinr", "status": "done", "error": None}],
                "images": [{"name": n, "archive": "group-0000.mixinr", "index": i, "psnr": 0, "bpp": 0}
                           for i, n in enumerate(["a.png", "b.png", "c.png"])]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    code, dec = _run_json(["decode", str(tmp_path / "manifest.json"), "-o", str(tmp_path / "o"), "--name", "c.png"])
    assert code == 0 and [p.name for p in (tmp_path / "o").iterdir()] == ["c.png"]
    code, dec = _run_json(["decode", str(tmp_path / "manifest.json"), "-o", str(tmp_path / "all")])
    assert code == 0 and len(dec["images"]) == 3
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    assert main(["decode", str(tmp_path / "bad.json"), "-o", str(tmp_path / "x")]) == 2


def _manifest(tmp_path, archives: list[bytes]) -> Path:
    """tmp_path/manifest.json over group-000k.mixinr, each holding archives[k] (a.png, b.png, c.png as
    "gk/a.png" ...), its images listed by name: a of every group first, so archives interleave."""
    for k, data in enumerate(archives):
        (tmp_path / f"group-000{k}.mixinr").write_bytes(data)
    images = [{"name": f"g{k}/{n}", "archive": f"group-000{k}.mixinr", "index": i, "psnr": 0, "bpp": 0}
              for i, n in enumerate(["a.png", "b.png", "c.png"]) for k in range(len(archives))]
    manifest = {"format": "mixinr-manifest", "version": 1, "images": images,
                "groups": [{"archive": f"group-000{k}.mixinr", "status": "done", "error": None}
                           for k in range(len(archives))]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path / "manifest.json"


def _watch_decoders(monkeypatch, on_build=lambda source: None) -> list:
    """Wrap codec.archive_from_bytes (what decode builds decoders with): each call appends (archive file
    name, decoders still alive) and runs on_build(source) first."""
    live, builds = weakref.WeakSet(), []
    real = codec.archive_from_bytes

    def watched(data, source="archive"):
        gc.collect()  # only what the decode still holds stays alive
        on_build(source)
        builds.append((Path(source).name, len(live)))
        decoder = real(data, source)
        live.add(decoder)
        return decoder

    monkeypatch.setattr(codec, "archive_from_bytes", watched)
    return builds


def test_manifest_decode_holds_one_decoder_at_a_time(encoded, tmp_path, monkeypatch):
    """A manifest of three archives whose images interleave: each archive's decoder is built once, only
    after the previous one is gone and its images are written; the report keeps the manifest's order."""
    _, out, _ = encoded
    manifest = _manifest(tmp_path, [out.read_bytes()] * 3)
    dec_dir = tmp_path / "o"
    written = []
    builds = _watch_decoders(monkeypatch, lambda source: written.append(len(list(dec_dir.glob("*.png")))))
    code, dec = _run_json(["decode", str(manifest), "-o", str(dec_dir)])
    assert code == 0
    assert builds == [(f"group-000{k}.mixinr", 0) for k in range(3)]
    assert written == [0, 3, 6]
    assert [(Path(d["archive"]).name, d["name"]) for d in dec["images"]] == [
        (f"group-000{k}.mixinr", f"{n}.png") for n in "abc" for k in range(3)]
    assert len(list(dec_dir.glob("*.png"))) == 9 and not list(dec_dir.glob(".*.tmp"))


@pytest.mark.parametrize("case, words", [("flipped", "checksum mismatch"), ("missing", "no such file")])
def test_manifest_with_a_bad_last_archive_writes_nothing(encoded, tmp_path, capsys, monkeypatch, case, words):
    """The last of three archives corrupt or missing: exit 2, one line naming it, no decoder built (pass 1
    reads every archive's header and checksum first), no output and no temporary file."""
    _, out, _ = encoded
    last = out.read_bytes() if case == "missing" else _corrupt(out, tmp_path).read_bytes()
    manifest = _manifest(tmp_path, [out.read_bytes()] * 2 + [last])
    if case == "missing":
        (tmp_path / "group-0002.mixinr").unlink()
    builds = _watch_decoders(monkeypatch)
    capsys.readouterr()
    assert main(["decode", str(manifest), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mixinr: error: ") and err.count("\n") == 1
    assert "group-0002.mixinr" in err and words in err
    assert builds == [] and not (tmp_path / "o").exists() and not list(tmp_path.rglob(".*.tmp"))


def test_manifest_archive_changed_during_decode_keeps_earlier_images(encoded, tmp_path, capsys, monkeypatch):
    """The documented limit of pass 2: an archive replaced (by another valid one) after pass 1 checked it
    is refused in one line (exit 2) saying how many images of earlier archives stay written, each complete."""
    _, out, _ = encoded
    manifest = _manifest(tmp_path, [out.read_bytes()] * 3)
    other = (Path(__file__).parent / "data" / "golden-grid-context.mixinr").read_bytes()

    def replace_last(source):
        if source.endswith("group-0000.mixinr"):
            (tmp_path / "group-0002.mixinr").write_bytes(other)

    _watch_decoders(monkeypatch, replace_last)
    capsys.readouterr()
    assert main(["decode", str(manifest), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mixinr: error: ") and err.count("\n") == 1
    assert "group-0002.mixinr: changed on disk" in err and "decode stopped there; 6 images already written" in err
    pngs = sorted((tmp_path / "o").glob("*.png"))
    assert len(pngs) == 6 and all(read_image(p).shape == (12, 12, 3) for p in pngs)
    assert not list(tmp_path.rglob(".*.tmp"))


def _corrupt(out, tmp_path):
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 4
    bad = tmp_path / "flipped.mixinr"
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.parametrize("case", ["exists", "empty", "non-image", "missing", "budget", "lbfgs", "magic", "truncated",
                                  "flipped", "index", "size", "png-exists"])
def test_errors_exit_2_one_line_no_output(encoded, tmp_path, capsys, case):
    """Each user error: exit code 2, one line on stderr, nothing new written."""
    folder, out, _ = encoded
    target = tmp_path / "new.mixinr"
    outdir = tmp_path / "dec"
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    argv = {
        "exists": ["encode", str(folder), "-o", str(out), "--bpp", "4", *FAST],
        "empty": ["encode", "-o", str(target), "--bpp", "4"],
        "non-image": ["encode", str(junk), "-o", str(target), "--bpp", "4", *FAST],
        "missing": ["encode", str(tmp_path / "nope.png"), "-o", str(target), "--bpp", "4"],
        "budget": ["encode", str(folder), "-o", str(target), "--bpp", "0.01", *FAST],
        "lbfgs": ["encode", str(folder), "-o", str(target), "--bpp", "4", "--lbfgs-steps", "-1", *FAST],
        "magic": ["decode", str(junk), "-o", str(outdir)],
        "truncated": ["info", str(tmp_path / "t.mixinr")],
        "flipped": ["decode", str(_corrupt(out, tmp_path)), "-o", str(outdir)],
        "index": ["decode", str(out), "-o", str(outdir), "--index", "0", "7"],
        "size": ["decode", str(out), "-o", str(outdir), "--size", "0x5"],
        "png-exists": ["decode", str(out), "-o", str(tmp_path), "--index", "0", "1"],
    }[case]
    (tmp_path / "t.mixinr").write_bytes(out.read_bytes()[:-7])
    if case == "png-exists":
        (tmp_path / "b.png").write_bytes(b"keep")
    before = out.read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mixinr: error: ") and err.count("\n") == 1
    assert not target.exists() and not outdir.exists()
    assert out.read_bytes() == before
    assert not (tmp_path / "a.png").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_archive_in_subprocess_prints_no_traceback(encoded, tmp_path):
    """The installed entry point turns a corrupt archive into one line on stderr and exit code 2."""
    _, out, _ = encoded
    bad = _corrupt(out, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "mixinr", "decode", str(bad), "-o", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "checksum mismatch" in proc.stderr and not (tmp_path / "d").exists()


def test_demo_runs(capsys):
    """`mixinr demo --json` (shortened fit) compresses its 8 tiles under its 2 bpp budget and reports PSNR."""
    assert main(["demo", "--epochs", "30", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["images"]) == 8 and report["bpp"] <= 2.0
    assert report["bytes"] * 8 / (8 * 32 * 32) == report["bpp"]
    assert all(np.isfinite(im["psnr"]) and im["psnr"] > 5 for im in report["images"])
