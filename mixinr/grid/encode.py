"""Encoding a group of photos with the grid representation: fit with the rate aimed at the budget, then
the finest latent step whose archive fits it (bisection), the PSNRs decoded from the archive's own bytes."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from mixinr.errors import MixinrError
from mixinr.grid import format as gformat
from mixinr.grid.archive import GridArchive, pack
from mixinr.grid.fit import GridConfig, GridModel, fit
from mixinr.metrics import psnr

RATE_AIM = 0.95  # the fit aims its noisy rate estimate this far under the room left for latents
OVERHEAD_GROWTH = 1.15  # trained weights code longer than fresh ones (measured: docs/photo.md)
STEP_RANGE = (0.5, 8.0)  # latent steps the bisection searches (symbol units; the fit trains at 1)
BISECT_STEPS = 16


@dataclass
class GridEncoded:
    data: bytes
    psnrs: list[float]
    model: GridModel
    latent_step: float
    trials: list[dict] = field(default_factory=list)


def _decoded_psnrs(data: bytes, images) -> list[float]:
    archive = GridArchive(gformat.read(data), "archive", len(data))
    return [psnr(archive.render(i, *im.shape[:2]), im) for i, im in enumerate(images)]


def encode(images: list[np.ndarray], names: list[str], bpp: float | None, cfg: GridConfig, on_step=None,
           deadline: float | None = None) -> GridEncoded:
    """One archive of `images` within floor(bpp * pixels / 8) bytes (bpp None: lambda as configured)."""
    sizes = [im.shape[:2] for im in images]
    pixels = sum(h * w for h, w in sizes)
    cfg = dataclasses.replace(cfg, sets=min(cfg.sets, len(images)))
    target = None
    if bpp is not None:
        budget = math.floor(bpp * pixels / 8)
        overhead = len(pack(GridModel(sizes, cfg), names))  # header and fresh weights, latents all zero
        room = budget - OVERHEAD_GROWTH * overhead
        if room <= 0:
            need = OVERHEAD_GROWTH * overhead * 8 / pixels
            raise MixinrError(f"budget too small: {bpp} bpp is {budget} bytes, the grid's header and synthesis "
                              f"alone take about {math.ceil(OVERHEAD_GROWTH * overhead)} (try --bpp {need * 1.5:.3g})")
        target = RATE_AIM * room * 8 / pixels
    model = fit(images, cfg, target, on_step, deadline)
    if bpp is None:
        data = pack(model, names)
        return GridEncoded(data, _decoded_psnrs(data, images), model, 1.0)
    lo, hi = (math.log(s) for s in STEP_RANGE)
    if len(pack(model, names, math.exp(hi))) > budget:
        raise MixinrError(f"budget too small: {bpp} bpp is {budget} bytes; the fitted grid needs "
                          f"{len(pack(model, names, math.exp(hi)))} even at its coarsest latent step")
    trials = []
    if len(pack(model, names, math.exp(lo))) <= budget:
        hi = lo
    for _ in range(BISECT_STEPS):  # bytes fall as the step grows
        if hi - lo < 1e-3:
            break
        mid = (lo + hi) / 2
        n = len(pack(model, names, math.exp(mid)))
        trials.append({"latent_step": math.exp(mid), "bytes": n})
        lo, hi = (lo, mid) if n <= budget else (mid, hi)
    step = math.exp(hi)
    data = pack(model, names, step)
    return GridEncoded(data, _decoded_psnrs(data, images), model, step, trials)
