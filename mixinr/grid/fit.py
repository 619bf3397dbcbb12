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
import sys
import time
import numpy as np
import torch
from torch import Tensor, nn

from mixinr.grid.context import ContextModel
from mixinr.grid.latents import level_shapes, upsample_frame
from mixinr.grid.prior import laplace_bits
from mixinr.grid.synthesis import MixtureSynthesis
from mixinr.settings import GridConfig


class GridModel(nn.Module):
    """Every image's latent grids and per-level Laplace scales, and the shared mixture synthesis."""

    def __init__(self, sizes: list[tuple[int, int]], cfg: GridConfig):
        super().__init__()
        self.sizes, self.cfg = [tuple(map(int, s)) for s in sizes], cfg
        gen = torch.Generator().manual_seed(cfg.seed)
        self.latents = nn.ModuleList(
            nn.ParameterList(nn.Parameter(torch.zeros(r, c)) for r, c in level_shapes(h, w, cfg.levels))
            for h, w in self.sizes)
        self.log_scale = nn.Parameter(torch.zeros(len(sizes), cfg.levels))
        self.synthesis = MixtureSynthesis(cfg.levels, cfg.widths, min(cfg.sets, len(sizes)), len(sizes), gen)
        self.context = ContextModel(cfg.context, gen) if cfg.context else None

    def forward(self, index: int, hard: bool) -> tuple[Tensor, Tensor, float]:
        """Image `index`'s (H, W, 3) RGB in [0, 1] scale with its latents noisy (or rounded), the bits of
        those latents, and the bits of the rounded latents (what the archive will spend; no gradient)."""
        h, w = self.sizes[index]
        grids, bits, coded = [], 0.0, 0.0
        for level, y in enumerate(self.latents[index]):
            scale = self.log_scale[index, level].exp()
            rounded = torch.round(y.detach())
            yq = y + (rounded - y).detach() if hard else y + torch.rand_like(y) - 0.5
            if self.context is None:
                coded += float(laplace_bits(rounded, scale.detach()))
                bits = bits + laplace_bits(yq, scale)
            grids.append(yq)
        if self.context is not None:  # each latent's Laplace from its already-decoded neighbours
            scales = self.log_scale[index].exp()
            bits = self.context.bits(grids, scales)
            with torch.no_grad():
                coded = float(self.context.bits([torch.round(y) for y in self.latents[index]], scales))
        return self.synthesis(upsample_frame(grids, h, w), index), bits, coded

    def render_float(self, index: int) -> Tensor:
        """Image `index` from its unquantised latents (the fit's float result), RGB in [0, 1] scale."""
        h, w = self.sizes[index]
        return self.synthesis(upsample_frame(list(self.latents[index]), h, w), index)


def fit(images: list[np.ndarray], cfg: GridConfig, target_bpp: float | None = None, deadline: float | None = None,
        progress: bool | None = None) -> GridModel:
    """Fit `images` (uint8 (H, W, 3) each). `target_bpp`: the latents' rate to aim for (bits / all pixels);
    None keeps lambda fixed. `deadline` (time.perf_counter()) ends the noisy phase early and moves on to
    the rounded phase. `progress`: a bar with an ETA (None: on a terminal)."""
    torch.manual_seed(cfg.seed)
    sizes = [im.shape[:2] for im in images]
    targets = [torch.from_numpy(np.asarray(im, np.float32) / 255.0) for im in images]
    pixels = sum(h * w for h, w in sizes)
    model = GridModel(sizes, cfg)
    latent_params = [p for grids in model.latents for p in grids] + [model.log_scale]
    net_params = list(model.synthesis.parameters()) + (list(model.context.parameters()) if model.context else [])
    opt = torch.optim.Adam([{"params": latent_params, "lr": cfg.latent_lr, "base": cfg.latent_lr},
                            {"params": net_params, "lr": cfg.lr, "base": cfg.lr}])
    hard_from = int(cfg.steps * (1 - cfg.hard_share))
    log_lam = math.log(cfg.lam)
    step = 0
    bar = _Progress(progress, cfg.steps, f"fitting grid, {len(images)} image{'s' if len(images) != 1 else ''}")
    while step < cfg.steps:
        if deadline is not None and step < hard_from and time.perf_counter() > deadline:
            step = hard_from  # out of time: finish with the rounded phase only
        for g in opt.param_groups:
            g["lr"] = g["base"] * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
        hard = step >= hard_from
        sse, bits = 0.0, 0.0
        opt.zero_grad(set_to_none=True)
        for i, target in enumerate(targets):
            rgb, b, coded = model(i, hard)
            err = (rgb - target).square().sum()
            loss = (err / 3 + math.exp(log_lam) * b) / pixels
            loss.backward()
            sse, bits = sse + float(err.detach()), bits + coded
        opt.step()
        bpp = bits / pixels
        if target_bpp:
            log_lam += cfg.lam_rate * (bpp / target_bpp - 1)
        step += 1
        bar.update(step, 10 * math.log10(1 / max(sse / pixels / 3, 1e-12)), bpp)
    bar.close()
    model.lam = math.exp(log_lam)
    return model


class _Progress:
    """One rich bar (step, PSNR, rate, ETA); after the first steps it prints the fit's estimated time."""

    ESTIMATE_AFTER = 3  # steps timed before the estimate is printed

    def __init__(self, show: bool | None, total: int, what: str):
        self.total, self.bar, self.start = total, None, time.perf_counter()
        if show if show is not None else sys.stderr.isatty():
            from rich.console import Console
            from rich.markup import escape
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.console = Console(stderr=True)
            self.bar = Progress(TextColumn(escape(f"{what} [cpu]" if not torch.cuda.is_available() else what)),
                                BarColumn(), TextColumn("step {task.completed}/{task.total}"),
                                TextColumn("~{task.fields[psnr]:.2f} dB  {task.fields[bpp]:.3f} bpp"),
                                TimeRemainingColumn(), console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("fit", total=total, psnr=0.0, bpp=0.0)

    def update(self, step: int, psnr: float, bpp: float) -> None:
        if not self.bar:
            return
        self.bar.update(self.task, completed=step, psnr=psnr, bpp=bpp)
        if step == self.ESTIMATE_AFTER and self.total > 10 * step:
            eta = (time.perf_counter() - self.start) / step * self.total
            self.console.print(f"estimated fitting time: {eta / 60:.1f} min ({self.total} steps)")

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
