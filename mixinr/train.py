"""Fitting a mixture SIREN to a group of images (the encoder's expensive half).

The seed's schedule: Adam (lr 2e-4), CosineAnnealingWarmRestarts stepped once per epoch, one
full-batch step per epoch over every pixel of every image, the lowest-loss weights kept. Groups are
processed in cache-sized pixel chunks whose gradients accumulate into the same full-batch step, so
memory stays bounded without changing the maths.

`FitConfig.lbfgs_steps` adds that many L-BFGS iterations on the full batch after the schedule, from the
kept weights (`Fitter.polish`; the codec's default, the seed has none).

`fit(..., init=model)` continues from a fitted model instead of a fresh one; with `frozen` (a mask and
values per coded tensor, file order) the masked elements are held at those values while the others train
(the codec's incremental quantisation, see docs/codec.md).

Speed (measured by benchmarks/train_speed.py, see benchmarks/README.md): weights are mixed once per
step, not per chunk; long fits torch.compile the chunk loss (eager fallback on any compiler failure);
on a busy CPU the fit runs one thread. Thread counts did not change the results in our checks (MKL
splits matmuls by rows and columns, not along the sum), but callers that need archives identical
whatever the load pass `threads` explicitly.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torch._dynamo import config as dynamo_config

from mixinr.devices import resolve_device
from mixinr.metrics import psnr_from_mse
from mixinr.model import Arch, MixtureSiren, auto_threads, forward_mixed, from_uint8, grid, mix_layers, using_threads
from mixinr.progress import Bar


@dataclass
class FitConfig:
    """How to fit. Defaults are the seed's Kodak/ImageNet schedule."""

    epochs: int = 5000
    lr: float = 2e-4
    t0: int = 500
    t_mult: int = 1
    eta_min: float = 5e-6
    coeffs: str = "linear"
    coeff_lr: float = 1.0  # the learned coefficients' learning rate as a multiple of lr (schedule alike)
    objective: str = "mse"  # "mse": every pixel alike (the seed); "psnr": the images' mean PSNR (OBJECTIVES)
    pixels_per_step: int | None = None  # None: full batch (the seed); else random pixels per image per step
    chunk_elems: int = 1 << 18  # images x pixels x width per chunk: ~1 MB activations stay in cache
    lbfgs_steps: int = 0  # L-BFGS iterations on the full batch after the Adam schedule (Fitter.polish)
    seed: int = 0
    device: str = "auto"
    progress: bool | None = None  # None: show a bar only on a terminal
    description: str = "fitting"
    compile: bool | None = None  # torch.compile the step; None: only for long fits with a compiler present
    threads: int | None = None  # CPU threads during the fit; None: 1 on a busy machine or small step
    deadline: float | None = None  # time.perf_counter() at which fitting stops, the best weights kept (--time-limit)


# What a fit minimises. "mse": the squared error over all pixels of the group (the seed's loss); a
# shared network then ends with similar errors on every image. "psnr": the mean over images of
# log MSE_i, i.e. the mean PSNR: image i's squared error is weighted by geo / MSE_i (MSE_i from the
# step before, geo their geometric mean), so an easy image, whose PSNR a small gain raises most, gets
# a larger share of the shared weights.
OBJECTIVES = ("mse", "psnr")


def psnr_weights(mses: Tensor) -> tuple[Tensor, Tensor]:
    """The "psnr" objective of per-image MSEs: (their geometric mean, each image's weight geo / MSE_i)."""
    mses = mses.clamp_min(1e-12)
    geo = mses.log().mean().exp()
    return geo, geo / mses


@dataclass
class FitResult:
    model: MixtureSiren  # holds the lowest-loss weights, on the CPU
    losses: list[float] = field(default_factory=list)  # training MSE ([-1, 1] scale) per epoch
    best_loss: float = math.inf  # the MSE of the kept weights (kept by the objective)
    best_score: float = math.inf  # the objective of the kept weights: their MSE, or geometric mean of MSE_i
    best_mses: list[float] = field(default_factory=list)  # each image's MSE with the kept weights
    best_epoch: int = -1
    seconds: float = 0.0
    device: str = "cpu"


class Targets:
    """The group's pixels. Same-size images share one coordinate grid (fast path); mixed sizes get
    per-image coordinates padded to the largest image, with a mask so padding never counts."""

    def __init__(self, images: list[np.ndarray], device):
        shapes = {im.shape[:2] for im in images}
        self.n = len(images)
        self.n_values = sum(im.shape[0] * im.shape[1] * 3 for im in images)
        if len(shapes) == 1:
            h, w = shapes.pop()
            self.coords = grid(h, w, device)  # (P, 2)
            self.rgb = torch.stack([from_uint8(im).reshape(-1, 3) for im in images]).to(device)
            self.mask = None
            self.counts = torch.full((self.n,), h * w, device=device)
        else:
            pmax = max(im.shape[0] * im.shape[1] for im in images)
            self.coords = torch.zeros(self.n, pmax, 2, device=device)
            self.rgb = torch.zeros(self.n, pmax, 3, device=device)
            self.mask = torch.zeros(self.n, pmax, 1, device=device)
            for i, im in enumerate(images):
                p = im.shape[0] * im.shape[1]
                self.coords[i, :p] = grid(im.shape[0], im.shape[1], device)
                self.rgb[i, :p] = from_uint8(im).reshape(-1, 3).to(device)
                self.mask[i, :p] = 1.0
            self.counts = torch.tensor([im.shape[0] * im.shape[1] for im in images], device=device)
        self.pixels = self.rgb.shape[1]

    def full(self, start: int, stop: int):
        coords = self.coords[start:stop] if self.coords.dim() == 2 else self.coords[:, start:stop]
        mask = None if self.mask is None else self.mask[:, start:stop]
        return coords, self.rgb[:, start:stop], mask

    def sample(self, k: int, generator):
        """k random pixels of each image, drawn from its own grid."""
        dev = self.rgb.device
        if self.mask is None:
            idx = torch.randint(0, self.pixels, (k,), generator=generator).to(dev)
            return self.coords[idx], self.rgb[:, idx], None
        u = torch.rand(self.n, k, generator=generator).to(dev)
        idx = (u * self.counts[:, None]).long()
        coords = torch.gather(self.coords, 1, idx[..., None].expand(-1, -1, 2))
        return coords, torch.gather(self.rgb, 1, idx[..., None].expand(-1, -1, 3)), None


def _chunk_sse(arch: Arch):
    """Each image's sum of squared errors over one pixel chunk, (N,), as a pure function of tensors
    (what torch.compile sees)."""

    def sse(coords, rgb, mask, c, w0, b0, *flat_mixed):
        mixed = list(zip(flat_mixed[0::2], flat_mixed[1::2]))
        err = (forward_mixed(coords, arch, c, w0, b0, mixed) - rgb).square()
        return (err * mask if mask is not None else err).sum(dim=(1, 2))

    return sse


# Below this much work (epochs x images x pixels x multiply-adds per pixel) compiling costs more than it
# saves: the first compiled call takes 10-40 s on a busy 2-core CPU (mostly the C++ compiler), and a
# CIFAR-size step gains ~40% (16 images of 5x16: 37 -> 21 ms). 10000 epochs of 16 CIFAR images are 1.8e11.
_COMPILE_MIN_WORK = 5e10
_RECOMPILE_LIMIT = 256


class Fitter:
    """One fit in progress. `epoch()` makes one optimiser step (one full batch, or one sampled batch)
    and returns the loss of the weights before the step; `result()` restores the best weights.

    Use as a context manager: inside it, torch runs with the thread count chosen for this fit.
    """

    def __init__(self, images: list[np.ndarray], arch: Arch, cfg: FitConfig,
                 init: MixtureSiren | None = None, frozen: list[tuple[Tensor, Tensor]] | None = None):
        if not images:
            raise ValueError("fit() needs at least one image")
        self.arch, self.cfg = arch, cfg
        self.device = resolve_device(cfg.device)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        if init is None:
            self.model = MixtureSiren(arch, len(images), cfg.coeffs, generator=self.gen).to(self.device)
        else:
            if init.arch != arch or init.n_images != len(images):
                raise ValueError(f"fit(init=...): the model is {init.arch} for {init.n_images} images, "
                                 f"asked for {arch} and {len(images)}")
            # A copy: the caller's model stays as it was (rate control compares both).
            self.model = copy.deepcopy(init).to(self.device)
        coded = self.model.coded_params()
        if frozen is not None and len(frozen) != len(coded):
            raise ValueError(f"frozen: {len(frozen)} masks for {len(coded)} coded tensors")
        self.frozen = None if frozen is None else [(p, m.to(self.device), v.to(self.device))
                                                   for p, (m, v) in zip(coded, frozen)]
        self._hold()
        if cfg.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {cfg.objective!r}")
        if cfg.lbfgs_steps and cfg.pixels_per_step:
            raise ValueError("L-BFGS needs the full batch (pixels_per_step=None)")
        self.data = Targets(images, self.device)
        self.image_weights = torch.ones(self.data.n, device=self.device)  # each image's share of the loss
        self.params = list(self.model.parameters())
        self.opt = _adam(self._groups(), cfg.lr)
        # CosineAnnealingWarmRestarts' curve as a factor of each group's own lr (its eta_min is one
        # absolute floor for all groups).
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _restart_cosine(cfg))
        per_pixel = self.data.n * arch.width
        self.chunk = max(256, cfg.chunk_elems // per_pixel)
        pixels = cfg.pixels_per_step or self.data.pixels
        hidden_madds = sum(o * i for o, i in arch.shapes())
        self.work = (cfg.epochs + cfg.lbfgs_steps) * self.data.n * pixels * hidden_madds  # an L-BFGS step ~ an epoch
        self.threads = auto_threads(self.device, per_pixel * min(self.chunk, pixels) * arch.width, cfg.threads)
        self.compiled = _choose_compile(cfg.compile, self.device, self.work)
        self._eager = _chunk_sse(arch)
        if self.compiled:
            # Every fit of a new shape (width, group size, chunk) is a legitimate recompile of the same
            # code; torch's default limit of 8 made long-running processes (compare, rd) fall back to eager.
            dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, _RECOMPILE_LIMIT)
            self._sse = torch.compile(self._eager, dynamic=False)
        else:
            self._sse = self._eager
        self.result_ = FitResult(model=self.model, device=str(self.device))
        self._best = [p.detach().clone() for p in self.params]
        self._epoch = 0

    def _groups(self) -> list[dict]:
        """Adam's parameter groups: the weight sets at lr, the learned coefficients at lr x coeff_lr (Adam's
        steps are about lr whatever a value's scale, and the coefficients are ~30x the hidden weights)."""
        m = self.model
        if m.scheme == "linear" or self.cfg.coeff_lr == 1.0:
            return [{"params": self.params}]
        rest = [p for p in self.params if p is not m.coeffs]
        return [{"params": rest}, {"params": [m.coeffs], "lr": self.cfg.lr * self.cfg.coeff_lr}]

    def __enter__(self):
        self._threads_ctx = using_threads(self.threads)
        self._threads_ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._threads_ctx.__exit__(*exc)

    def epoch(self) -> float:
        """One optimiser step; returns the loss (MSE on the [-1, 1] scale) of the weights before it."""
        self.opt.zero_grad(set_to_none=True)
        mses = self._safe_gradients()
        loss, score, self.image_weights = self._score(mses)
        self.result_.losses.append(loss)
        self._keep_if_best(loss, score, mses)
        self.opt.step()
        self._hold()
        self.sched.step()
        self._epoch += 1
        return loss

    def polish(self, steps: int, on_step=None) -> None:
        """`steps` L-BFGS iterations (strong Wolfe line search) from the kept weights. Late in the cosine,
        Adam's small steps creep along the loss valley; the curvature model takes long steps on its floor
        (docs/rd.md: +0.8 dB in float on CIFAR groups for a quarter more time). The image weights of the "psnr"
        objective are held at their values now, so the line search sees one fixed function; frozen
        elements get no gradient, so L-BFGS never moves them. on_step(iterations done, loss) reports."""
        if steps <= 0:
            return
        with torch.no_grad():
            torch._foreach_copy_(self.params, self._best)
        weights = self.image_weights
        counts = self.data.counts.to(weights.dtype)
        opt = torch.optim.LBFGS(self.params, lr=1.0, max_iter=LBFGS_CHUNK, history_size=LBFGS_HISTORY,
                                line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)

        def closure():
            opt.zero_grad(set_to_none=False)
            mses = self._safe_gradients()
            if self.frozen:
                for p, mask, _ in self.frozen:
                    p.grad.masked_fill_(mask, 0.0)
            loss, score, _ = self._score(mses)
            if not math.isfinite(loss):
                raise _Diverged
            self._keep_if_best(loss, score, mses)
            return (mses * counts * weights).sum() / counts.sum()  # the function whose gradient this is

        done, state = 0, opt.state[self.params[0]]  # torch keeps its iteration count there
        try:
            while done < steps and not _past(self.cfg.deadline):
                opt.param_groups[0]["max_iter"] = min(LBFGS_CHUNK, steps - done)
                loss = float(opt.step(closure))
                if state["n_iter"] == done:  # no iteration made: nothing left to descend
                    break
                done = state["n_iter"]
                if on_step:
                    on_step(done, loss)
        except _Diverged:
            pass  # the best weights so far are kept
        self._hold()

    def _safe_gradients(self) -> Tensor:
        try:
            return self._gradients()
        except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back to eager, loudly
            if not self.compiled:
                raise
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); fitting eagerly", stacklevel=3)
            self.compiled, self._sse = False, self._eager
            for p in self.params:
                p.grad = None
            return self._gradients()

    def _keep_if_best(self, loss: float, score: float, mses: Tensor) -> None:
        r = self.result_
        if score < r.best_score:
            # The loss belongs to the weights the gradient was taken at: keep those.
            r.best_score, r.best_loss, r.best_epoch, r.best_mses = score, loss, self._epoch, mses.tolist()
            with torch.no_grad():
                torch._foreach_copy_(self._best, self.params)

    def _hold(self):
        """Put the frozen elements back at their values (Adam's momentum moves every element)."""
        if self.frozen:
            with torch.no_grad():
                for p, mask, values in self.frozen:
                    p.copy_(torch.where(mask, values, p))

    def _score(self, mses: Tensor) -> tuple[float, float, Tensor]:
        """(MSE over all pixels, the objective, the image weights the objective gives) from each image's MSE."""
        counts = self.data.counts.to(mses.dtype)
        loss = float((mses * counts).sum() / counts.sum())
        if self.cfg.objective == "mse":
            return loss, loss, self.image_weights
        geo, weights = psnr_weights(mses)
        return loss, float(geo), weights

    def _gradients(self) -> Tensor:
        """Accumulate the step's gradient in .grad; returns each image's MSE (N,) before the step. Weights
        are mixed once per step, not per chunk: the chunks run on detached copies whose gradients are
        pushed through the mixing at the end."""
        m, data = self.model, self.data
        c, ws, bs = m.layer_coeffs(), m.weights, m.biases
        mixed = mix_layers(c[1:], ws[1:], bs[1:])
        head = (c[0], ws[0], bs[0])
        leaves = [t.detach().requires_grad_() for pair in mixed for t in pair]
        weights = self.image_weights
        if self.cfg.pixels_per_step:
            coords, rgb, mask = data.sample(self.cfg.pixels_per_step, self.gen)
            sse = self._sse(coords, rgb, mask, *head, *leaves)
            (sse @ weights / rgb.numel()).backward()
            mses = sse.detach() / (rgb.shape[1] * 3)
        else:
            sse = torch.zeros_like(weights)
            for s in range(0, data.pixels, self.chunk):
                part = self._sse(*data.full(s, s + self.chunk), *head, *leaves)
                (part @ weights / data.n_values).backward()
                sse += part.detach()
            mses = sse / (data.counts * 3)
        torch.autograd.backward([t for pair in mixed for t in pair], [t.grad for t in leaves])
        return mses

    def result(self) -> FitResult:
        """The best weights (moved to the CPU) and the loss history."""
        with torch.no_grad():
            for p, b in zip(self.params, self._best):
                p.copy_(b)
        self.result_.model = self.model.cpu()
        return self.result_


# L-BFGS: curvature pairs kept, and iterations per optimizer.step call (between progress reports).
LBFGS_HISTORY = 50
LBFGS_CHUNK = 50


class _Diverged(Exception):
    pass


def _adam(params, lr: float) -> torch.optim.Optimizer:
    # The fused kernel updates every tensor in one call (a few hundred small ops fewer per step).
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


def _restart_cosine(cfg: FitConfig):
    """The factor of the base lr at each epoch: cosine from 1 to eta_min / lr over t0 epochs, restarting
    with periods t0, t0 * t_mult, ... (torch's CosineAnnealingWarmRestarts)."""
    if cfg.t0 < 1 or cfg.t_mult < 1:
        raise ValueError(f"t0 and t_mult must be >= 1, got {cfg.t0} and {cfg.t_mult}")
    floor = cfg.eta_min / cfg.lr

    def factor(epoch: int) -> float:
        t, period = epoch, cfg.t0
        while t >= period:
            t, period = t - period, period * cfg.t_mult
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t / period))

    return factor


def _choose_compile(flag: bool | None, device, work: float) -> bool:
    """Explicit True/False wins; auto compiles only long fits, and only where a compiler is present."""
    if flag is not None:
        return flag
    if work < _COMPILE_MIN_WORK:
        return False
    if device.type == "cpu":
        return shutil.which("g++") is not None or shutil.which("c++") is not None
    return importlib.util.find_spec("triton") is not None


def fit(images: list[np.ndarray], arch: Arch, cfg: FitConfig, init: MixtureSiren | None = None,
        frozen: list[tuple[Tensor, Tensor]] | None = None) -> FitResult:
    """Fit one mixture SIREN to `images` ((H, W, 3) uint8, sizes may differ). Seeded and reproducible.

    init: start from (a copy of) this model, same arch and image count, instead of a fresh one; its
    coefficient scheme is kept. frozen: (mask, values) per coded tensor (file order W_0, b_0, W_1, ...,
    then the learned coefficients, see MixtureSiren.coded_params): the masked elements start at and stay
    at those values; the others train."""
    fitter = Fitter(images, arch, cfg, init, frozen)
    start = time.perf_counter()
    with fitter, _Progress(cfg, fitter.device) as bar:
        if fitter.compiled:
            bar.bar.status("compiling the step (torch.compile: 10-40 s on a busy CPU, then faster steps)")
        for epoch in range(cfg.epochs):
            if _past(cfg.deadline):
                break
            bar.update(epoch + 1, fitter.epoch())
        fitter.polish(cfg.lbfgs_steps, lambda done, loss: bar.update(cfg.epochs + done, loss))
    result = fitter.result()
    result.seconds = time.perf_counter() - start
    return result


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


class _Progress:
    """The fit's bar (mixinr.progress): Adam epochs, then L-BFGS iterations, each counted as what it is."""

    def __init__(self, cfg: FitConfig, device):
        self.epochs, self.steps = cfg.epochs, cfg.lbfgs_steps
        self.bar = Bar(f"{cfg.description} [{device.type}]", cfg.epochs + cfg.lbfgs_steps, cfg.progress)

    def __enter__(self):
        self.bar.__enter__()
        return self

    def update(self, done: int, loss: float):
        """`done` epochs and L-BFGS iterations together are finished; `loss` is the latest."""
        if done <= self.epochs:
            stage = f"epoch {done}/{self.epochs}" + (f" (then {self.steps} L-BFGS steps)" if self.steps else "")
        else:
            stage = f"L-BFGS step {done - self.epochs}/{self.steps}"
        self.bar.update(done, f"{stage}  loss {loss:.2e}  ~{psnr_from_mse(loss):.2f} dB")

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)
