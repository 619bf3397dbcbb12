"""The mixture SIREN.

A group of N images shares K weight sets theta_1..theta_K. Image i is decoded by the SIREN whose
every weight and bias is theta_i = sum_k C[i, k] theta_k:

    h_1 = sin(omega_first * (x W_1^T + b_1))        x = (row, col) in [-1, 1]^2
    h_l = sin(omega * (h_{l-1} W_l^T + b_l))         l = 2..L
    rgb = h_L W_out^T + b_out                         (linear last layer, output in [-1, 1])

Training evaluates all N images at once: weights are mixed with one einsum per layer and each layer
is one batched matmul over the image axis. The first layer's pre-activation is linear in theta and
its input is the same for every image, so it is computed once per weight set (K times, not N) and
mixed afterwards.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mixinr.bitstream import IMPLICIT_OMEGA, layer_shapes, params_for
from mixinr.bitstream import SCHEMES as COEFF_SCHEMES  # the file format's list is the one definition


@dataclass(frozen=True)
class Arch:
    """Network shape: `depth` sine layers of `width` units, then a linear RGB layer."""

    depth: int
    width: int
    sets: int = 2  # the seed's K
    omega: float = IMPLICIT_OMEGA  # the seed's omega (the encoder's own default is settings.ENCODER_OMEGA)
    omega_first: float = IMPLICIT_OMEGA

    def __post_init__(self):
        if self.depth < 1 or self.width < 1 or self.sets < 1:
            raise ValueError(f"depth, width and sets must be >= 1, got {self}")

    def shapes(self) -> list[tuple[int, int]]:
        """(out, in) of every layer's weight matrix, first to last."""
        return layer_shapes(self.depth, self.width)

    def params_per_set(self) -> int:
        """Weights and biases of one set (bitstream.params_for)."""
        return params_for(self.depth, self.width, 1)


def linear_coefficients(n: int, k: int) -> Tensor:
    """N x K coefficients spreading images evenly along the chain of sets 0 -> 1 -> ... -> K-1.

    For K = 2 this is the seed's alpha_i = 1 - i/(N-1), beta_i = i/(N-1). N = 1 (or K = 1) uses set 0.
    """
    c = torch.zeros(n, k)
    if n == 1 or k == 1:
        c[:, 0] = 1.0
        return c
    t = torch.arange(n, dtype=torch.float64) * (k - 1) / (n - 1)
    lo = t.floor().clamp(max=k - 2).long()
    frac = (t - lo).float()
    rows = torch.arange(n)
    c[rows, lo] = 1.0 - frac
    c[rows, lo + 1] = frac
    return c


def grid(height: int, width: int, device=None) -> Tensor:
    """(H*W, 2) (row, col) coordinates, each axis linspace(-1, 1), row-major like the image."""
    r = torch.linspace(-1.0, 1.0, height, device=device)
    c = torch.linspace(-1.0, 1.0, width, device=device)
    return torch.stack(torch.meshgrid(r, c, indexing="ij"), dim=-1).reshape(-1, 2)


class MixtureSiren(nn.Module):
    """K weight sets (the trained parameters) and an N x K coefficient matrix."""

    def __init__(self, arch: Arch, n_images: int, coeffs: str = "linear", generator=None):
        super().__init__()
        if coeffs not in COEFF_SCHEMES:
            raise ValueError(f"coefficient scheme must be one of {COEFF_SCHEMES}, got {coeffs!r}")
        if n_images < 1:
            raise ValueError("a group needs at least one image")
        self.arch, self.n_images, self.scheme = arch, n_images, coeffs
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        shapes = arch.shapes()
        for layer, (fan_out, fan_in) in enumerate(shapes):
            if layer == 0:
                w_bound = 1.0 / fan_in
            elif layer < len(shapes) - 1:
                w_bound = math.sqrt(6.0 / fan_in) / arch.omega
            else:
                w_bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default (kaiming_uniform, a=sqrt(5))
            b_bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default bias
            self.weights.append(nn.Parameter(_uniform((arch.sets, fan_out, fan_in), w_bound, generator)))
            self.biases.append(nn.Parameter(_uniform((arch.sets, fan_out), b_bound, generator)))
        c = linear_coefficients(n_images, arch.sets)
        if coeffs == "per-layer":
            c = c.repeat(len(shapes), 1, 1)  # (L+1, N, K)
        if coeffs == "linear":
            self.register_buffer("coeffs", c)
        else:
            self.coeffs = nn.Parameter(c)

    def coded_params(self) -> list[nn.Parameter]:
        """The parameters an archive codes, in file order: W_0, b_0, W_1, b_1, ..., then the learned
        coefficients (N, K) or (L+1, N, K)."""
        params = [t for pair in zip(self.weights, self.biases) for t in pair]
        return params + ([self.coeffs] if self.scheme != "linear" else [])

    def layer_coeffs(self) -> Tensor:
        """(L+1, N, K): the rows each layer mixes with (one shared matrix unless per-layer)."""
        return layer_coeffs(self.coeffs, self.arch.depth + 1)

    def image_layers(self, index: int) -> list[tuple[Tensor, Tensor]]:
        """Image `index`'s own SIREN: [(W, b)] with theta_i = sum_k C[i, k] theta_k."""
        return image_layers(self.layer_coeffs()[:, index], self.weights, self.biases)

    def forward(self, coords: Tensor) -> Tensor:
        """RGB in [-1, 1] of every image: coords (P, 2) shared by all, or (N, P, 2) per image -> (N, P, 3)."""
        c0 = self.layer_coeffs()[0]
        return forward_mixed(coords, self.arch, c0, self.weights[0], self.biases[0], self.mixed_layers())

    def mixed_layers(self) -> list[tuple[Tensor, Tensor]]:
        """Per-image weights (N, out, in) and biases (N, out) of every layer after the first.

        The first layer stays per set: its input is shared, so it is evaluated K times and mixed after.
        Fitting mixes once per epoch and reuses the result for every pixel chunk.
        """
        return mix_layers(self.layer_coeffs()[1:], self.weights[1:], self.biases[1:])


def forward_mixed(coords: Tensor, arch: Arch, c: Tensor, w0: Tensor, b0: Tensor,
                  mixed: list[tuple[Tensor, Tensor]]) -> Tensor:
    """The batched SIREN given the first layer's K sets (w0, b0) and the other layers already mixed."""
    if coords.dim() == 2:
        # Shared input: K pre-activations, then mix them (linear in theta, so exact).
        om = arch.omega_first
        zk = torch.baddbmm(b0.unsqueeze(1), coords.expand(arch.sets, -1, -1), w0.transpose(1, 2), beta=om, alpha=om)
        h = torch.sin((c @ zk.flatten(1)).view(c.shape[0], coords.shape[0], arch.width))
    else:
        h = _sine(coords, *mix(c, w0, b0), arch.omega_first)
    for w, b in mixed[:-1]:
        h = _sine(h, w, b, arch.omega)
    w, b = mixed[-1]
    return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))


def layer_coeffs(c: Tensor, layers: int) -> Tensor:
    """Coefficients (N, K), or (L+1, N, K) per layer, as (L+1, N, K)."""
    return c if c.dim() == 3 else c.expand(layers, -1, -1)


def image_layers(c: Tensor, weights, biases) -> list[tuple[Tensor, Tensor]]:
    """One image's SIREN [(W, b)] from its coefficients c: (L+1, K), a row per layer, and the per-set tensors."""
    return [(torch.einsum("k,koi->oi", cl, w), cl @ b) for cl, w, b in zip(c, weights, biases)]


def mix_layers(c: Tensor, weights, biases) -> list[tuple[Tensor, Tensor]]:
    """Every image's weights and biases of each layer, layer l mixed with c[l] (N, K)."""
    return [mix(cl, w, b) for cl, w, b in zip(c, weights, biases)]


def mix(c: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Every image's weights (N, out, in) and biases (N, out) of one layer: sum_k C[i, k] theta_k."""
    return torch.einsum("nk,koi->noi", c, w), c @ b


def _sine(h: Tensor, wn: Tensor, bn: Tensor, omega: float) -> Tensor:
    # baddbmm's beta/alpha apply omega inside the fused kernel: sin(omega*b + omega*h W^T).
    return torch.sin(torch.baddbmm(bn.unsqueeze(1), h, wn.transpose(1, 2), beta=omega, alpha=omega))


def _uniform(shape, bound: float, generator) -> Tensor:
    return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * bound


def render(layers, arch: Arch, height: int, width: int, chunk: int = 2048) -> Tensor:
    """Decode one image's SIREN `layers` [(W, b)] on an H x W grid, `chunk` pixels at a time.

    Returns float RGB (H, W, 3) in the network's [-1, 1] scale. Memory stays O(chunk * width)
    whatever the output size; the default chunk keeps a layer's activations (2048 x 112 floats,
    under 1 MB) in cache, and two buffers are reused for every layer and chunk.
    """
    device = layers[0][0].device
    with using_threads(auto_threads(device, chunk * layers[0][0].shape[0] ** 2)):
        return _render(layers, arch, height, width, chunk, device)


def _render(layers, arch: Arch, height: int, width: int, chunk: int, device) -> Tensor:
    out = torch.empty(height * width, 3, device=device)
    coords = grid(height, width, device=device)
    widest = max(w.shape[0] for w, _ in layers[:-1]) if len(layers) > 1 else 1
    bufs = [torch.empty(min(chunk, coords.shape[0]) * widest, device=device) for _ in range(2)]
    with torch.no_grad():
        for start in range(0, coords.shape[0], chunk):
            h = coords[start : start + chunk]
            rows = h.shape[0]
            for layer, (w, b) in enumerate(layers[:-1]):
                omega = arch.omega_first if layer == 0 else arch.omega
                nxt = bufs[layer % 2][: rows * w.shape[0]].view(rows, w.shape[0])
                torch.addmm(b, h, w.T, beta=omega, alpha=omega, out=nxt)
                h = nxt.sin_()
            w, b = layers[-1]
            torch.addmm(b, h, w.T, out=out[start : start + chunk])
    return out.view(height, width, 3)


def auto_threads(device, chunk_work: int, requested: int | None = None) -> int | None:
    """CPU threads for a run whose matmuls are `chunk_work` multiply-adds each; None: leave torch's own.

    One thread when the machine is already busy (load average near the core count): OpenMP threads
    waiting on descheduled siblings made steps 5-20x slower on a shared 2-core CPU. One thread too when
    each matmul is too small to share. Never anything on CUDA.
    """
    if device.type != "cpu":
        return None
    if requested:
        return requested
    cores = os.cpu_count() or 1
    busy = hasattr(os, "getloadavg") and os.getloadavg()[0] > cores - 0.5
    return 1 if busy or chunk_work < 1 << 22 else None


@contextmanager
def using_threads(n: int | None):
    """torch's intra-op thread count set to `n` (None: unchanged) inside, restored after."""
    saved = torch.get_num_threads()
    if n and n != saved:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != saved:
            torch.set_num_threads(saved)


def to_uint8(rgb: Tensor) -> Tensor:
    """[-1, 1] float -> 8-bit, rounded (the seed truncated; rounding is the correct quantiser)."""
    return ((rgb.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def from_uint8(img) -> Tensor:
    """8-bit (H, W, 3) array or tensor -> float [-1, 1]."""
    return torch.from_numpy(np.array(img, dtype=np.float32)) / 127.5 - 1.0
