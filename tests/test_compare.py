"""The comparison: RD envelopes, interpolation that never extrapolates, BD figures from the
bjontegaard package on curves with known answers, mean points from total bytes, MS-SSIM limits,
and `mixinr compare` end to end (JSON, CSV, PNG/SVG plot showing every codec)."""

import json
import math
import sys

import numpy as np
import pytest
from conftest import smooth_image
from PIL import Image

from mixinr import baselines
from mixinr.cli import main
from mixinr.compare import (Curve, OutOfRange, Point, allocated_curve, at_bpp, bd, envelope, groups_of,
                            interpolate_at, measure_codec, ms_ssim, results, spread, ssim)
from mixinr.images import write_png
from mixinr.metrics import psnr

RATES = [0.25, 0.5, 1.0, 2.0, 4.0]
PSNRS = [24.0, 27.5, 31.0, 34.0, 36.5]


def curve(name, rates, psnrs) -> Curve:
    return Curve(name, name, "q", settings=list(range(len(rates))), bpp=list(rates), psnr=list(psnrs),
                 ms_ssim=[None] * len(rates), ssim=[None] * len(rates))


def test_bd_of_a_curve_against_itself_is_zero():
    """Identical curves: BD-rate 0 % and BD-PSNR 0 dB, over the full overlap."""
    r = bd(curve("a", RATES, PSNRS), curve("b", RATES, PSNRS))
    assert r["bd-rate"] == pytest.approx(0.0, abs=1e-9)
    assert r["bd-quality"] == pytest.approx(0.0, abs=1e-9)
    assert r["quality_overlap"] == [24.0, 36.5] and r["notes"] == []


def test_bd_rate_of_a_cheaper_curve_is_negative_and_matches_the_shift():
    """The same qualities at 80 % of the rate: BD-rate -20 % (the shift is exact in log-rate, so
    any interpolator gives it), BD-PSNR positive; the reverse comparison gives +25 %."""
    anchor = curve("anchor", RATES, PSNRS)
    cheaper = curve("test", [0.8 * r for r in RATES], PSNRS)
    r = bd(anchor, cheaper)
    assert r["bd-rate"] == pytest.approx(-20.0, abs=1e-6)
    assert r["bd-quality"] > 0.3
    assert bd(cheaper, anchor)["bd-rate"] == pytest.approx(25.0, abs=1e-6)


def test_bd_needs_two_points_and_an_overlap():
    """One point, or curves sharing no quality range, give None with a note, never a number."""
    one = bd(curve("a", RATES, PSNRS), curve("b", [1.0], [30.0]))
    assert one["bd-rate"] is None and one["bd-quality"] is None and "at least 2" in one["notes"][0]
    apart = bd(curve("a", RATES, PSNRS), curve("b", [0.3, 0.6], [40.0, 42.0]))
    assert apart["bd-rate"] is None and apart["bd-quality"] is not None
    assert any("BD-rate undefined" in n for n in apart["notes"])


def test_envelope_drops_dominated_and_duplicate_points():
    """Sorted by rate; a point no better than a cheaper one (a header floor repeated, a dip) goes."""
    xs, ys = envelope([2.0, 1.0, 1.0, 3.0, 4.0, 0.5], [20.0, 20.0, 20.0, 19.0, 25.0, 18.0])
    assert xs.tolist() == [0.5, 1.0, 4.0] and ys.tolist() == [18.0, 20.0, 25.0]


def test_interpolation_never_extrapolates():
    """Inside the measured range: exact at measured points, linear in log-bpp between them.
    Outside (below the lowest or above the highest bpp): OutOfRange, and None in at_bpp."""
    assert interpolate_at(RATES, PSNRS, 1.0) == 31.0
    assert interpolate_at(RATES, PSNRS, math.sqrt(0.5)) == pytest.approx((27.5 + 31.0) / 2)
    for outside in (0.2499, 4.01, 100.0):
        with pytest.raises(OutOfRange):
            interpolate_at(RATES, PSNRS, outside)
    rows = at_bpp([curve("a", RATES, PSNRS), curve("b", [1.0, 8.0], [30.0, 40.0])], [0.5, 6.0])
    assert rows[0]["psnr-rgb"] == {"a": 27.5, "b": None}
    assert rows[1]["psnr-rgb"]["a"] is None and rows[1]["psnr-rgb"]["b"] is not None


def test_ms_ssim_needs_large_images_and_ssim_is_labelled_separately():
    """MS-SSIM is None under 161 px (five scales need it) and 1 for identical large images;
    single-scale SSIM is computed for small images."""
    small = smooth_image(32, 32, 0)
    assert ms_ssim(small, small) is None
    assert ssim(small, small) == pytest.approx(1.0, abs=1e-6)
    big = smooth_image(161, 170, 1)
    assert ms_ssim(big, big) == pytest.approx(1.0, abs=1e-6)
    noisy = np.clip(big.astype(int) + np.random.default_rng(0).integers(-20, 21, big.shape), 0, 255).astype(np.uint8)
    assert 0.5 < ms_ssim(big, noisy) < 1.0


def test_mean_point_is_mean_psnr_and_total_bytes_over_total_pixels():
    """For images of different sizes, a setting's mean bpp is total bytes * 8 / total pixels and its
    PSNR the plain mean of the per-image PSNRs."""
    imgs = [smooth_image(16, 24, 0), smooth_image(40, 32, 1)]
    c = measure_codec(baselines.CODECS["webp"], imgs, ["x", "y"], settings=[50])
    a, b = c.points
    assert c.bpp == [(a.bytes + b.bytes) * 8 / (16 * 24 + 40 * 32)]
    assert c.psnr == [pytest.approx((a.psnr + b.psnr) / 2)]
    assert a.bpp == a.bytes * 8 / (16 * 24)


def test_groups_split_sorted_images_consecutively():
    """--group-size N splits the (sorted) images into consecutive groups; default is one group;
    --group-by folder never lets a group span two folders."""
    assert groups_of(5, None) == [[0, 1, 2, 3, 4]]
    assert groups_of(5, 2) == [[0, 1], [2, 3], [4]]
    assert groups_of(5, 2, keys="aaabb") == [[0, 1], [2], [3, 4]]
    assert groups_of(5, None, keys="aabbb") == [[0, 1], [2, 3, 4]]


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    for i in range(4):
        write_png(d / f"im{3 - i}.png", smooth_image(16, 16, i))
    return d


def test_cli_writes_json_csv_and_a_plot_with_every_codec(folder, tmp_path, capsys):
    """`mixinr compare` with all codecs (mixinr tiny: few epochs, two groups of 2) writes
    results.json (CompressAI-like curves, per-image points, BD figures), results.csv (per-image and
    mean rows; mixinr's archive bytes counted once per group) and rd.png/rd.svg whose legend names
    every codec; figures in the JSON are re-derivable from the per-image points."""
    out = tmp_path / "cmp"
    rc = main(["compare", str(folder), "--out", str(out), "--epochs", "20", "--bpp", "6", "12",
               "--group-size", "2", "--json"])
    assert rc == 0
    stdout = json.loads(capsys.readouterr().out)
    res = json.loads((out / "results.json").read_text())
    assert stdout["json"] == str(out / "results.json")
    names = [c["name"] for c in res["codecs"]]
    classical = ["jpeg", "webp", "avif", "heic", "jpegxl", "jpeg2000"]
    assert names == ["mixinr"] + [n + s for n in classical for s in ("", "-allocated")], res["skipped"]
    for c in res["codecs"]:
        r = c["results"]
        assert {"bpp", "psnr-rgb", "ms-ssim"} <= set(r) and len(r["bpp"]) == len(r["psnr-rgb"]) == len(c["settings"])
        assert all(v is None for v in r["ms-ssim"])  # 16x16: too small for MS-SSIM
        assert all(lo <= m for lo, m in zip(r["psnr-rgb-min"], r["psnr-rgb"])) and min(r["psnr-rgb-std"]) >= 0
        assert all(p["encode_s"] > 0 and p["decode_s"] > 0 for p in c["per_image"])
    by_name = {c["name"]: c for c in res["codecs"]}
    for n in classical:  # allocated: never dearer nor worse than one quality for all, per group
        fixed, alloc = by_name[n], by_name[n + "-allocated"]
        assert alloc["allocated"] == "psnr-rgb" and alloc["settings"] == fixed["settings"]
        assert all(p["quality"] in fixed["settings"] for p in alloc["per_image"])
        for k in range(len(fixed["settings"])):
            assert alloc["results"]["bpp"][k] <= fixed["results"]["bpp"][k] + 1e-12
            assert alloc["results"]["psnr-rgb"][k] >= fixed["results"]["psnr-rgb"][k] - 1e-9
    mix = res["codecs"][0]
    assert mix["settings"] == [6, 12] and [im["name"] for im in res["images"]] == ["im0.png", "im1.png", "im2.png",
                                                                                   "im3.png"]
    archive_bytes = {}
    for k, budget in enumerate(mix["settings"]):
        pts = [p for p in mix["per_image"] if p["setting"] == budget]
        assert [p["group"] for p in pts] == [0, 0, 1, 1]
        assert pts[0]["bytes"] == pts[1]["bytes"] and pts[0]["bpp"] <= budget
        archive_bytes[budget] = pts[0]["bytes"] + pts[2]["bytes"]
        assert mix["results"]["bpp"][k] == archive_bytes[budget] * 8 / (4 * 256)
        assert mix["results"]["psnr-rgb"][k] == pytest.approx(np.mean([p["psnr-rgb"] for p in pts]))
    assert {b["anchor"] for b in res["bd"]} == set(names[1:]) == set(res["bd_summary"])
    assert [row["bpp"] for row in res["at_bpp"]] == sorted(mix["results"]["bpp"])

    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0] == "codec,setting,image,group,width,height,bytes,bpp,psnr_rgb,ms_ssim,ssim,quality,encode_s,decode_s"
    for budget, n_bytes in archive_bytes.items():
        mean = [r.split(",") for r in rows if r.startswith(f"mixinr,{float(budget)},(mean),")]
        assert len(mean) == 1 and int(mean[0][6]) == n_bytes  # the two archives, each counted once
    assert len(rows) == 1 + sum(len(c["per_image"]) + len(c["settings"]) for c in res["codecs"])

    png = out / "rd.png"
    assert Image.open(png).format == "PNG" and (out / "rd.svg").read_text().lstrip().startswith("<?xml")
    from mixinr.plot import render

    labels = [t.get_text() for t in render(res).axes[0].get_legend().get_texts()]
    for desc in ("mixinr", "JPEG", "WebP", "AVIF", "HEIC", "JPEG XL", "JPEG 2000"):
        assert any(label.split("  (")[0] == desc for label in labels), (desc, labels)
        assert desc == "mixinr" or any(label.split("  (")[0] == desc + ", allocated" for label in labels)


def test_cli_skips_a_missing_codec_with_a_notice(folder, tmp_path, monkeypatch, capsys):
    """pillow-heif unimportable: heic is skipped with a one-line notice on stderr and recorded in
    results.json; the run still succeeds, and a plot is written at --plot."""
    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    out, plot = tmp_path / "cmp", tmp_path / "fig" / "rd.png"
    rc = main(["compare", str(folder), "--out", str(out), "--codecs", "jpeg,heic", "--plot", str(plot)])
    assert rc == 0
    captured = capsys.readouterr()
    err = captured.err
    assert "wrote " in captured.out and "skipped: heic" in captured.out  # the human summary
    assert "mixinr: notice: heic: skipped, pillow-heif is not installed" in err
    res = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in res["codecs"]] == ["jpeg", "jpeg-allocated"]
    assert res["skipped"][0].startswith("heic: skipped")
    assert plot.exists() and plot.with_suffix(".svg").exists() and res["bd"] == []


def test_jpeg_figures_in_results_match_pillow(folder, tmp_path):
    """The JPEG curve in results.json equals a direct Pillow round trip of the same files."""
    import io

    out = tmp_path / "cmp"
    assert main(["compare", str(folder), "--out", str(out), "--codecs", "jpeg", "--json"]) == 0
    jpeg = json.loads((out / "results.json").read_text())["codecs"][0]
    imgs = [np.asarray(Image.open(folder / f"im{i}.png").convert("RGB")) for i in range(4)]
    for k, q in enumerate(jpeg["settings"]):
        sizes, ps = [], []
        for img in imgs:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "JPEG", quality=q)
            sizes.append(len(buf.getvalue()))
            ps.append(psnr(img, np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))))
        assert jpeg["results"]["bpp"][k] == sum(sizes) * 8 / (4 * 256)
        assert jpeg["results"]["psnr-rgb"][k] == pytest.approx(np.mean(ps), abs=1e-12)


@pytest.mark.parametrize("argv,message", [
    (["--codecs", "jpeg,bpg"], "--codecs: unknown codec 'bpg'"),
    (["--bpp", "0"], "--bpp must be a positive number"),
    (["--group-size", "0"], "--group-size must be at least 1"),
])
def test_cli_user_errors_are_one_line(folder, tmp_path, capsys, argv, message):
    """Bad flags: exit 2 and one `mixinr: error:` line naming the flag."""
    assert main(["compare", str(folder), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mixinr: error: " + message)


def test_cli_reads_a_tree_of_folders_and_groups_by_folder(tmp_path):
    """A parent folder of class folders is read recursively, sorted by (folder, name); with
    --group-by folder --group-size 2 the mixinr groups never span two folders."""
    for folder, stems in (("b", ["y2", "y1"]), ("a", ["x3", "x1", "x2"])):
        for i, stem in enumerate(stems):
            write_png(tmp_path / "tree" / folder / f"{stem}.png", smooth_image(12, 12, i))
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "tree"), "--out", str(out), "--codecs", "webp", "--group-by", "folder",
                 "--group-size", "2", "--json"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [im["name"] for im in res["images"]] == ["x1.png", "x2.png", "x3.png", "y1.png", "y2.png"]
    assert res["config"]["groups"] == [["x1.png", "x2.png"], ["x3.png"], ["y1.png", "y2.png"]]


def test_plot_labels_carry_bd_rate_and_flag_thin_overlaps(tmp_path):
    """Each classical codec's legend entry carries mixinr's BD-rate against it; a BD-rate computed
    over less than 75 % of the joint range is starred and explained under the plot; PNG and SVG
    are both written."""
    from mixinr.compare import results
    from mixinr.plot import plot_rd, render

    mix = curve("mixinr", [0.5, 1.0, 2.0], [26.0, 30.0, 33.0])
    near = curve("webp", [0.6, 1.2, 2.4], [26.0, 30.0, 33.0])  # same qualities: full overlap
    far = curve("jpeg", [1.0, 4.0, 9.0], [20.0, 30.0, 40.0])  # overlap 26-33 of 20-40 dB
    res = results([mix, near, far], [{"name": "a", "width": 8, "height": 8}], [], [], {})
    labels = [t.get_text() for t in render(res).axes[0].get_legend().get_texts()]
    rate_webp = res["bd_summary"]["webp"]["bd-rate"]
    assert labels[0] == "mixinr" and labels[1] == f"webp  (mixinr BD-rate {rate_webp:+.0f}%)"
    assert labels[2].startswith("jpeg  (mixinr BD-rate ") and labels[2].endswith("*)")
    texts = [t.get_text() for t in render(res).texts]
    assert any("less than 75%" in t for t in texts)
    png, svg = plot_rd(res, tmp_path / "p" / "rd.png")
    assert png.stat().st_size > 1000 and svg.read_text().lstrip().startswith("<?xml")


def _fixed(table, ms=None) -> Curve:
    """A hand-made fixed-quality curve: table[image] = [(bytes, psnr) per setting], 8x8 images."""
    c = Curve("webp", "WebP (test)", "quality")
    for k in range(len(next(iter(table.values())))):
        pts = [Point(name, k, b, b * 8 / 64, q, None if ms is None else ms[name][k], None, encode_s=0.1, decode_s=0.01)
               for name, row in table.items() for b, q in [row[k]]]
        c.add_setting(k, pts, sum(p.bytes for p in pts), 64 * len(table), 0.1 * len(pts))
    return c


def test_allocated_curve_moves_bytes_within_each_group_only():
    """Each group gets the bytes its own images spend at the setting: within group (a, b) bytes move
    to the image where dB come cheap; group (c) alone keeps its setting; the mean point's bpp is
    total bytes over total pixels, and the spread and seconds follow the chosen points."""
    table = {"a": [(8, 20.0), (16, 30.0), (24, 31.0)], "b": [(8, 30.0), (16, 30.5), (24, 31.0)],
             "c": [(8, 25.0), (16, 26.0), (24, 27.0)]}
    alloc = allocated_curve(_fixed(table), [["a", "b"], ["c"]])
    at1 = {p.image: p for p in alloc.points if p.setting == 1}
    assert (at1["a"].quality, at1["b"].quality, at1["c"].quality) == (2, 0, 1)
    assert alloc.bpp[1] == (24 + 8 + 16) * 8 / (3 * 64) and alloc.psnr[1] == pytest.approx((31 + 30 + 26) / 3)
    assert alloc.psnr_min[1] == 26.0 and alloc.psnr_std[1] == pytest.approx(spread([31, 30, 26])["std"])
    assert alloc.seconds[1] == pytest.approx(0.3) and alloc.decode_seconds[1] == pytest.approx(0.03)
    # one group of all three: a's gain buys from b and c
    assert allocated_curve(_fixed(table), [["a", "b", "c"]]).psnr[1] >= alloc.psnr[1]


def test_ms_ssim_allocation_is_its_own_curve_and_bd_row():
    """With MS-SSIM on every image, the MS-SSIM allocation maximises mean MS-SSIM (not PSNR), is named
    <codec>-allocated-ms-ssim, and enters only the MS-SSIM BD rows; the PSNR allocation only the PSNR rows."""
    table = {"a": [(8, 20.0), (16, 30.0), (24, 31.0)], "b": [(8, 30.0), (16, 30.5), (24, 31.0)]}
    ms = {"a": [0.90, 0.91, 0.92], "b": [0.80, 0.90, 0.95]}  # MS-SSIM prefers bytes on b
    fixed = _fixed(table, ms)
    by_psnr, by_ms = allocated_curve(fixed, [["a", "b"]]), allocated_curve(fixed, [["a", "b"]], "ms-ssim")
    assert by_ms.name == "webp-allocated-ms-ssim" and by_ms.allocated == "ms-ssim"
    assert [p.quality for p in by_psnr.points if p.setting == 1] == [2, 0]
    assert [p.quality for p in by_ms.points if p.setting == 1] == [0, 2]
    mix = Curve("mixinr", "mixinr", "bpp", [1, 2], [1.0, 2.5], [27.0, 31.0], [0.9, 0.95], [None, None])
    res = results([mix, fixed, by_psnr, by_ms], [{"name": "a", "width": 8, "height": 8}], [], [], {})
    rows = {(b["anchor"], b["metric"]) for b in res["bd"]}
    assert rows == {("webp", "psnr-rgb"), ("webp", "ms-ssim"), ("webp-allocated", "psnr-rgb"),
                    ("webp-allocated-ms-ssim", "ms-ssim")}
