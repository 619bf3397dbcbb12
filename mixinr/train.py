"""Fitting a mixture SIREN to a group of images (the encoder's expensive half).

The seed's schedule: Adam (lr 2e-4), CosineAnnealingWarmRestarts stepped once per epoch, one
full-batch step per epoch over every pixel of every image, the lowest-loss weights kept. Large
groups are processed in pixel chunks whose gradients accumulate into the same full-batch step, so
memory stays bounded without changing the maths.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from mixinr.metrics import psnr_from_mse
from mixinr.model import Arch, MixtureSiren, from_uint8, grid


@dataclass
class FitConfig:
    """How to fit. Defaults are the seed's Kodak/ImageNet schedule."""

    epochs: int = 5000
    lr: float = 2e-4
    t0: int = 500
    t_mult: int = 1
    eta_min: float = 5e-6
    coeffs: str = "linear"
    pixels_per_step: int | None = None  # None: full batch (the seed); else random pixels per image per step
    chunk_elems: int = 1 << 22  # images x pixels x width per chunk: bounds activation memory
    seed: int = 0
    device: str = "auto"
    progress: bool | None = None  # None: show a bar only on a terminal
    description: str = "fitting"


@dataclass
class FitResult:
    model: MixtureSiren  # holds the lowest-loss weights, on the CPU
    losses: list[float] = field(default_factory=list)  # training MSE ([-1, 1] scale) per epoch
    best_loss: float = math.inf
    best_epoch: int = -1
    seconds: float = 0.0
    device: str = "cpu"


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from mixinr.errors import MixinrError

        raise MixinrError("--device cuda: no CUDA device is available")
    return torch.device(device)


class _Targets:
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


def _sse(model, coords, rgb, mask) -> Tensor:
    err = (model(coords) - rgb).square()
    return (err * mask).sum() if mask is not None else err.sum()


def fit(images: list[np.ndarray], arch: Arch, cfg: FitConfig) -> FitResult:
    """Fit one mixture SIREN to `images` ((H, W, 3) uint8, sizes may differ). Seeded and reproducible."""
    if not images:
        raise ValueError("fit() needs at least one image")
    device = resolve_device(cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = MixtureSiren(arch, len(images), cfg.coeffs, generator=gen).to(device)
    data = _Targets(images, device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        opt, T_0=cfg.t0, T_mult=cfg.t_mult, eta_min=cfg.eta_min
    )
    chunk = max(256, cfg.chunk_elems // (data.n * arch.width))
    result = FitResult(model=model, device=str(device))
    best_state = None
    start = time.perf_counter()
    with _Progress(cfg, device) as bar:
        for epoch in range(cfg.epochs):
            opt.zero_grad(set_to_none=True)
            if cfg.pixels_per_step:
                coords, rgb, mask = data.sample(cfg.pixels_per_step, gen)
                loss = _sse(model, coords, rgb, mask) / rgb.numel()
                loss.backward()
                loss_value = loss.item()
            else:
                loss_value = 0.0
                for s in range(0, data.pixels, chunk):
                    part = _sse(model, *data.full(s, s + chunk)) / data.n_values
                    part.backward()
                    loss_value += part.item()
            result.losses.append(loss_value)
            if loss_value < result.best_loss:
                # The loss belongs to the weights before this step: keep those.
                result.best_loss, result.best_epoch = loss_value, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            opt.step()
            sched.step()
            bar.update(epoch, loss_value)
    result.seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    result.model = model.cpu()
    return result


class _Progress:
    """A rich bar (epoch, loss, PSNR estimate, ETA), refreshed a few hundred times at most."""

    def __init__(self, cfg: FitConfig, device):
        show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
        self.total, self.every = cfg.epochs, max(1, cfg.epochs // 200)
        self.bar = None
        if show:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn(f"{cfg.description} [{device.type}]"),
                BarColumn(),
                TextColumn("epoch {task.completed}/{task.total}"),
                TextColumn("loss {task.fields[loss]:.2e}  ~{task.fields[psnr]:.2f} dB"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )

    def __enter__(self):
        if self.bar:
            self.bar.start()
            self.task = self.bar.add_task("fit", total=self.total, loss=math.nan, psnr=0.0)
        return self

    def update(self, epoch: int, loss: float):
        if self.bar and ((epoch + 1) % self.every == 0 or epoch + 1 == self.total):
            self.bar.update(self.task, completed=epoch + 1, loss=loss, psnr=psnr_from_mse(loss))

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()
