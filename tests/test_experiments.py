"""Experiment sweeps on tiny data: rows and files as specified, best-of-nets by half PSNR, real
archive sizes, resuming after an interruption, quick-profile marking, the seed's defaults, the CLI."""

import json

import numpy as np
import pytest

from mixinr import experiments as E
from mixinr.cli import main
from mixinr.codec import Archive
from mixinr.images import read_image, write_png
from mixinr.metrics import psnr

from conftest import smooth_image

NETS = [(2, 6), (3, 4)]


@pytest.fixture
def cifar_tree(tmp_path):
    """Class folders 0 and 1, four 8x8 images each (the seed's PNG layout)."""
    root = tmp_path / "cifar"
    for c in range(2):
        for i in range(4):
            write_png(root / str(c) / f"{i:05d}.png", smooth_image(8, 8, 10 * c + i))
    return root


def _tiny(**kw):
    cfg = E.ExperimentConfig("cifar10", sweeps=[E.Sweep("tiny", NETS, [2, 3], best_of=True)],
                             epochs=6, t0=3, lr=1e-3, classes=[0, 1], progress=False, profile="test",
                             threads=1)
    return E.replace(cfg, **kw) if kw else cfg


def test_rows_files_and_best_of_nets(cifar_tree, tmp_path):
    """One row per (class, N) with the specified fields; bytes is the archive's real size; the kept
    net is the best by half PSNR; reconstructions match the decoded archive."""
    out = tmp_path / "out"
    report = E.run_experiment(_tiny(), cifar_tree, out)
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 4 and rows == report.rows
    for key in ("dataset", "group", "n_images", "depth", "width", "sets", "epochs", "psnr_float",
                "psnr_half", "bytes", "bpp", "bpp_per_sample", "seconds", "device", "profile"):
        assert all(key in r for r in rows), key
    for r in rows:
        assert r["profile"] == "test" and r["epochs"] == 6
        archive = (out / "runs" / r["run"] / "model.mixinr").read_bytes()
        assert r["bytes"] == len(archive)
        assert r["bpp"] == pytest.approx(len(archive) * 8 / (r["n_images"] * 64))
        assert r["bpp_per_sample"] == pytest.approx(r["bpp"] / 3)
        assert r["psnr_half"] == max(c["psnr_half"] for c in r["candidates"])
        assert len(r["candidates"]) == 2
        decoded = Archive.from_bytes(archive)
        half = [psnr(decoded.decode(i), read_image(cifar_tree / r["group"][6] / name))
                for i, name in enumerate(r["images"])]
        assert r["psnr_half"] == pytest.approx(np.mean(half))
        for c in r["candidates"]:
            folder = out / "test_images" / c["run"]
            assert sorted(p.name for p in folder.iterdir()) == sorted(
                f"image_{i}{s}.png" for i in range(r["n_images"]) for s in ("", "_half"))
            assert len(json.loads((out / "runs" / c["run"] / "losses.json").read_text())["losses"]) == 6
    assert rows[0]["run"].startswith("cifar10_0_2_6_")
    assert (out / "table_cifar10_tiny.txt").read_text().count("test") >= 1


def test_resume_after_interruption(cifar_tree, tmp_path, monkeypatch):
    """An interrupted sweep keeps its finished groups; the rerun fits only the rest, and a third run
    fits nothing. Other settings (more epochs) do not reuse the rows."""
    out = tmp_path / "out"
    real = E._run_unit
    calls = []

    def flaky(cfg, unit, out_dir):
        calls.append(unit.group.key)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(cfg, unit, out_dir)

    monkeypatch.setattr(E, "_run_unit", flaky)
    with pytest.raises(KeyboardInterrupt):
        E.run_experiment(_tiny(), cifar_tree, out)
    assert len(json.loads((out / "results.json").read_text())) == 2
    calls.clear()
    monkeypatch.setattr(E, "_run_unit", lambda cfg, unit, o: calls.append(unit.group.key) or real(cfg, unit, o))
    report = E.run_experiment(_tiny(), cifar_tree, out)
    assert report.resumed == 2 and len(calls) == 2 and len(report.rows) == 4
    calls.clear()
    assert E.run_experiment(_tiny(), cifar_tree, out).resumed == 4 and calls == []
    E.run_experiment(_tiny(epochs=7, sweeps=[E.Sweep("tiny", NETS[:1], [2], True)]), cifar_tree, out)
    assert len(calls) == 2
    assert len(json.loads((out / "results.json").read_text())) == 6


def test_groups_larger_than_the_class_are_skipped(cifar_tree, tmp_path):
    """N above the images available is reported as skipped, not fitted with fewer images."""
    cfg = _tiny(sweeps=[E.Sweep("tiny", NETS[:1], [4, 5], True)], epochs=2)
    report = E.run_experiment(cfg, cifar_tree, tmp_path / "o")
    assert [r["n_images"] for r in report.rows] == [4, 4]
    assert report.skipped == ["class 0, N=5: only 4 images", "class 1, N=5: only 4 images"]
    with pytest.raises(E.MixinrError, match="no cifar10 group can be formed"):
        E.run_experiment(_tiny(sweeps=[E.Sweep("tiny", NETS, [5], True)]), cifar_tree, tmp_path / "o")


def test_kodak_sweeps_share_the_common_group(tmp_path):
    """Kodak's width sweep and group-size sweep both contain 8x112-like N=6 groups; each is fitted
    once and listed in both tables. Portrait images are trained rotated."""
    for i in (12, 3, 15, 6):  # all in SORTED_FREQ groups of N=6 (g=0) and N=12 (g=0, g=1)
        img = smooth_image(6, 4, i) if i == 3 else smooth_image(4, 6, i)
        write_png(tmp_path / "kodak" / f"kodim{i:02d}.png", img)
    cfg = E.paper_config("kodak", epochs=2, t0=2, kodak_size=(4, 6), max_groups=1, progress=False,
                         sweeps=[E.Sweep("width", [(2, 8), (2, 4)], [6]), E.Sweep("groupsize", [(2, 8)], [6, 12])])
    with pytest.warns(UserWarning) as record:
        report = E.run_experiment(cfg, tmp_path / "kodak", tmp_path / "out")
    assert any("group 0 of N=6: missing" in str(w.message) for w in record)
    assert len(report.rows) == 3 and report.resumed == 0
    assert [s["groups"] for s in report.summaries["groupsize"]] == [1, 1]
    assert report.rows[0]["run"] == "mixture_model_6_2_2_8_kodak_11_2_14_5_sine"
    assert report.rows[2]["run"] == "mixture_model_12_2_2_8_kodak_11_2_14_5_sine"
    assert report.rows[0]["image_size"] == [4, 6]


def test_quick_profile_is_marked(cifar_tree, tmp_path):
    """Quick rows, run names and table titles say they are not the paper's setting."""
    cfg = E.quick_config("cifar10", epochs=2, t0=2, progress=False, classes=[0, 1], sweeps=[E.Sweep("q", NETS[:1], [2], True)])
    report = E.run_experiment(cfg, cifar_tree, tmp_path / "o")
    assert all(r["profile"] == "quick (not the paper's setting)" for r in report.rows)
    assert all(r["run"].endswith("_quick") for r in report.rows)
    assert "not the paper's setting" in (tmp_path / "o" / "table_cifar10_q.txt").read_text()


def test_paper_defaults_are_the_seeds():
    """The seed's epochs, T_0, learning rate, nets and group sizes (METHOD.md)."""
    c = E.paper_config("cifar10")
    assert (c.epochs, c.t0, c.lr, c.eta_min, c.sets) == (10000, 1000, 2e-4, 5e-6, 2)
    assert c.sweeps[0].nets == [(3, 22), (4, 18), (5, 16), (6, 14)] and c.sweeps[0].best_of
    assert c.sweeps[0].n_values == [2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64, 96, 128]
    k = E.paper_config("kodak")
    assert (k.epochs, k.t0, k.kodak_size) == (5000, 500, (512, 768))
    assert [s.nets for s in k.sweeps] == [[(8, w) for w in (158, 136, 112, 96, 78, 56)], [(8, 112)]]
    assert [s.n_values for s in k.sweeps] == [[6], [2, 3, 4, 6, 12]]
    i = E.paper_config("imagenet")
    assert (i.epochs, i.t0, i.sweeps[0].nets, i.imagenet_size) == (5000, 500, [(7, 49)], 256)
    assert i.imagenet_class_slice == (20, 100)
    assert all(p.profile == E.PAPER for p in (c, k, i))


def test_cli_json_and_filters(cifar_tree, tmp_path, monkeypatch, capsys):
    """`mixinr reproduce cifar10 --quick --json` with --classes/--n/--net filters; bad --net exits 2."""
    real = E.quick_config
    monkeypatch.setattr(E, "quick_config", lambda ds, **kw: real(ds, epochs=2, t0=2, progress=False, **kw))
    out = tmp_path / "o"
    rc = main(["reproduce", "cifar10", "--data", str(cifar_tree), "--out", str(out), "--quick",
               "--classes", "1", "--n", "4,16", "--net", "3x22", "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert rc == 0 and payload["profile"] == E.QUICK
    assert [(r["group"], r["depth"], r["width"]) for r in payload["rows"]] == [("class=1/N=4", 3, 22)]
    assert payload["skipped"] == ["class 1, N=16: only 4 images"]
    assert main(["reproduce", "cifar10", "--data", str(cifar_tree), "--net", "5by16"]) == 2
    assert "--net '5by16'" in capsys.readouterr().err


def test_imagenet_sweep_on_class_folders(tmp_path):
    """ImageNet: classes from the slice, first N files of each, images resized to the training size,
    run names imagenet_{class}_{N}_{epochs}_{L}_{W}."""
    for c in range(3):
        for i in range(3):
            write_png(tmp_path / "inet" / f"n{c:02d}" / f"{i}.png", smooth_image(12, 10, c * 3 + i))
    cfg = E.paper_config("imagenet", epochs=2, t0=2, imagenet_size=8, imagenet_class_slice=(1, 3),
                         progress=False, sweeps=[E.Sweep("groupsize", [(2, 4)], [2, 3])], max_groups=1)
    report = E.run_experiment(cfg, tmp_path / "inet", tmp_path / "out")
    assert [r["group"] for r in report.rows] == ["class=n01/N=2", "class=n01/N=3"]
    assert report.rows[1]["run"] == "imagenet_n01_3_2_2_4" and report.rows[1]["image_size"] == [8, 8]
    assert report.rows[1]["bpp"] == pytest.approx(report.rows[1]["bytes"] * 8 / (3 * 64))
