"""The grid's learned start (mixinr/grid/start.py): the shipped file fits the default shape, a fit begins
there (every set within the jitter, the sets apart), other shapes keep their random start, and the
script that makes the file writes what a fit of that shape can start from."""

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mixinr.grid import start
from mixinr.grid.fit import GridModel
from mixinr.settings import GridConfig

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_start_fits_the_default_shape_and_every_set_begins_there():
    model = GridModel([(16, 24), (20, 20)], GridConfig(start=True))
    tensors = start.load()
    assert [t.shape for t in tensors] == start.shapes(model.synthesis, model.context)
    syn = model.synthesis
    for j, (w, b) in enumerate(zip(syn.weights, syn.biases)):
        ref = torch.from_numpy(tensors[2 * j])
        amp = start.JITTER * float(ref.abs().mean())
        assert float((w - ref).abs().max()) < 6 * amp  # within the jitter
        assert float((w[0] - w[1]).abs().max()) > 0  # the sets apart
        assert float((b - torch.from_numpy(tensors[2 * j + 1])).abs().max()) < 6 * amp
    for p, t in zip(model.context.coded_params(), tensors[2 * len(syn.weights):]):
        assert torch.equal(p.detach(), torch.from_numpy(t))


def test_other_shapes_and_the_default_keep_the_random_start():
    cfg = GridConfig(widths=(8,), start=True)
    a, b = GridModel([(16, 16)], cfg), GridModel([(16, 16)], replace(cfg, start=False))
    assert all(torch.equal(x, y) for x, y in zip(a.synthesis.parameters(), b.synthesis.parameters()))
    c, d = GridModel([(16, 16)], GridConfig(start=True)), GridModel([(16, 16)], GridConfig())
    assert not torch.equal(c.synthesis.weights[0], d.synthesis.weights[0])


def test_grid_start_script_writes_a_start_a_fit_of_that_shape_takes(tmp_path):
    spec = importlib.util.spec_from_file_location("grid_start_bench", ROOT / "benchmarks" / "grid_start.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "s.npz"
    settings = '{"levels": 3, "widths": [4], "steps": 8, "context": 4}'
    assert mod.main([str(tmp_path / "a.png"), "--target", "2", "--settings", settings, "-o", str(out)]) == 0
    cfg = GridConfig(levels=3, widths=(4,), context=4)
    model = GridModel([(16, 24)], replace(cfg, start=False))
    assert start.apply(model.synthesis, model.context, 0, start.load(out))
    assert torch.equal(model.context.w1.detach(), torch.from_numpy(start.load(out)[4]))
