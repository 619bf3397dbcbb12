"""Fitting a group of photos to latent grids and a mixture synthesis (the encoder's expensive half).

Loss = MSE (RGB in [0, 1]) + lambda * estimated bits per pixel. The latents are trained with additive
uniform noise as their quantisation proxy, then, for the last `hard_share` of the steps, rounded with a
straight-through gradient (what the decoder will see). With a rate target, lambda is adapted at every
step (dual ascent on the rate constraint): up when the rounded latents' rate is over the target, down
when under, so one fit lands near the budget without a search over lambda. The rounded rate, not the
noisy one, drives it: near-zero latents cost ~1.9 bits each under noise and almost nothing rounded,
which early in a short fit is most of them (docs/photo.md)."""

from __future__ import annotations

import math
import time
import numpy as np
import torch
from torch import Tensor, nn

from mixinr.devices import resolve_device
from mixinr.grid import start
from mixinr.grid.context import ContextModel, stored_scales
from mixinr.grid.format import WEIGHT_BITS
from mixinr.grid.latents import level_shapes, upsample_frame
from mixinr.grid.prior import laplace_bits
from mixinr.grid.synthesis import MixtureSynthesis
from mixinr.progress import Bar, note, plural
from mixinr.settings import GridConfig
from mixinr.train import psnr_weights

ESTIMATE_AFTER = 3  # steps timed before the fit's estimated time is printed


class GridModel(nn.Module):
    """Every image's latent grids and per-level Laplace scales, and the shared mixture synthesis."""

    def __init__(self, sizes: list[tuple[int, int]], cfg: GridConfig, begin: list[np.ndarray] | None = None):
        """`begin`: the start's tensors when cfg.start (None: the shipped start; grid/start.py)."""
        super().__init__()
        self.sizes, self.cfg = [tuple(map(int, s)) for s in sizes], cfg
        gen = torch.Generator().manual_seed(cfg.seed)
        self.latents = nn.ModuleList(
            nn.ParameterList(nn.Parameter(torch.zeros(r, c)) for r, c in level_shapes(h, w, cfg.levels))
            for h, w in self.sizes)
        self.log_scale = nn.Parameter(torch.zeros(len(sizes), cfg.levels))
        self.synthesis = MixtureSynthesis(cfg.levels, cfg.widths, min(cfg.sets, len(sizes)), len(sizes), gen)
        self.context = ContextModel(cfg.context, gen) if cfg.context else None
        if cfg.start:
            start.apply(self.synthesis, self.context, cfg.seed, begin)

    def forward(self, index: int, hard: bool) -> tuple[Tensor, Tensor, float]:
        """Image `index`'s (3, H, W) RGB in [0, 1] scale with its latents noisy (or quantised), the bits of
        those latents, and the bits of the quantised latents (what the archive will spend; no gradient)."""
        h, w = self.sizes[index]
        latents, scales = list(self.latents[index]), self.scales(index)
        if hard:
            grids, bits = self.quantised(latents, scales)
            coded = float(bits.detach())
        else:
            grids = [y + torch.rand_like(y) - 0.5 for y in latents]
            bits = self.bits(grids, scales)
            with torch.no_grad():
                coded = float(self.quantised(latents, scales)[1])
        return self.synthesis(upsample_frame(grids, h, w), index), bits, coded

    def scales(self, index: int) -> Tensor:
        """Image `index`'s per-level Laplace scales as the archive will store them (straight-through)."""
        return stored_scales(self.log_scale[index])

    def quantised(self, latents: list[Tensor], scales: Tensor) -> tuple[list[Tensor], Tensor]:
        """One image's latents as the archive will hold them (straight-through) and their bits: rounded
        around their context means (`cfg.residual`), else to whole symbols."""
        if self.context is not None and self.cfg.residual:
            return self.context.quantise(latents, scales)
        grids = [y + (torch.round(y) - y).detach() for y in latents]
        return grids, self.bits(grids, scales)

    def bits(self, grids: list[Tensor], scales: Tensor) -> Tensor:
        """Bits of one image's latents (finest first) under the entropy model: the context model's
        per-symbol Laplaces from already-decoded neighbours, or one Laplace per level (`scales`)."""
        if self.context is not None:
            return self.context.bits(grids, scales)
        return sum(laplace_bits(y, s) for y, s in zip(grids, scales))

    def render_float(self, index: int) -> Tensor:
        """Image `index` from its unquantised latents (the fit's float result), (3, H, W) RGB in [0, 1] scale."""
        h, w = self.sizes[index]
        return self.synthesis(upsample_frame(list(self.latents[index]), h, w), index)


def fit(images: list[np.ndarray], cfg: GridConfig, target_bpp: float | None = None, deadline: float | None = None,
        progress: bool | None = None, device: str = "cpu", begin: list[np.ndarray] | None = None) -> GridModel:
    """Fit `images` (uint8 (H, W, 3) each). `target_bpp`: the latents' rate to aim for (bits / all pixels);
    None keeps lambda fixed. `deadline` (time.perf_counter()) ends the noisy phase early and moves on to
    the rounded phase. `progress`: a bar with an ETA (None: on a terminal). `device`: where the fit runs
    ("auto": CUDA when present); the model comes back on the CPU, where packing and decoding run. `begin`:
    another start than the shipped one (GridModel)."""
    dev = resolve_device(device)
    torch.manual_seed(cfg.seed)
    sizes = [im.shape[:2] for im in images]
    targets = [torch.from_numpy(np.asarray(im, np.float32).transpose(2, 0, 1) / 255.0).contiguous().to(dev)
               for im in images]  # (3, H, W): the fit renders channels first
    pixels = sum(h * w for h, w in sizes)
    model = GridModel(sizes, cfg, begin).to(dev)
    net_params = list(model.synthesis.parameters()) + (list(model.context.parameters()) if model.context else [])
    groups = [{"params": [model.log_scale], "base": cfg.latent_lr}, {"params": net_params, "base": cfg.lr}]
    groups += [{"params": [grids[l] for grids in model.latents], "base": cfg.latent_lr * cfg.level_lr**l}
               for l in range(cfg.levels)]  # coarse levels move faster (docs/photo.md, "A latent lr per level")
    opt = torch.optim.Adam([{**g, "lr": g["base"]} for g in groups], betas=tuple(cfg.betas), eps=cfg.eps / pixels)
    hard_from = int(cfg.steps * (1 - cfg.hard_share))
    log_lam = math.log(cfg.lam)
    images_label = plural(len(images), "image")
    began = time.perf_counter()
    kept = None  # the last rounded state on target: the rounded phase's rate drifts up (docs/photo.md)
    weights = [1.0] * len(images)  # each image's squared error's weight: "psnr" moves it by the last step's MSEs
    with Bar(f"fitting grid, {images_label} [{dev.type}]", cfg.steps, progress) as bar:
        step = 0
        while step < cfg.steps:
            if deadline is not None and step < hard_from and time.perf_counter() > deadline:
                step = hard_from  # out of time: finish with the rounded phase only
            if step == hard_from and model.context is not None and cfg.residual:
                model.context.freeze_as_coded(WEIGHT_BITS)
            before = _state(model) if target_bpp and step >= hard_from else None
            log_lam, mses, bpp = _step(model, opt, targets, pixels, step, hard_from, log_lam, target_bpp, cfg, weights)
            if cfg.objective == "psnr" and len(images) > 1:  # one image: the objectives agree
                weights = psnr_weights(torch.tensor(mses))[1].tolist()
            psnr = float(np.mean([10 * math.log10(1 / max(m, 1e-12)) for m in mses]))
            if before is not None and bpp <= target_bpp:  # bpp: the rate of the state before the step
                kept = before
            step += 1
            bar.update(step, f"step {step}/{cfg.steps}  ~{psnr:.2f} dB  {bpp:.3f} bpp")
            if step == ESTIMATE_AFTER and cfg.steps > 10 * step:
                eta = (time.perf_counter() - began) / step * cfg.steps
                note(f"estimated fitting time: {eta / 60:.1f} min ({cfg.steps} steps, {images_label})", progress)
    if kept is not None and rounded_bpp(model, pixels) > target_bpp:
        model.load_state_dict(kept)
    model.lam = math.exp(log_lam)
    return model.cpu()


def _state(model: GridModel) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def rounded_bpp(model: GridModel, pixels: int) -> float:
    """The rate of the latents as the archive will round them, bits / `pixels` (the fit's estimate)."""
    with torch.no_grad():
        return sum(float(model.quantised(list(model.latents[i]), model.scales(i))[1])
                   for i in range(len(model.sizes))) / pixels


def _step(model, opt, targets, pixels, step, hard_from, log_lam, target_bpp, cfg, weights) -> tuple[float, list, float]:
    """One Adam step over the group, image i's squared error weighted by weights[i]: (log lambda after its
    update, each image's MSE, the rounded latents' bpp)."""
    for g in opt.param_groups:
        g["lr"] = g["base"] * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
    hard = step >= hard_from
    mses, bits = [], 0.0
    opt.zero_grad(set_to_none=True)
    for i, target in enumerate(targets):
        rgb, b, coded = model(i, hard)
        err = (rgb - target).square().sum()
        loss = (weights[i] * err / 3 + math.exp(log_lam) * b) / pixels
        loss.backward()
        mses.append(float(err.detach()) / target.numel())
        bits += coded
    opt.step()
    bpp = bits / pixels
    if target_bpp:
        gain = cfg.hard_lam_rate if hard else cfg.lam_rate
        log_lam = min(log_lam + gain * (bpp / target_bpp - 1), math.log(cfg.lam_max))
    return log_lam, mses, bpp
