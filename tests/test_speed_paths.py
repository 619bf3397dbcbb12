"""The fast paths of fitting compute the same maths as the plain one.

- weights mixed once per step (chunks on detached copies, gradients pushed through the mixing at the
  end) give the gradients of the plain autograd loss, for linear and learned coefficients, mixed sizes;
- the torch.compile'd step gives the eager step's losses (one small compile, the only one in the suite);
- a compiler failure falls back to eager with a warning and the same result;
- the automatic choices (compile only long fits, threads) and the thread count is restored after a fit.
"""

import numpy as np
import pytest
import torch

import mixinr.train as train
from mixinr.model import Arch, MixtureSiren, forward_mixed, grid
from mixinr.train import FitConfig, Fitter, fit

from conftest import smooth_image


def _plain_grads(model, images):
    """Gradients of the mean squared error computed the direct way: model(coords) per image, one backward."""
    model.zero_grad()
    total, count = 0.0, 0
    for i, im in enumerate(images):
        h, w = im.shape[:2]
        target = torch.from_numpy(im.reshape(-1, 3).astype(np.float32)) / 127.5 - 1
        out = model(grid(h, w))[i]
        total = total + (out - target).square().sum()
        count += target.numel()
    (total / count).backward()
    return [p.grad.clone() for p in model.parameters()], (total / count).item()


@pytest.mark.parametrize("coeffs,sizes", [("linear", [(24, 24)] * 3), ("learned", [(24, 24)] * 3),
                                          ("learned", [(20, 24), (24, 18), (10, 10)])])
def test_mixed_once_chunked_gradients_equal_plain_autograd(coeffs, sizes):
    """Fitter's per-step gradient (small chunks, mixing once) equals the plain full-batch gradient."""
    images = [smooth_image(h, w, s) for s, (h, w) in enumerate(sizes)]
    cfg = FitConfig(epochs=1, coeffs=coeffs, chunk_elems=3 * 8 * 50, compile=False, progress=False)
    fitter = Fitter(images, Arch(3, 8, sets=3), cfg)
    assert fitter.chunk < max(h * w for h, w in sizes)  # really several chunks
    if coeffs == "learned":
        with torch.no_grad():
            fitter.model.coeffs.add_(0.1 * torch.randn(fitter.model.coeffs.shape, generator=torch.Generator().manual_seed(0)))
    fitter.opt.zero_grad(set_to_none=True)
    loss, _, _ = fitter._score(fitter._gradients())  # per-image MSEs -> the group's MSE
    fast = [p.grad.clone() for p in fitter.model.parameters()]
    plain, plain_loss = _plain_grads(fitter.model, images)
    assert loss == pytest.approx(plain_loss, rel=1e-5)
    for a, b in zip(fast, plain):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_forward_mixed_is_the_model_forward():
    """forward_mixed with the model's own mixed layers is exactly MixtureSiren.forward."""
    model = MixtureSiren(Arch(3, 8), 4, generator=torch.Generator().manual_seed(2))
    coords = grid(5, 7)
    with torch.no_grad():
        a = model(coords)
        b = forward_mixed(coords, model.arch, model.coeffs, model.weights[0], model.biases[0], model.mixed_layers())
    assert torch.equal(a, b)


def test_compiled_step_equals_eager(images):
    """torch.compile'd training gives the eager losses (fp32, to 1e-4 relative) on a tiny group."""
    cfg = dict(epochs=4, t0=4, lr=1e-3, progress=False)
    eager = fit(images[:2], Arch(2, 8), FitConfig(compile=False, **cfg))
    fitter = Fitter(images[:2], Arch(2, 8), FitConfig(compile=True, **cfg))
    with fitter:
        losses = [fitter.epoch() for _ in range(4)]
    assert fitter.compiled, "compilation failed here: the fallback ran instead"
    assert np.allclose(losses, eager.losses, rtol=1e-4)
    # Regression: torch's default of 8 recompiles made long processes (compare) fall back to eager.
    assert torch._dynamo.config.recompile_limit >= 64


def test_compile_failure_falls_back_to_eager(images, monkeypatch):
    """If the compiled function raises, the fit warns, goes on eagerly and matches a plain eager fit."""

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no compiler here")

        return run

    monkeypatch.setattr(train.torch, "compile", broken_compile)
    cfg = dict(epochs=5, t0=5, progress=False)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        fallen = fit(images, Arch(2, 8), FitConfig(compile=True, **cfg))
    eager = fit(images, Arch(2, 8), FitConfig(compile=False, **cfg))
    assert fallen.losses == eager.losses


def test_auto_compile_only_for_long_fits(images):
    """Auto (compile=None) never compiles a short fit; a huge work estimate compiles where g++ exists;
    the estimate counts L-BFGS iterations like epochs."""
    short = Fitter(images, Arch(2, 8), FitConfig(epochs=50, progress=False))
    assert not short.compiled
    assert Fitter(images, Arch(2, 8), FitConfig(epochs=50, lbfgs_steps=50, progress=False)).work == 2 * short.work
    assert train._choose_compile(None, torch.device("cpu"), 1e9) is False
    assert train._choose_compile(False, torch.device("cpu"), 1e15) is False
    assert train._choose_compile(True, torch.device("cpu"), 1.0) is True
    import shutil

    has_cxx = shutil.which("g++") is not None or shutil.which("c++") is not None
    assert train._choose_compile(None, torch.device("cpu"), 1e15) is has_cxx


def test_threads_set_inside_and_restored_after(images):
    """An explicit thread count applies during the fit and the caller's setting comes back after."""
    before = torch.get_num_threads()
    seen = []
    fitter = Fitter(images[:1], Arch(2, 4), FitConfig(epochs=2, threads=1, progress=False))
    with fitter:
        seen.append(torch.get_num_threads())
        fitter.epoch()
    assert seen == [1]
    assert torch.get_num_threads() == before
    assert train.auto_threads(torch.device("cuda"), 10**9, None) is None
    assert train.auto_threads(torch.device("cpu"), 10, None) == 1  # tiny steps never fan out


def test_auto_threads_one_when_busy_or_small(monkeypatch):
    """A busy machine (load average near the core count) or a tiny matmul gets one thread, else torch's."""
    import mixinr.model as model

    cpu = torch.device("cpu")
    monkeypatch.setattr(model.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(model.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert model.auto_threads(cpu, 1 << 30) is None
    assert model.auto_threads(cpu, 1000) == 1
    assert model.auto_threads(cpu, 1 << 30, requested=2) == 2
    monkeypatch.setattr(model.os, "getloadavg", lambda: (6.0, 6.0, 6.0))
    assert model.auto_threads(cpu, 1 << 30) == 1
    before = torch.get_num_threads()
    with model.using_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def _seed_from(model, images):
    """The benchmark's seed re-statement holding `model`'s two weight sets."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from seed_reference import SeedTrainer

    target = torch.from_numpy(np.stack(images).astype(np.float32)) / 127.5 - 1
    seed = SeedTrainer(target, model.arch.depth, model.arch.width)
    linears = [(seed.model.net_a[2 * i], seed.model.net_b[2 * i]) for i in range(len(model.weights))]
    with torch.no_grad():
        for (a, b), w, bias in zip(linears, model.weights, model.biases):
            a.weight.copy_(w[0]), b.weight.copy_(w[1]), a.bias.copy_(bias[0]), b.bias.copy_(bias[1])
    return seed


def test_seed_reference_is_the_same_maths(images):
    """The baseline in benchmarks/ computes our model's outputs, loss and first Adam step (same weights)."""
    fitter = Fitter(images, Arch(3, 8), FitConfig(epochs=1, lr=2e-4, t0=1000, compile=False, progress=False))
    seed = _seed_from(fitter.model, images)
    with torch.no_grad():
        ours_out = fitter.model(grid(16, 16))
        for i in range(len(images)):
            assert torch.allclose(seed.model.forward_image(i, seed.coords), ours_out[i], atol=1e-5)
    with fitter:
        ours_loss = fitter.epoch()
    assert seed.step() == pytest.approx(ours_loss, rel=1e-5)
    stepped = _seed_from(fitter.model, images)  # our weights after our step, in the seed's layout
    for pa, pb in zip(seed.model.parameters(), stepped.model.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
