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


def test_classical_point_never_extrapolates(rd):
    """Inside the measured range: interpolated in log bpp; outside: None."""
    curve = ([1.0, 4.0], [20.0, 30.0])
    assert rd.classical_point(curve, 2.0)["psnr"] == pytest.approx(25.0)
    assert rd.classical_point(curve, 0.5) is None and rd.classical_point(curve, 5.0) is None


def test_webp_curve_on_tiny_group(rd):
    """The WebP sweep of a group gives increasing bytes with quality and PSNRs in range."""
    g = rd.Group("g", _images(2, size=16), ["a.png", "b.png"])
    bpps, psnrs = rd.classical_curve("webp", g)
    assert len(bpps) == len(psnrs) >= 5 and bpps[-1] > bpps[0]
    assert all(5 < p < 99 for p in psnrs)


def test_summarise_counts_missing_groups(rd):
    """Rows average the groups with a value and say how many lacked one."""
    row = rd.summarise("webp", 1.0, [{"bpp": 1.0, "psnr": 24.0}, None, {"bpp": 1.0, "psnr": 26.0}], 3)
    assert row == {"method": "webp", "bpp_target": 1.0, "bpp": 1.0, "psnr": 25.0, "groups": 2, "missing_groups": 1,
                   "per_group_psnr": [24.0, None, 26.0]}
    assert json.loads(json.dumps(row)) == row
    assert rd.summarise("x", 2.0, [None], 1)["psnr"] is None


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
