"""Multi-resolution latent grids: image i's detail lives in `levels` single-channel grids, level l of
ceil(H / 2^l) x ceil(W / 2^l) values. Each is interpolated bilinearly to the output size and the
stack feeds the synthesis, so an image decodes at any resolution (C3, Cool-chic; docs/photo.md)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def level_shapes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """(rows, cols) of every level, finest first."""
    return [(math.ceil(height / 2**l), math.ceil(width / 2**l)) for l in range(levels)]


def interp_taps(n_out: int, n_in: int) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear taps along one axis, samples at pixel centres (torch's align_corners=False, edges
    clamped): output j = (1 - frac[j]) * in[lo[j]] + frac[j] * in[hi[j]]."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(0, n_in - 1)
    lo = src.floor().long().clamp(max=n_in - 1)
    return lo, (lo + 1).clamp(max=n_in - 1), (src - lo).float()


def columns(grids: list[Tensor], width: int) -> list[Tensor]:
    """Every level interpolated along its rows to `width` columns (the first half of upsample)."""
    out = []
    for g in grids:
        if g.shape[1] != width:
            lo, hi, f = interp_taps(width, g.shape[1])
            g = g[:, lo] * (1 - f) + g[:, hi] * f
        out.append(g)
    return out


def rows_of(cols: list[Tensor], height: int, rows: slice = slice(None)) -> Tensor:
    """(rows, width, levels): the column-interpolated levels interpolated to `height`, only `rows`."""
    feats = []
    for g in cols:
        if g.shape[0] != height:
            lo, hi, f = (t[rows] for t in interp_taps(height, g.shape[0]))
            g = g[lo] * (1 - f)[:, None] + g[hi] * f[:, None]
        else:
            g = g[rows]
        feats.append(g)
    return torch.stack(feats, dim=-1)


def upsample(grids: list[Tensor], height: int, width: int, rows: slice = slice(None)) -> Tensor:
    """(rows, width, levels) features: every level interpolated to height x width, only output `rows`.
    Element-wise taps, no matmul, so a band of rows is bit-identical to the same rows of the whole
    frame: the decoder renders in bands what the encoder measured on the full image."""
    return rows_of(columns(grids, width), height, rows)


def upsample_frame(grids: list[Tensor], height: int, width: int) -> Tensor:
    """(levels, height, width): upsample() of the whole frame through torch's bilinear interpolation,
    channels first: the same values to float rounding (tests/test_grid.py), several times faster to
    differentiate; the fit uses it."""
    feats = [g if g.shape == (height, width) else
             F.interpolate(g[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
             for g in grids]
    return torch.stack(feats)
