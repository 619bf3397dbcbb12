"""The synthesis: a small per-pixel MLP from the latent features to RGB, whose every weight and bias
is a mixture of K shared sets with the image's own coefficients, theta_i = sum_k C[l, i, k] theta_k
per layer l (the SIREN's per-layer scheme). ReLU between layers, linear output in [0, 1]. With `kernel` k
over 1 the first layer reads every feature's k x k neighbourhood of output pixels (edges replicated): a
k x k convolution, Cool-chic's spatial synthesis layers reduced to one (docs/photo.md)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixinr.grid.format import layer_shapes
from mixinr.grid.latents import rows_of


class MixtureSynthesis(nn.Module):
    def __init__(self, features: int, widths: tuple[int, ...], sets: int, n_images: int, generator=None,
                 kernel: int = 1):
        super().__init__()
        self.kernel = kernel
        self.shapes = layer_shapes(features, widths, kernel)
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
        """(H, W, features) of a whole frame -> (H, W, 3); the first layer as a convolution (training)."""
        layers = self.layers(index)
        if self.kernel == 1:
            return run(layers, feats)
        (w, b), rest, p = layers[0], layers[1:], self.kernel // 2
        x = F.pad(feats.permute(2, 0, 1)[None], (p, p, p, p), mode="replicate")
        h = F.conv2d(x, w.view(w.shape[0], feats.shape[-1], self.kernel, self.kernel), b)[0].permute(1, 2, 0)
        return run(rest, torch.relu(h)) if rest else h


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


def band_features(cols: list[Tensor], height: int, rows: slice, kernel: int) -> Tensor:
    """The first layer's input for output `rows` (latents.columns' `cols` interpolated to `height`): the
    features themselves, or with `kernel` k each pixel's k x k neighbourhood in the first layer's weight order
    (feature, row offset, column offset), image edges replicated, as MixtureSynthesis.forward's convolution
    reads them; a band of rows gets the same values as the whole frame."""
    if kernel == 1:
        return rows_of(cols, height, rows)
    p = kernel // 2
    lo, hi = max(0, rows.start - p), min(height, rows.stop + p)
    x = rows_of(cols, height, slice(lo, hi))[torch.arange(rows.start - p, rows.stop + p).clamp(0, height - 1) - lo]
    x = torch.cat([x[:, :1].expand(-1, p, -1), x, x[:, -1:].expand(-1, p, -1)], dim=1)
    n, width = rows.stop - rows.start, x.shape[1] - 2 * p
    taps = [x[dy : dy + n, dx : dx + width] for dy in range(kernel) for dx in range(kernel)]
    return torch.stack(taps, dim=-1).reshape(n, width, -1)
