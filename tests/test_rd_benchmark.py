"""Smoke tests of benchmarks/rd.py on tiny synthetic images: group loading order, budgets that hold,
the seed's width mapping, interpolation without extrapolation, and the summary rows."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _bench(name: str):
    """A script of benchmarks/ loaded as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_bench", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def rd():
    return _bench("rd")


def _images(n, size=8, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(0.5, 3, 3)
        rgb = np.stack([np.sin(a * x + b * y), np.cos(b * x - c * y), np.sin(c * x * y + a)], -1)
        out.append(((rgb * 0.5 + 0.5) * 255).round().astype(np.uint8))
    return out


def test_cifar_groups_take_first_files_by_name(tmp_path, rd):
    """A group is the first group_size files of a class folder, sorted by name."""
    folder = tmp_path / "3"
    folder.mkdir()
    for i, im in zip((5, 1, 9, 2), _images(4)):
        Image.fromarray(im).save(folder / f"{i:05d}.png")
    (g,) = rd.load_cifar_groups(tmp_path, [3], 3)
    assert g.names == ["00001.png", "00002.png", "00005.png"]
    assert g.pixels == 3 * 64 and g.label == "class3"


def test_seed_width_is_widest_fp16_archive_under_budget(rd):
    """seed_width picks the widest depth-5 width whose fp16 archive fits; wider ones do not fit."""
    from mixinr import codec
    from mixinr.model import Arch, MixtureSiren

    g = rd.Group("g", _images(2), ["a.png", "b.png"])
    bpp = 60.0
    w = rd.seed_width(g, bpp, max_width=16)
    assert w is not None and 1 <= w < 16
    budget = rd.budget_bytes(bpp, g.pixels)
    sizes = [(8, 8)] * 2
    size = lambda width: len(codec.pack(MixtureSiren(Arch(5, width, 2), 2), g.names, sizes, "fp16"))  # noqa: E731
    assert size(w) <= budget < size(w + 1)
    assert rd.seed_width(g, 0.5) is None


def test_mixinr_point_is_under_budget_and_decoded(rd):
    """A mixinr point is a real archive under the budget; its PSNR is re-measured from the bytes."""
    g = rd.Group("g", _images(2), ["a.png", "b.png"])
    pt = rd.mixinr_point(g, 48.0, epochs=30, depth=2)
    assert pt["bytes"] <= rd.budget_bytes(48.0, g.pixels)
    assert pt["bpp"] == pytest.approx(pt["bytes"] * 8 / g.pixels)
    assert 5 < pt["psnr"] < 99 and pt["arch"].startswith("2x")


def test_settings_reach_the_rows_and_unknown_fields_are_refused(rd, tmp_path):
    """--settings is passed to EncodeConfig and recorded in the mixinr rows; a field EncodeConfig does
    not have stops the run before any fitting."""
    for c in (0,):
        (tmp_path / str(c)).mkdir()
        for i, im in enumerate(_images(2)):
            Image.fromarray(im).save(tmp_path / str(c) / f"{i}.png")
    g = rd.load_cifar_groups(tmp_path, [0], 2)
    rows = rd.run(g, [48.0], ["mixinr-default"], {"epochs": 20, "depth": 2, "coeffs": "linear"})
    assert rows[0]["settings"]["coeffs"] == "linear" and rows[0]["psnr"] > 5
    with pytest.raises(SystemExit, match="bogus"):
        rd.main(["--data", str(tmp_path), "--classes", "0", "--settings", '{"bogus": 1}'])


def _sweep(rd, bytes_, psnrs, pixels=64):
    """A hand-made sweep: rows are settings, columns images (8x8 images unless `pixels` says)."""
    n = len(bytes_[0])
    g = rd.Group("g", [np.zeros((1, pixels, 3), np.uint8)] * n, [f"{k}.png" for k in range(n)])
    zeros = np.zeros((len(bytes_), n))
    return rd.Sweep(g, list(range(len(bytes_))), np.array(bytes_), np.array(psnrs, float), zeros + 0.01, zeros + 0.002)


def test_classical_point_never_extrapolates(rd):
    """Inside the measured range: interpolated in log bpp, each image's PSNR with the same weights;
    outside: None."""
    sw = _sweep(rd, [[8, 8], [32, 32]], [[18.0, 22.0], [28.0, 32.0]])  # 1 and 4 bpp
    pt = rd.classical_point(sw, 2.0)
    assert pt["psnr"] == pytest.approx(25.0) and pt["psnrs"] == pytest.approx([23.0, 27.0])
    assert rd.classical_point(sw, 0.5) is None and rd.classical_point(sw, 5.0) is None


def test_allocated_point_fits_the_budget_and_beats_fixed_quality(rd):
    """The allocated point spends at most the target's bytes and, where images differ in how cheap a
    decibel is, gives a higher mean than one quality for all at the same rate."""
    # settings cost 8, 16, 24 bytes; image 0 gains 10 then 1 dB, image 1 gains 0.5 then 0.5 dB
    sw = _sweep(rd, [[8, 8], [16, 16], [24, 24]], [[20.0, 30.0], [30.0, 30.5], [31.0, 31.0]])
    pt = rd.allocated_point(sw, 2.0)  # 2 bpp of 2 x 64 pixels: 32 bytes, what setting 1 spends
    assert pt["bpp"] <= 2.0 and pt["qualities"] == [2, 0]
    assert pt["psnr"] == pytest.approx(30.5) and rd.classical_point(sw, 2.0)["psnr"] == pytest.approx(30.25)
    assert rd.allocated_point(sw, 0.5) is None


def test_webp_sweep_on_tiny_group(rd):
    """The WebP sweep of a group gives increasing bytes with quality, PSNRs in range and seconds."""
    g = rd.Group("g", _images(2, size=16), ["a.png", "b.png"])
    sw = rd.classical_sweep("webp", g)
    assert len(sw.bpp) == len(sw.psnr) >= 5 and sw.bpp[-1] > sw.bpp[0]
    assert all(5 < p < 99 for p in sw.psnr) and (sw.encode_s > 0).all() and (sw.decode_s > 0).all()


def test_summarise_counts_missing_groups(rd):
    """Rows average the groups with a value and say how many lacked one."""
    row = rd.summarise("webp", 1.0, [{"bpp": 1.0, "psnr": 24.0}, None, {"bpp": 1.0, "psnr": 26.0}], 3)
    assert row == {"method": "webp", "bpp_target": 1.0, "bpp": 1.0, "psnr": 25.0, "groups": 2, "missing_groups": 1,
                   "per_group_psnr": [24.0, None, 26.0]}
    assert json.loads(json.dumps(row)) == row
    assert rd.summarise("x", 2.0, [None], 1)["psnr"] is None


def test_summarise_spread_and_combine_equal_one_run(rd):
    """With each image's PSNR, a row gives the hardest image, the mean within-group std and seconds per
    image (mixinr's group encode split over its images); rows of two runs merged by `combine` equal the
    row of one run over both groups."""
    a = {"label": "a", "bpp": 1.0, "psnr": 25.0, "psnrs": [24.0, 26.0], "seconds": 10.0, "arch": "5x10",
         "decode_s": [0.1, 0.3]}
    b = {"label": "b", "bpp": 0.9, "psnr": 30.0, "psnrs": [27.0, 30.0, 33.0], "seconds": 30.0, "arch": "5x12",
         "decode_s": [0.2, 0.2, 0.2]}
    both = rd.summarise("mixinr-default", 1.0, [a, b], 2)
    assert both["min"] == 24.0 and both["std"] == pytest.approx((1.0 + 6**0.5) / 2, abs=0.01)
    assert both["encode_s_per_image"] == pytest.approx(8.0) and both["decode_s_per_image"] == pytest.approx(0.2)
    merged = rd.combine([rd.summarise("mixinr-default", 1.0, [a], 1), rd.summarise("mixinr-default", 1.0, [b], 1),
                         rd.summarise("webp", 1.0, [a], 1)])
    assert merged[0] == both and merged[1]["method"] == "webp"
    old = {k: v for k, v in rd.summarise("mixinr-default", 1.0, [a], 1).items() if k not in ("min", "std")}
    assert rd.combine([old])[0]["min"] == 24.0  # a row written before the spread existed gains it


def test_from_json_merges_and_prints(tmp_path, rd, capsys):
    """--from-json without --plot prints the merged rows as JSON lines."""
    a = {"label": "a", "bpp": 1.0, "psnr": 25.0, "psnrs": [24.0, 26.0], "encode_s": [0.1, 0.1]}
    b = dict(a, label="b", psnr=27.0, psnrs=[27.0, 27.0])
    for name, p in (("a", a), ("b", b)):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps(rd.summarise("webp-allocated", 1.0, [p], 1)) + "\n")
    assert rd.main(["--from-json", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["psnr"] == 26.0 and row["groups"] == 2 and row["min"] == 24.0


def test_plot_from_saved_rows(tmp_path, rd):
    """--from-json rows (the machine line skipped) become a PNG plot."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in [
        {"method": "webp", "bpp_target": 1, "bpp": 1.0, "psnr": 24.0, "groups": 1},
        {"method": "webp", "bpp_target": 2, "bpp": 2.0, "psnr": 29.0, "groups": 1},
        {"method": "mixinr-default", "bpp_target": 2, "bpp": 1.99, "psnr": None, "groups": 0},
        {"machine": {"cpu": "x"}}]))
    out = tmp_path / "rd.png"
    assert rd.main(["--from-json", str(rows), "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spread_picks_the_highest_webp_quality_under_budget():
    """benchmarks/spread.py: WebP's quality is the highest whose group bytes fit the budget (one more does
    not fit), and the per-image summary is ordered min <= mean <= max."""
    spread = _bench("spread")
    from mixinr import baselines

    images = _images(2, size=16)
    row = spread.webp_at(images, 4.0)
    assert row["bpp"] <= 4.0 and row["min"] <= row["mean"] <= row["max"]
    above = [baselines.round_trip(baselines.CODECS["webp"], im, row["quality"] + 1) for im in images]
    assert sum(c.n_bytes for c in above) * 8 / (2 * 16 * 16) > 4.0
    with pytest.raises(SystemExit, match="cannot reach"):
        spread.webp_at(images, 0.01)


def test_tiles_cover_the_photo_once():
    """benchmarks/tiles.py cuts a photo into tiles (edge tiles smaller) that put back give the photo."""
    tiles = _bench("tiles")
    im = np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    parts = tiles.cut(im, 16)
    assert [(r, c) for r, c, _ in parts][:4] == [(0, 0), (0, 16), (0, 32), (0, 48)]
    assert len(parts) == 3 * 4 and parts[-1][2].shape == (5, 2, 3)
    out = np.zeros_like(im)
    for r, c, t in parts:
        out[r : r + t.shape[0], c : c + t.shape[1]] += t
    assert np.array_equal(out, im)


def test_finetune_variants_of_a_saved_fit(tmp_path, capsys):
    """benchmarks/finetune.py: a saved fit gives the same fine-tuning results when loaded again, every
    variant's archive is within the budget, and no fine-tuning (qat epochs 0) leaves the rounded fit."""
    finetune = _bench("finetune")
    (tmp_path / "0").mkdir()
    for i, im in enumerate(_images(3, size=16)):
        Image.fromarray(im).save(tmp_path / "0" / f"{i:05d}.png")
    variants = json.dumps([{}, {"epochs": 0}, {"lr": 1e-3}])
    common = ["--data", str(tmp_path), "--class", "0", "--bpp", "8", "--variants", variants]
    assert finetune.main([*common, "--width", "4", "--epochs", "20", "--save", str(tmp_path / "fit.pkl")]) == 0
    first = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert finetune.main([*common, "--load", str(tmp_path / "fit.pkl")]) == 0
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(first) == drop(again) and len(first) == 3
    assert all(r["bytes"] <= 8 * 3 * 16 * 16 // 8 for r in first)
    assert first[1]["after"] == first[1]["before"]


def test_grid_fit_runs_one_fit_per_seed_and_a_mean_row(tmp_path, capsys):
    """benchmarks/grid_fit.py --seeds: one row per seed (that seed in its config), seeds giving different
    fits, then a row whose PSNR and bpp are the means of theirs and whose min / max bound them."""
    grid_fit = _bench("grid_fit")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    assert grid_fit.main([str(tmp_path / "a.png"), "--steps", "12", "--target", "2", "--seeds", "0", "3",
                          "--settings", '{"levels": 3, "widths": [4]}']) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r.get("seed") for r in rows[:2]] == [0, 3] and "seed=3" in rows[1]["config"]
    assert rows[0]["psnr"] != rows[1]["psnr"]
    assert rows[2]["psnr"] == pytest.approx((rows[0]["psnr"] + rows[1]["psnr"]) / 2)
    assert rows[2]["bpp"] == pytest.approx((rows[0]["bpp"] + rows[1]["bpp"]) / 2)
    assert rows[2]["psnr_min"] <= rows[2]["psnr"] <= rows[2]["psnr_max"]
    # regression: the settings' own seed is used when --seeds is absent, and refused beside it
    assert grid_fit.main([str(tmp_path / "a.png"), "--steps", "12", "--target", "2",
                          "--settings", '{"levels": 3, "widths": [4], "seed": 3}']) == 0
    assert json.loads(capsys.readouterr().out)["psnr"] == rows[1]["psnr"]
    with pytest.raises(SystemExit):
        grid_fit.main([str(tmp_path / "a.png"), "--seeds", "1", "--settings", '{"seed": 3}'])


def test_grid_start_script_writes_a_start_a_fit_of_that_shape_takes(tmp_path):
    """benchmarks/grid_start.py writes a start whose shapes a model of the fitted settings takes."""
    from mixinr.grid import start
    from mixinr.grid.fit import GridModel
    from mixinr.settings import GridConfig

    mod = _bench("grid_start")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "s.npz"
    settings = '{"levels": 3, "widths": [4], "steps": 8, "context": 4}'
    assert mod.main([str(tmp_path / "a.png"), "--target", "2", "--settings", settings, "-o", str(out)]) == 0
    cfg = GridConfig(levels=3, widths=(4,), context=4)
    model = GridModel([(16, 24)], cfg)
    assert start.apply(model.synthesis, model.context, 0, start.load(out))
    assert np.array_equal(model.context.w1.detach().numpy(), start.load(out)[4])


def test_grid_start_generations_each_fit_from_the_last_ones_start(tmp_path):
    """--generations 2 saves the start of a fit that began at --generations 1's start (not at random), and
    --begin continues a chain from a start file: generation 1 then --begin it gives generation 2."""
    from dataclasses import replace

    from mixinr.grid import start
    from mixinr.grid.fit import fit
    from mixinr.settings import GridConfig

    mod = _bench("grid_start")
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    settings = '{"levels": 3, "widths": [4], "steps": 8, "context": 4}'
    for g in (1, 2):
        assert mod.main([str(tmp_path / "a.png"), "--target", "2", "--settings", settings, "--generations", str(g),
                         "-o", str(tmp_path / f"g{g}.npz")]) == 0
    cfg = GridConfig(levels=3, widths=(4,), steps=8, context=4, start=True)
    again = start.of_fit(fit([image], cfg, 2.0, progress=False, begin=start.load(tmp_path / "g1.npz")))
    second, first = start.load(tmp_path / "g2.npz"), start.load(tmp_path / "g1.npz")
    assert all(np.array_equal(a, b) for a, b in zip(again, second))
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))
    assert mod.main([str(tmp_path / "a.png"), "--target", "2", "--settings", settings, "--begin",
                     str(tmp_path / "g1.npz"), "-o", str(tmp_path / "b.npz")]) == 0
    assert all(np.array_equal(a, b) for a, b in zip(start.load(tmp_path / "b.npz"), second))
