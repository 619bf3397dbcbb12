"""The end of quantisation-aware fine-tuning (mixinr.quantise): the group loss it judges by, the greedy
rounding of the last free elements, and the codec's aim under the budget (a fine-tuned archive a few
bytes over its budget used to be rounded again)."""

import copy

import pytest
import torch
from conftest import smooth_image

from mixinr import codec, quantise
from mixinr.codec import EncodeConfig
from mixinr.siren.encoder import SirenCandidate
from mixinr.model import Arch, from_uint8, render
from mixinr.train import FitConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fitted():
    images = [smooth_image(12, 12, s) for s in range(3)]
    res = fit(images, Arch(3, 10), FitConfig(epochs=150, t0=150, lr=1e-3, coeffs="learned", progress=False))
    names = ["a.png", "b.png", "c.png"]
    cand = SirenCandidate(res.model, res.best_loss, images, names, [im.shape[:2] for im in images], EncodeConfig())
    return cand, cand.stored_steps(cand.alpha_for_loss(3.0))


def _every_value_on_grid(model, steps):
    return all(torch.equal(p / step, torch.round(p / step)) for p, step in zip(model.coded_params(), steps))


def test_group_loss_is_the_weighted_mean_of_the_images_mse():
    """Mixed sizes (padded internally): the loss is mean_i w_i MSE_i, each image rendered on its own grid."""
    images = [smooth_image(10, 14, 0), smooth_image(7, 9, 1)]
    model = fit(images, Arch(2, 8), FitConfig(epochs=5, t0=5, progress=False)).model
    mses = [float((render(model.image_layers(i), model.arch, *im.shape[:2]) - from_uint8(im)).square().mean())
            for i, im in enumerate(images)]
    w = [0.5, 2.0]
    assert quantise.GroupLoss(images, w)(model) == pytest.approx((w[0] * mses[0] + w[1] * mses[1]) / 2, rel=1e-5)


def test_greedy_rounding_only_lowers_the_loss_and_stays_on_the_grid(fitted):
    """From nearest rounding, each element it is given may move one step to its other neighbour, only where
    the loss falls: the result is on the grid, no worse than nearest, elements outside the mask untouched."""
    cand, steps = fitted
    model = cand.model
    floats = [p.detach().clone() for p in model.coded_params()]
    nearest = quantise.round_to_grid(copy.deepcopy(model), steps)
    greedy = copy.deepcopy(nearest)
    free = [torch.rand(p.shape, generator=torch.Generator().manual_seed(i)) < 0.5
            for i, p in enumerate(floats)]
    loss = quantise.GroupLoss(cand.images)
    elements = [(t, i) for t, i in quantise.ambiguous(floats, steps) if free[t].view(-1)[i]]
    quantise.greedy(greedy, floats, steps, elements, loss)
    assert _every_value_on_grid(greedy, steps) and loss(greedy) <= loss(nearest)
    moved = 0
    for g, n, m, step in zip(greedy.coded_params(), nearest.coded_params(), free, steps):
        diff = ((g - n) / step).round().detach()
        assert torch.all(diff[~m] == 0) and torch.all(diff.abs() <= 1)
        moved += int(diff.abs().sum())
    assert moved > 0, "a coarse grid leaves some element better on its other side"


def test_the_most_ambiguous_elements_come_first_up_to_the_cap(monkeypatch):
    """Elements nearest half a step from their grid first, those already on it (frozen) last; at most
    MAX_GREEDY of them."""
    floats = [torch.tensor([0.0, 0.45, 0.2]), torch.tensor([1.02, -0.5, 3.0])]
    assert quantise.ambiguous(floats, [1.0, 1.0]) == [(1, 1), (0, 1), (0, 2), (1, 0), (0, 0), (1, 2)]
    monkeypatch.setattr(quantise, "MAX_GREEDY", 2)
    assert quantise.ambiguous(floats, [1.0, 1.0]) == [(1, 1), (0, 1)]


def test_fine_tuning_aims_one_word_under_the_budget(monkeypatch):
    """Regression: fine-tuning at the steps that fill the budget to the byte came out a few bytes over
    (retraining moves weights) in half the CIFAR encodes, and was then rounded again at coarser steps,
    losing most of its gain (31.57 -> 31.02 dB on one group). Fine-tuning now aims QatConfig.margin_bytes under
    the budget, and every trial records whether it still had to be rounded again."""
    images = [smooth_image(12, 12, s) for s in range(3)]
    names = ["a.png", "b.png", "c.png"]
    budget = int(4.0 * 3 * 144 / 8)
    aims, real = [], SirenCandidate.fine_tuned

    def spy(cand, alpha, epochs):
        aims.append(len(cand.pack(alpha)))
        return real(cand, alpha, epochs)

    monkeypatch.setattr(SirenCandidate, "fine_tuned", spy)
    res = codec.encode(images, names, EncodeConfig(bpp=4.0, epochs=60, qat_epochs=30, progress=False))
    assert aims and all(n <= budget - codec.QatConfig().margin_bytes for n in aims)
    qat = [t for t in res.trials if "qat_epochs" in t]
    assert len(qat) == len(aims) and all(isinstance(t["requantised"], bool) and t["bytes"] <= budget for t in qat)
