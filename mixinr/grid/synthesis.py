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

    def forward(self, feats: Tensor, index: int) -> Tensor:
        return run(self.layers(index), feats)


def image_layers(c: Tensor, weights, biases) -> list[tuple[Tensor, Tensor]]:
    """One image's layers [(W, b)] from its coefficient rows c (layers, K)."""
    return [(torch.einsum("k,koi->oi", cl, w), cl @ b) for cl, w, b in zip(c, weights, biases)]


def run(layers: list[tuple[Tensor, Tensor]], h: Tensor) -> Tensor:
    """(..., features) -> (..., 3)."""
    for j, (w, b) in enumerate(layers):
        h = torch.addmm(b, h.reshape(-1, h.shape[-1]), w.T).view(*h.shape[:-1], w.shape[0])
        if j < len(layers) - 1:
            h = torch.relu(h)
    return h
