"""The synthesis: a small per-pixel MLP from the latent features to RGB, whose every weight and bias
is a mixture of K shared sets with the image's own coefficients, theta_i = sum_k C[l, i, k] theta_k
per layer l (the SIREN's per-layer scheme). ReLU between layers, linear output in [0, 1]."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mixinr.grid.format import layer_shapes


class MixtureSynthesis(nn.Module):
    def __init__(self, features: int, widths: tuple[int, ...], sets: int, n_images: int, generator=None):
        super().__init__()
        self.shapes = layer_shapes(features, widths)
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for out, inp in self.shapes:
            bound = 1.0 / math.sqrt(inp)  # nn.Linear's default, per set
            self.weights.append(nn.Parameter((torch.rand((sets, out, inp), generator=generator) * 2 - 1) * bound))
            self.biases.append(nn.Parameter((torch.rand((sets, out), generator=generator) * 2 - 1) * bound))
        # Every image starts as the mean of the sets; the coefficients train (one row per layer).
        self.coeffs = nn.Parameter(torch.full((len(self.shapes), n_images, sets), 1.0 / sets))

    def coded_params(self) -> list[Tensor]:
        """File order: W_0, b_0, W_1, b_1, ..., then the coefficients (layers, N, K)."""
        return [t for pair in zip(self.weights, self.biases) for t in pair] + [self.coeffs]

    def layers(self, index: int) -> list[tuple[Tensor, Tensor]]:
        return image_layers(self.coeffs[:, index], list(self.weights), list(self.biases))

    def forward(self, planes: Tensor, index: int) -> Tensor:
        """(features, H, W) -> (3, H, W): image `index`'s MLP channels first, as the fit runs it."""
        return run_planes(self.layers(index), planes)


def image_layers(c: Tensor, weights, biases) -> list[tuple[Tensor, Tensor]]:
    """One image's layers [(W, b)] from its coefficient rows c (layers, K)."""
    return [(torch.einsum("k,koi->oi", cl, w), cl @ b) for cl, w, b in zip(c, weights, biases)]


def run(layers: list[tuple[Tensor, Tensor]], h: Tensor) -> Tensor:
    """(..., features) -> (..., 3): the decoder's layout, a band of rows at a time."""
    for j, (w, b) in enumerate(layers):
        h = torch.addmm(b, h.reshape(-1, h.shape[-1]), w.T).view(*h.shape[:-1], w.shape[0])
        if j < len(layers) - 1:
            h = torch.relu(h)
    return h


def run_planes(layers: list[tuple[Tensor, Tensor]], planes: Tensor) -> Tensor:
    """(features, ...) -> (3, ...): run() with the pixels on the long axis of each matmul, the same values
    to float rounding, faster to differentiate (the synthesis' forward and backward ~1.5x; docs/photo.md)."""
    h = planes.reshape(planes.shape[0], -1)
    for j, (w, b) in enumerate(layers):
        h = torch.addmm(b[:, None], w, h)
        if j < len(layers) - 1:
            h = torch.relu(h)
    return h.view(-1, *planes.shape[1:])
