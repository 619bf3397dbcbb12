"""The grid representation's side of encoding, as the representation.Plan and Candidate that rate control
works with (mixinr/ratecontrol.py): one fit per group (capacity fixed at 1: the rate is steered inside
the fit by lambda, not by a network size), then the finest latents within the budget by bisection
(representation.finest_under over the candidate's alpha, here the latents' coarseness: quantiser)."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch

from mixinr.grid import format as gformat
from mixinr.grid.archive import GridArchive, overhead, pack
from mixinr.grid.fit import GridModel, fit
from mixinr.metrics import psnr
from mixinr.representation import time_limit_deadline

RATE_AIM = 0.99  # the fit aims the rounded latents' rate this far under the room the budget leaves them:
# its estimate is the archive's to ~0.1% since it trains with the stored scales (0.95 before: docs/photo.md)
OVERHEAD_GROWTH = 1.15  # trained synthesis weights code longer than fresh ones (docs/photo.md)
ALPHA_RANGE = (0.25, 8.0)  # the coarseness the bisection searches (quantiser; the fit trains at 1)
# 0.25, not 0.5: a short fit that ends under its rate (lambda still high) spends the rest of its budget
# on finer latents (half-size kodim03, effort 1: 0.54 -> 0.80 of 0.8 bpp, +0.19 dB; docs/photo.md).


def quantiser(alpha: float) -> tuple[float, float]:
    """(latent step, dead zone) of coarseness `alpha`: up to 1 a finer step than the fit trained at (more
    bytes); above 1 the trained step, rounded toward zero by alpha - 1. A step above 1 moves every residual
    around the context means, and bytes are not monotone in it (docs/photo.md, "Ending under the budget")."""
    return (alpha, 0.0) if alpha <= 1 else (1.0, alpha - 1)


class GridCandidate:
    """One fitted GridModel; alpha is its latents' coarseness (quantiser; 1: what it was trained at)."""

    coeffs = "per-layer"
    qat_seconds = None

    def __init__(self, model: GridModel, images, names, seconds: float):
        self.model, self.images, self.names, self.fit_seconds = model, images, names, seconds
        self.arch = {"levels": model.cfg.levels, "synthesis": list(model.cfg.widths),
                     "sets": model.synthesis.weights[0].shape[0]}
        self.n_values = sum(g.numel() for grids in model.latents for g in grids)
        with torch.no_grad():  # the unquantised latents' error: what "predicted" losses are measured against
            sse = sum(float((model.render_float(i).permute(1, 2, 0) - torch.from_numpy(im / 255.0).float())
                            .square().sum()) for i, im in enumerate(images))
        self.float_mse = sse / sum(im.size for im in images) * 4  # [-1, 1] scale, as the SIREN's
        self._packed: dict = {}
        self._psnrs: dict = {}

    def describe(self) -> dict:
        return {"representation": "grid", **self.arch, "lambda": self.model.lam, "fit_seconds": self.fit_seconds}

    def pack(self, setting) -> bytes:
        key = float(setting)
        if key not in self._packed:
            self._packed[key] = pack(self.model, self.names, *quantiser(key))
        return self._packed[key]

    def psnrs(self, setting) -> list[float]:
        key = float(setting)
        if key not in self._psnrs:
            archive = GridArchive.from_bytes(self.pack(key))
            self._psnrs[key] = [psnr(archive.decode(i), im) for i, im in enumerate(self.images)]
        return self._psnrs[key]

    def precision(self, setting) -> str:
        return gformat.read(self.pack(setting)).header.precision

    def predicted_loss_db(self, alpha: float) -> float:
        """Measured, not predicted: the float latents' PSNR minus the archive's at this alpha."""
        return 10 * math.log10(4 / max(self.float_mse, 1e-10)) - float(np.mean(self.psnrs(alpha)))

    def alpha_for_loss(self, db: float) -> float:
        return 1.0  # the step the latents were trained at

    def alpha_range(self) -> tuple[float, float]:
        return ALPHA_RANGE

    def fine_tuned(self, alpha: float, epochs: int):
        return None  # the fit's last phase already trains on rounded latents


class GridPlan:
    """A group ready to fit: the budget (from cfg.bpp) steers the fit's rate."""

    fixed_capacity = 1

    def __init__(self, images, names, cfg):
        self.images, self.names, self.cfg = images, names, cfg
        self.grid = dataclasses.replace(cfg.grid, sets=min(cfg.grid.sets, len(images)), seed=cfg.seed,
                                        objective=cfg.objective)
        self.sizes = [im.shape[:2] for im in images]
        self.pixels = sum(h * w for h, w in self.sizes)
        self._fixed = overhead(GridModel(self.sizes, self.grid), names)  # header and the start's weights
        self.deadline = time_limit_deadline(cfg)

    def fit(self, capacity: int = 1) -> GridCandidate:
        target = None
        if self.cfg.bpp is not None:
            room = math.floor(self.cfg.bpp * self.pixels / 8) - OVERHEAD_GROWTH * self._fixed
            target = max(RATE_AIM * room * 8 / self.pixels, 1e-3)
        start = time.perf_counter()
        model = fit(self.images, self.grid, target, self.deadline, self.cfg.progress, self.cfg.device)
        return GridCandidate(model, self.images, self.names, time.perf_counter() - start)

    def min_bytes(self) -> int:
        return math.ceil(OVERHEAD_GROWTH * self._fixed)

    def capacity_for(self, budget: int, bits_per_value: float) -> int:
        return 1

    def bits_per_value(self, cand: GridCandidate, setting) -> float:
        return (len(cand.pack(setting)) - self._fixed) * 8 / cand.n_values

    def label(self, capacity: int) -> str:
        g = self.grid
        return f"grid ({g.levels} levels, synthesis {'x'.join(map(str, g.widths))})"
