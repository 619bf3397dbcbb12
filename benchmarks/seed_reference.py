"""The seed's formulation, restated faithfully: the baseline that `train_speed.py` compares against.

What the seed's released code does per epoch (METHOD.md):
- two weight sets theta_A, theta_B (K = 2), each a plain SIREN (nn.Linear layers, sine activations);
- for every image i, a separate parameter dict theta_i = alpha_i * theta_A + beta_i * theta_B with
  beta_i = i / (N - 1), alpha_i = 1 - beta_i, built tensor by tensor;
- the SIREN run separately on image i's full coordinate grid with that dict (Python loop over images,
  no batching, no chunking, the first layer recomputed for every image);
- the per-image MSEs combined into one loss (mean over all pixels, images and channels), one
  full-batch Adam step, CosineAnnealingWarmRestarts stepped once per epoch, best loss tracked.

Nothing here is optimised on purpose: it is the thing being measured against.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call


class Sine(nn.Module):
    def __init__(self, omega: float):
        super().__init__()
        self.omega = omega

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.omega * x)


def siren(depth: int, width: int, omega: float = 30.0, omega_first: float = 30.0) -> nn.Sequential:
    """`depth` Linear+Sine layers of `width`, then a linear RGB layer, with the SIREN initialisation."""
    layers: list[nn.Module] = []
    fan_in = 2
    for layer in range(depth):
        lin = nn.Linear(fan_in, width)
        with torch.no_grad():
            bound = 1.0 / fan_in if layer == 0 else math.sqrt(6.0 / fan_in) / omega
            lin.weight.uniform_(-bound, bound)
        layers += [lin, Sine(omega_first if layer == 0 else omega)]
        fan_in = width
    layers.append(nn.Linear(fan_in, 3))
    return nn.Sequential(*layers)


class SeedMixture(nn.Module):
    """theta_A and theta_B as two independent SIRENs; images decoded with theta_i = a_i A + b_i B."""

    def __init__(self, depth: int, width: int, n_images: int):
        super().__init__()
        self.net_a, self.net_b = siren(depth, width), siren(depth, width)
        self.n = n_images

    def coefficients(self, i: int) -> tuple[float, float]:
        beta = i / (self.n - 1) if self.n > 1 else 0.0
        return 1.0 - beta, beta

    def params_for(self, i: int) -> dict[str, Tensor]:
        alpha, beta = self.coefficients(i)
        pb = dict(self.net_b.named_parameters())
        return {name: alpha * p + beta * pb[name] for name, p in self.net_a.named_parameters()}

    def forward_image(self, i: int, coords: Tensor) -> Tensor:
        return functional_call(self.net_a, self.params_for(i), (coords,))


class SeedTrainer:
    """One full-batch epoch per `step()`, exactly the seed's loop body."""

    def __init__(self, images: Tensor, depth: int, width: int, lr: float = 2e-4, t0: int = 1000,
                 eta_min: float = 5e-6, seed: int = 0):
        """images: (N, H, W, 3) float in [-1, 1]."""
        torch.manual_seed(seed)
        n, h, w, _ = images.shape
        self.model = SeedMixture(depth, width, n)
        r, c = torch.linspace(-1, 1, h), torch.linspace(-1, 1, w)
        self.coords = torch.stack(torch.meshgrid(r, c, indexing="ij"), -1).reshape(-1, 2)
        self.targets = images.reshape(n, -1, 3)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(self.opt, T_0=t0, eta_min=eta_min)
        self.best_loss = math.inf
        self.best_state = None

    def step(self) -> float:
        self.opt.zero_grad()
        loss = 0.0
        for i in range(self.model.n):
            out = self.model.forward_image(i, self.coords)
            loss = loss + ((out - self.targets[i]) ** 2).mean()
        loss = loss / self.model.n
        loss.backward()
        value = loss.item()
        if value < self.best_loss:
            self.best_loss = value
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.opt.step()
        self.sched.step()
        return value

    def best_images(self) -> Tensor:
        """(N, P, 3) reconstructions with the lowest-loss weights, fp16-stored like the seed's 'half'."""
        model = SeedMixture(len(self.model.net_a) // 2, self.model.net_a[0].out_features, self.model.n)
        model.load_state_dict({k: v.half().float() for k, v in self.best_state.items()})
        with torch.no_grad():
            return torch.stack([model.forward_image(i, self.coords) for i in range(model.n)])
