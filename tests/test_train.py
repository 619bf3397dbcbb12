"""Fitting: reaches a PSNR, reproducible, best weights kept, any-resolution decode, mixed sizes."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from mixinr.metrics import psnr
from mixinr.model import Arch, render, to_uint8
from mixinr.train import FitConfig, Fitter, fit

from conftest import smooth_image

QUICK = FitConfig(epochs=300, t0=300, lr=1e-3, progress=False)


def _psnrs(result, images):
    m = result.model
    return [psnr(to_uint8(render(m.image_layers(i), m.arch, *im.shape[:2])).numpy(), im)
            for i, im in enumerate(images)]


def test_fit_two_images_reaches_psnr(images):
    """Two 16x16 smooth images with a 3x24 network, 300 epochs: both above 25 dB."""
    result = fit(images[:2], Arch(3, 24), QUICK)
    assert min(_psnrs(result, images[:2])) > 25.0
    assert len(result.losses) == 300
    assert result.best_loss == min(result.losses)


def test_fit_is_reproducible(images):
    """Same seed -> identical weights and loss history on the CPU; another seed differs."""
    cfg = FitConfig(epochs=20, t0=10, progress=False, seed=3)
    a, b = fit(images, Arch(2, 8), cfg), fit(images, Arch(2, 8), cfg)
    assert a.losses == b.losses
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    c = fit(images, Arch(2, 8), FitConfig(epochs=20, t0=10, progress=False, seed=4))
    assert c.losses != a.losses


def test_best_weights_are_the_lowest_loss_ones(images):
    """The returned weights reproduce the best recorded loss (the loss before that epoch's step)."""
    result = fit(images[:2], Arch(2, 8), FitConfig(epochs=40, t0=5, lr=5e-3, progress=False))
    m = result.model
    with torch.no_grad():
        out = torch.stack([render(m.image_layers(i), m.arch, 16, 16).reshape(-1, 3) for i in range(2)])
    target = torch.stack([torch.from_numpy(im.reshape(-1, 3).astype(np.float32)) / 127.5 - 1 for im in images[:2]])
    assert ((out - target) ** 2).mean().item() == pytest.approx(result.best_loss, rel=1e-4)


def test_chunked_full_batch_equals_single_chunk(images):
    """Pixel chunks accumulate into the same full-batch gradient: same losses as one chunk."""
    one = fit(images, Arch(2, 8), FitConfig(epochs=5, progress=False))
    many = fit(images, Arch(2, 8), FitConfig(epochs=5, progress=False, chunk_elems=4 * 8 * 256))
    assert np.allclose(one.losses, many.losses, rtol=1e-5)


def test_pixel_sampling_and_learned_coeffs_train(images):
    """Random pixel subsets per step and learned coefficients both lower the loss."""
    result = fit(images, Arch(3, 16, sets=3), FitConfig(epochs=150, t0=150, lr=1e-3, coeffs="learned",
                                                        pixels_per_step=64, progress=False))
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert result.model.coeffs.requires_grad


def test_mixed_sizes_each_on_its_own_grid():
    """Images of different sizes fit together; padding never counts (each decodes at its own size)."""
    ims = [smooth_image(12, 16, 0), smooth_image(16, 10, 1)]
    result = fit(ims, Arch(3, 24), QUICK)
    assert min(_psnrs(result, ims)) > 24.0


def test_decode_at_twice_resolution_agrees_on_shared_coordinates(images):
    """A 2x decode has the right shape; grid points shared with the training grid agree."""
    result = fit(images[:2], Arch(3, 16), FitConfig(epochs=30, progress=False))
    m = result.model
    small = render(m.image_layers(1), m.arch, 16, 16)
    big = render(m.image_layers(1), m.arch, 31, 31)  # linspace(-1,1,31)[::2] == linspace(-1,1,16)
    assert big.shape == (31, 31, 3)
    assert torch.allclose(big[::2, ::2], small, atol=1e-5)
    assert render(m.image_layers(1), m.arch, 32, 32).shape == (32, 32, 3)


def _sse_loss(model, images):
    """MSE ([-1, 1] scale) of `model` over `images` (all 16x16)."""
    with torch.no_grad():
        out = torch.stack([render(model.image_layers(i), model.arch, 16, 16).reshape(-1, 3)
                           for i in range(len(images))])
    target = torch.stack([torch.from_numpy(im.reshape(-1, 3).astype(np.float32)) / 127.5 - 1 for im in images])
    return ((out - target) ** 2).mean().item()


def test_fit_continues_from_init_without_touching_it(images):
    """fit(init=m) starts from m's weights (its first loss is m's loss, not a fresh network's), leaves m
    itself unchanged, and keeps improving; a model of the wrong shape is refused."""
    first = fit(images[:2], Arch(2, 8), FitConfig(epochs=60, t0=60, lr=5e-3, progress=False))
    before = [p.detach().clone() for p in first.model.parameters()]
    more = fit(images[:2], Arch(2, 8), FitConfig(epochs=30, t0=30, lr=1e-3, progress=False), init=first.model)
    assert more.losses[0] == pytest.approx(first.best_loss, rel=1e-5)
    assert more.best_loss <= first.best_loss
    assert more.model is not first.model
    for p, b in zip(first.model.parameters(), before):
        assert torch.equal(p, b)
    fresh = fit(images[:2], Arch(2, 8), FitConfig(epochs=1, progress=False))
    assert fresh.losses[0] > 2 * first.best_loss
    with pytest.raises(ValueError):
        fit(images[:3], Arch(2, 8), FitConfig(epochs=1, progress=False), init=first.model)
    with pytest.raises(ValueError):
        fit(images[:2], Arch(2, 9), FitConfig(epochs=1, progress=False), init=first.model)


def test_frozen_elements_hold_their_values_while_the_rest_train(images):
    """With `frozen`, the masked elements of every coded tensor start at the given values and keep them
    through training, the free ones move and bring the loss down; masks must cover every coded tensor."""
    imgs = images[:2]
    first = fit(imgs, Arch(2, 8, sets=2), FitConfig(epochs=80, t0=80, lr=5e-3, coeffs="learned", progress=False))
    m = first.model
    coded = m.coded_params()
    assert len(coded) == 2 * 3 + 1  # W, b of three layers, then the learned coefficients
    gen = torch.Generator().manual_seed(0)
    frozen = [(torch.rand(p.shape, generator=gen) < 0.5, torch.round(p.detach() * 8) / 8) for p in coded]
    cfg = FitConfig(epochs=40, t0=40, lr=1e-3, coeffs="learned", progress=False)
    tuned = fit(imgs, m.arch, cfg, init=m, frozen=frozen)
    start = copy.deepcopy(m)
    with torch.no_grad():
        for p, (mask, values) in zip(start.coded_params(), frozen):
            p.copy_(torch.where(mask, values, p))
    assert tuned.losses[0] == pytest.approx(_sse_loss(start, imgs), rel=1e-4)  # held from the first step
    assert tuned.losses[-1] < tuned.losses[0]
    for before, after, (mask, values) in zip(coded, tuned.model.coded_params(), frozen):
        assert torch.equal(after.detach()[mask], values[mask])
        assert not torch.equal(after.detach()[~mask], before.detach()[~mask])
    with pytest.raises(ValueError, match="frozen"):
        fit(imgs, m.arch, cfg, init=m, frozen=frozen[:-1])


def test_psnr_objective_raises_the_mean_psnr_of_a_mixed_group():
    """One smooth and one noisy image in a small network: the mean-PSNR objective spends capacity on the
    smooth image, where dB come cheap, and beats the pixel-MSE objective on mean PSNR; the kept weights'
    score is the geometric mean of the images' MSE and their loss the plain MSE."""
    rng = np.random.default_rng(0)
    group = [smooth_image(16, 16, 1), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)]
    runs = {obj: fit(group, Arch(2, 8, sets=2), FitConfig(epochs=300, t0=300, lr=3e-3, coeffs="learned",
                                                          objective=obj, progress=False))
            for obj in ("mse", "psnr")}
    means = {obj: float(np.mean(_psnrs(r, group))) for obj, r in runs.items()}
    assert means["psnr"] > means["mse"] + 0.25  # measured: +0.55 (21.6 -> 22.6 dB on the smooth image)
    r = runs["psnr"]
    mses = np.array(r.best_mses)
    assert float(np.exp(np.log(mses).mean())) == pytest.approx(r.best_score, rel=1e-5)
    assert float(mses.mean()) == pytest.approx(r.best_loss, rel=1e-5)
    assert float(mses.mean()) == pytest.approx(_sse_loss(r.model, group), rel=1e-4)
    with pytest.raises(ValueError, match="objective"):
        fit(group, Arch(2, 8), FitConfig(epochs=1, objective="l1", progress=False))


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_schedule_follows_torchs_warm_restarts(images):
    """The per-group schedule gives the lr torch's CosineAnnealingWarmRestarts gives, restarts included."""
    cfg = FitConfig(epochs=1, t0=4, t_mult=2, lr=1e-3, eta_min=1e-5, progress=False)
    ours = Fitter(images[:1], Arch(2, 4), cfg)
    ref_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(ref_opt, T_0=4, T_mult=2, eta_min=1e-5)
    for _ in range(20):
        assert ours.opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9)
        ours.sched.step()
        ref.step()


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_coefficients_train_at_their_own_lr(images):
    """Learned coefficients get lr x coeff_lr all along the schedule; weights keep lr; coeff_lr 1 is
    one group (the behaviour before the option)."""
    cfg = FitConfig(epochs=10, t0=10, lr=1e-3, eta_min=1e-5, coeffs="per-layer", coeff_lr=30.0, progress=False)
    f = Fitter(images, Arch(2, 4, sets=2), cfg)
    weights, coeffs = f.opt.param_groups
    assert len(coeffs["params"]) == 1 and coeffs["params"][0] is f.model.coeffs
    assert len(weights["params"]) == len(f.params) - 1
    for _ in range(5):
        f.sched.step()
    assert coeffs["lr"] == pytest.approx(30.0 * weights["lr"]) and weights["lr"] < 1e-3
    assert len(Fitter(images, Arch(2, 4, sets=2), FitConfig(coeffs="per-layer", progress=False)).opt.param_groups) == 1


def test_lbfgs_polish_lowers_the_loss_and_keeps_the_best(images):
    """L-BFGS after Adam (lbfgs_steps) ends below Adam alone on the same schedule; the returned weights
    reproduce the kept loss; pixel sampling, which has no fixed function to search along, is refused."""
    cfg = FitConfig(epochs=60, t0=60, lr=5e-3, eta_min=5e-5, coeffs="per-layer", coeff_lr=10.0, progress=False)
    adam = fit(images[:2], Arch(2, 8, sets=2), cfg)
    polished = fit(images[:2], Arch(2, 8, sets=2), dataclasses.replace(cfg, lbfgs_steps=60))
    assert polished.losses == adam.losses  # the same Adam run first
    assert polished.best_loss < 0.8 * adam.best_loss
    assert _sse_loss(polished.model, images[:2]) == pytest.approx(polished.best_loss, rel=1e-4)
    with pytest.raises(ValueError, match="full batch"):
        fit(images[:2], Arch(2, 8), FitConfig(epochs=1, lbfgs_steps=5, pixels_per_step=16, progress=False))


def test_lbfgs_polish_never_moves_frozen_elements(images):
    """With `frozen` masks L-BFGS moves only the free elements (their gradient is masked, so every search
    direction is zero on the frozen ones) and still brings the loss down."""
    imgs = images[:2]
    first = fit(imgs, Arch(2, 8, sets=2), FitConfig(epochs=80, t0=80, lr=5e-3, coeffs="learned", progress=False))
    coded = first.model.coded_params()
    gen = torch.Generator().manual_seed(1)
    frozen = [(torch.rand(p.shape, generator=gen) < 0.5, torch.round(p.detach() * 8) / 8) for p in coded]
    cfg = FitConfig(epochs=1, t0=1, lr=1e-9, coeffs="learned", lbfgs_steps=40, progress=False)
    tuned = fit(imgs, first.model.arch, cfg, init=first.model, frozen=frozen)
    assert tuned.best_loss < 0.9 * tuned.losses[0]
    for after, (mask, values) in zip(tuned.model.coded_params(), frozen):
        assert torch.equal(after.detach()[mask], values[mask])
