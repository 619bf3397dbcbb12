"""The grid's learned start (mixinr/grid/start.py): the shipped file fits the default shape, a fit begins
there by default (every set within the jitter, the sets apart), other shapes keep their random start
(benchmarks/grid_start.py, which makes the file: tests/test_rd_benchmark.py)."""

from dataclasses import replace

import torch

from mixinr.grid import start
from mixinr.grid.fit import GridModel
from mixinr.settings import GridConfig


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


def test_the_default_begins_at_the_start_other_shapes_and_start_off_at_random():
    cfg = GridConfig(widths=(8,), start=True)
    a, b = GridModel([(16, 16)], cfg), GridModel([(16, 16)], replace(cfg, start=False))
    assert all(torch.equal(x, y) for x, y in zip(a.synthesis.parameters(), b.synthesis.parameters()))
    c, d = GridModel([(16, 16)], GridConfig()), GridModel([(16, 16)], GridConfig(start=False))
    assert not torch.equal(c.synthesis.weights[0], d.synthesis.weights[0])
    shipped = start.load()[2 * len(c.synthesis.weights):]
    assert all(torch.equal(p.detach(), torch.from_numpy(t)) for p, t in zip(c.context.coded_params(), shipped))
