"""The latents' entropy model: every level of every image is coded as integers q ~ a quantised Laplace
of mean 0 whose scale is fitted to that level's symbols (constriction's range coder). During fitting
the same model, with a trainable scale, gives the rate term of the loss (docs/photo.md)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

import constriction

from mixinr.entropy import RangeEncoder, decoder, stream_bytes
from mixinr.grid.format import MIN_SCALE  # the format's bound on symbols per byte rests on it

QuantizedLaplace = constriction.stream.model.QuantizedLaplace

MIN_PROB = 1e-9  # floor of a symbol's probability in the training rate (its gradient stays finite)


def laplace_bits(y: Tensor, scale: Tensor) -> Tensor:
    """Bits of y (noisy or rounded latents, symbol units) under the quantised Laplace(0, scale): the sum
    of -log2 P(q - 1/2 < Y < q + 1/2)."""
    def cdf(v):
        return 0.5 - 0.5 * torch.sign(v) * torch.expm1(-v.abs() / scale)
    return -torch.log2((cdf(y + 0.5) - cdf(y - 0.5)).clamp_min(MIN_PROB)).sum()


SCALE_GRID = np.exp(np.linspace(np.log(MIN_SCALE), np.log(4096.0), 400))  # ~2.8% apart: < 0.05% of the bits


def fitted_scale(q: np.ndarray) -> float:
    """The scale under which the quantised Laplace (mean 0) codes a level's symbols shortest, float16-exact
    (the header stores it). mean|q|, the continuous Laplace's MLE, is far off for the mostly-zero fine
    levels (up to 1.8x their bits on Kodak at 128x192; docs/photo.md, "Context model")."""
    if not q.size:
        return float(np.float16(MIN_SCALE))
    a = np.abs(q.astype(np.float64)).ravel()
    zeros, nonzero = float((a == 0).sum()), float((a > 0).sum())
    excess = float(a.sum()) - nonzero  # sum of |q| - 1 over the nonzero symbols
    t = np.exp(-1.0 / SCALE_GRID)  # P(0) = 1 - sqrt(t), P(k) = sqrt(t) (1 - t) t^(|k| - 1) / 2
    loglik = (zeros * np.log1p(-np.sqrt(t)) + nonzero * (np.log(0.5) + 0.5 * np.log(t) + np.log1p(-t))
              + excess * np.log(t))
    return float(np.float16(SCALE_GRID[int(np.argmax(loglik))]))


def _model(bound: int, scale: float):
    return QuantizedLaplace(-bound, bound, 0.0, scale)


def encode(symbols: list[np.ndarray], scales: list[float], bounds: list[int]) -> bytes:
    """One range-coded stream of every level in order (each with its own scale and alphabet bound)."""
    enc = RangeEncoder()
    for q, s, b in zip(symbols, scales, bounds):
        if q.size and b:
            enc.encode(np.ascontiguousarray(q.ravel(), dtype=np.int32), _model(b, s))
    return stream_bytes(enc)


def decode(data: bytes, counts: list[int], scales: list[float], bounds: list[int]) -> list[np.ndarray]:
    """Inverse of encode: the symbols of every level (flat int32). Corrupt input gives garbage, never a hang."""
    dec = decoder(data)
    out = []
    for n, s, b in zip(counts, scales, bounds):
        out.append(np.asarray(dec.decode(_model(b, s), n), np.int32) if n and b else np.zeros(n, np.int32))
    return out
