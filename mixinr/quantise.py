"""Putting a fitted network's weights on the grid of rate control's steps, losing as little as possible.

Incremental fine-tuning (docs/codec.md): the share `stages[0]` of each tensor's elements nearest their
grid is rounded and frozen and the rest retrained, then the next share, ...; then every element is
rounded one by one to whichever neighbour on the grid gives the group the lower loss (greedy, the ones
the last stage left free and farthest from their grid first), not simply the nearest: on CIFAR groups
at 2 and 4 bpp rounding the last free tenth to the nearest cost up to 0.44 dB, and the greedy choice won
back 0.05-0.27 (docs/rd.md, sixth session); reconsidering the frozen elements too gained a little more
(seventh and eighth sessions).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time

import torch
from torch import Tensor

from mixinr.model import MixtureSiren, using_threads
from mixinr.progress import Bar
from mixinr.devices import resolve_device
from mixinr.train import FitConfig, Targets, fit

MAX_LOSS_PIXELS = 1 << 17  # pixels the greedy choices are judged on (a regular sample beyond)
# Elements rounded greedily, the most ambiguous first (the rest stay nearest): one forward pass each, so a
# cap for large networks; CIFAR and quarter-size Kodak networks (under 7000 coded values) fit under it.
MAX_GREEDY = 8192


def rounded(p: Tensor, step: float) -> Tensor:
    """p on its grid: float32 division and round half to even, what entropy.quantise does."""
    s = torch.tensor(step, dtype=p.dtype)
    return torch.round(p.detach() / s) * s


def round_to_grid(model: MixtureSiren, steps: list[float]) -> MixtureSiren:
    """`model` with every coded value rounded to its step, in place."""
    with torch.no_grad():
        for p, step in zip(model.coded_params(), steps):
            p.copy_(rounded(p, step))
    return model


def on_grid(model: MixtureSiren, steps: list[float], fraction: float) -> list[tuple[Tensor, Tensor]]:
    """Per coded tensor: a mask of the `fraction` of its elements nearest their grid, and the tensor
    rounded to its step."""
    out = []
    for p, step in zip(model.coded_params(), steps):
        r = rounded(p, step)
        err = (p.detach() - r).abs().flatten()
        mask = torch.zeros(err.numel(), dtype=torch.bool)
        mask[torch.argsort(err, stable=True)[: round(fraction * err.numel())]] = True
        out.append((mask.view_as(p), r))
    return out


class GroupLoss:
    """The fit's objective of a model on (a regular sample of at most MAX_LOSS_PIXELS of) the group:
    the images' MSEs, image i's weighted by image_weights[i] (default 1)."""

    def __init__(self, images, image_weights=None, device=None):
        data = Targets(images, device or torch.device("cpu"))
        stride = max(1, math.ceil(data.n * data.pixels / MAX_LOSS_PIXELS))
        coords, self.rgb, mask = data.full(0, data.pixels)
        self.coords = coords[::stride] if coords.dim() == 2 else coords[:, ::stride]
        self.rgb = self.rgb[:, ::stride]
        self.mask = None if mask is None else mask[:, ::stride]
        count = self.rgb.shape[1] if mask is None else self.mask.sum(dim=(1, 2))
        w = torch.ones(data.n) if image_weights is None else torch.as_tensor(image_weights, dtype=torch.float32)
        self.scale = w.to(self.rgb.device) / (count * 3) / data.n

    def __call__(self, model: MixtureSiren) -> float:
        with torch.no_grad():
            err = (model(self.coords) - self.rgb).square()
            if self.mask is not None:
                err = err * self.mask
            return float(err.sum(dim=(1, 2)) @ self.scale)


def fine_tune(model: MixtureSiren, images, steps: list[float], cfg: FitConfig, stages,
              image_weights=None) -> tuple[MixtureSiren, float]:
    """(a copy of `model` with every coded value on its step's grid, on the CPU; seconds taken). cfg.epochs
    per stage; the greedy rounding runs on cfg's device, like the fit."""
    start = time.perf_counter()
    for k, fraction in enumerate(stages, 1):
        stage = dataclasses.replace(cfg, description=f"{cfg.description}, stage {k}/{len(stages)} "
                                                     f"({fraction:.0%} frozen)")
        model = fit(images, model.arch, stage, init=model, frozen=on_grid(model, steps, fraction)).model
    model = copy.deepcopy(model)
    floats = [p.detach().clone() for p in model.coded_params()]
    elements = ambiguous(floats, steps)
    round_to_grid(model, steps)
    device = resolve_device(cfg.device)
    # One forward pass per element: a minute or two on a 192x128 image, so it gets its own bar.
    with using_threads(cfg.threads), Bar(f"{cfg.description}, rounding [{device.type}]", len(elements),
                                         cfg.progress) as bar:
        greedy(model.to(device), floats, steps, elements, GroupLoss(images, image_weights, device),
               lambda done: bar.update(done, f"{done}/{len(elements)} values"))
    return model.cpu(), time.perf_counter() - start


def ambiguous(floats: list[Tensor], steps: list[float]) -> list[tuple[int, int]]:
    """(tensor, flat index) of the elements, nearest half a step from their grid first (elements already
    on it, such as the frozen ones, last), at most MAX_GREEDY of them (each costs a forward pass)."""
    order = []
    for t, (f, step) in enumerate(zip(floats, steps)):
        x = f.flatten() / step
        gap = ((x - torch.round(x)).abs() - 0.5).abs()
        order += [(g, t, i) for i, g in enumerate(gap.tolist())]
    order.sort()
    return [(t, i) for _, t, i in order[:MAX_GREEDY]]


def greedy(model: MixtureSiren, floats, steps, elements, loss, on_step=None) -> None:
    """Each of `elements` in turn moves from its nearest grid point to its other grid neighbour (the
    other side of its float value `floats`) where that lowers the loss. on_step(elements done) reports."""
    params = model.coded_params()
    best = loss(model)
    with torch.no_grad():
        for done, (t, i) in enumerate(elements, 1):
            flat, x = params[t].data.view(-1), floats[t].view(-1)[i].item()
            here = flat[i].clone()
            flat[i] = _moved(here, steps[t], -1 if here.item() > x else 1)
            trial = loss(model)
            if trial < best:
                best = trial
            else:
                flat[i] = here
            if on_step:
                on_step(done)


def _moved(value: Tensor, step: float, direction: int) -> Tensor:
    """The grid point `direction` (+1 or -1) steps from `value`'s, computed as `rounded` computes grids."""
    s = torch.tensor(step, dtype=value.dtype)
    return (torch.round(value / s) + direction) * s
