"""Context model of the latents (docs/photo.md, "Context model"): each latent's quantised Laplace gets
its own mean and scale, predicted by a tiny MLP (shared by the group) from values already decoded.

Decoding order per image: coarsest level first, each level in two passes, the checkerboard's anchors
((r + c) even) then the others (He et al. 2021). Every position's features are the next coarser level
bilinearly upsampled to this level's grid (its 3x3 neighbourhood, zero-padded), its 4 same-level
neighbours with the non-anchors zeroed (so an anchor sees zeros there, a non-anchor its 4 anchors) and
an anchor flag; all inputs are divided by their level's scale s (per image and level), the outputs give
mu = s * o0 and b = s * (MIN_REL + |o1|). So a level decodes in two vectorised range-coder calls.

Residual quantisation (the default since the sixteenth session; format flag 4): a latent is its mean plus
a whole number of latent steps, y = mu + step * q, q coded under Laplace(0, b), rather than q * step
coded under Laplace(mu, b). The fit's uniform noise then stands for what rounding does to every latent;
with whole-step latents the fit found non-whole means that its noisy rate found cheap and rounding did not
(docs/photo.md, "Latents around their context means").

Encoder and decoder compute the parameters with `exact=True`: element-wise float32 multiplies and adds in
a fixed order (no matmul, no exp, no reduction whose order a BLAS or a CPU's vector width could change),
from the same integers, so both see bit-identical models. Training computes the same MLP as two
convolutions over the whole level (the same values to float rounding, faster: docs/photo.md)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixinr.grid.format import CONTEXT_FEATURES, MAX_BOUND, MIN_SCALE, context_shapes
from mixinr.grid.latents import level_shapes, upsample, upsample_frame
from mixinr.entropy import RangeEncoder, decoder, dequantise, quantise, stream_bytes
from mixinr.grid.prior import QuantizedLaplace, laplace_bits

FEATURES = CONTEXT_FEATURES  # 9 coarser-level values, 4 same-level neighbours, the non-anchor flag
MIN_REL = 0.02  # the smallest scale as a share of the level's scale (the format's MIN_SCALE still binds)
MAX_SCALE = 1e4  # symbol units: keeps a corrupt archive's parameters finite for the coder
HEADER_SCALE_MAX = 60000.0  # the largest per-level scale a header stores (float16's range)
BAND_POSITIONS = 1 << 16  # the coder's MLP runs on this many positions at once (~100 bytes each), whatever a file declares


def anchors(rows: int, cols: int, device=None) -> Tensor:
    """(rows, cols) bool, True where (r + c) is even: the first pass of a level."""
    return (torch.arange(rows, device=device)[:, None] + torch.arange(cols, device=device)[None, :]) % 2 == 0


def _linear(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """(in, n) -> (out, n), positions contiguous, one multiply and one add per input always in this order
    (each output element's own sequence of float32 operations)."""
    out = b[:, None].repeat(1, x.shape[1])
    for i in range(w.shape[1]):
        out += x[i][None, :] * w[:, i][:, None]
    return out


def _inputs(coarse: Tensor | None, cur: Tensor, mask: Tensor, s: Tensor, s_coarse: Tensor | None,
            exact: bool) -> tuple[Tensor, Tensor]:
    """The two zero-padded (rows + 2, cols + 2) maps the features are read from: the next coarser level
    upsampled to this level's grid, and this level's anchors (others zeroed), each over its level's scale."""
    rows, cols = cur.shape
    if coarse is None:
        up = cur.new_zeros(rows, cols)
    else:
        up = (upsample([coarse], rows, cols)[..., 0] if exact else upsample_frame([coarse], rows, cols)[0]) / s_coarse
    a = torch.where(mask, cur, cur.new_zeros(())) / s
    return F.pad(up, (1, 1, 1, 1)), F.pad(a, (1, 1, 1, 1))


def _features(up: Tensor, a: Tensor, mask: Tensor, r0: int, r1: int) -> Tensor:
    """(FEATURES, r1 - r0, cols): every position of rows r0..r1's features, the coarser level's 3x3
    neighbourhood, the 4 same-level neighbours (up, down, left, right), the non-anchor flag."""
    cols = mask.shape[1]
    feats = [up[r0 + i : r1 + i, j : j + cols] for i in range(3) for j in range(3)]
    feats += [a[r0:r1, 1:-1], a[r0 + 2 : r1 + 2, 1:-1], a[r0 + 1 : r1 + 1, 0:cols], a[r0 + 1 : r1 + 1, 2:]]
    feats.append((~mask[r0:r1]).to(up.dtype))
    return torch.stack(feats)


def _mu_b(o0: Tensor, o1: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    return s * o0, s * (MIN_REL + o1.abs())


def level_params(params: list[Tensor], coarse: Tensor | None, cur: Tensor, mask: Tensor, s: Tensor,
                 s_coarse: Tensor | None, exact: bool) -> tuple[Tensor, Tensor]:
    """(mu, b) of every position of a (rows, cols) level, latent units. `coarse`: the next coarser
    level's values (None at the coarsest); `cur`: this level's values, only the anchors' are read."""
    rows, cols = cur.shape
    up, a = _inputs(coarse, cur, mask, s, s_coarse, exact)
    if exact:
        o = _mlp(params, _features(up, a, mask, 0, rows).view(FEATURES, -1)).view(2, rows, cols)
    else:
        o = _conv_mlp(params, up, a, mask)
    return _mu_b(o[0], o[1], s)


# Where each same-level neighbour's weight sits in a 3x3 kernel (up, down, left, right: _features' order).
_CROSS = [1, 7, 3, 5]


def _conv_mlp(params: list[Tensor], up: Tensor, a: Tensor, mask: Tensor) -> Tensor:
    """The MLP over every position at once as two convolutions (training): the first layer is a linear map
    of shifted maps, i.e. a 3x3 convolution of (coarser level, anchors, flag) whose anchor kernel is the
    cross and flag kernel the centre. The same values as _features + _mlp to float rounding (tests), without
    stacking FEATURES copies of the level (a full-size fit step 0.35 -> 0.28 s; docs/photo.md).
    `up`, `a`: _inputs' padded maps."""
    w1, b1, w2, b2 = params
    k = w1.new_zeros(w1.shape[0], 3, 9)
    k[:, 0] = w1[:, :9]
    k[:, 1, _CROSS] = w1[:, 9:13]
    k[:, 2, 4] = w1[:, 13]
    flag = F.pad((~mask).to(up.dtype), (1, 1, 1, 1))
    h = torch.relu(F.conv2d(torch.stack([up, a, flag])[None], k.view(-1, 3, 3, 3), b1))
    return F.conv2d(h, w2[:, :, None, None], b2)[0]


def _mlp(params: list[Tensor], x: Tensor) -> Tensor:
    """FEATURES -> hidden -> 2, ReLU between: (FEATURES, n) in, (2, n) out, element-wise (exact)."""
    w1, b1, w2, b2 = params
    return _linear(torch.relu(_linear(x, w1, b1)), w2, b2)


def _bands(rows: int, cols: int, positions: int) -> list[tuple[int, int]]:
    step = max(1, positions // max(cols, 1))
    return [(r, min(r + step, rows)) for r in range(0, rows, step)]


def _pass(params, up, a, mask, s, step32, bound, anchors_pass: bool, positions: int = BAND_POSITIONS):
    """One pass (anchors, or the others) of a level, band by band of rows, in the coder's order (row-major):
    yields (flat slice of the level, that band's selected positions, coder means, coder scales)."""
    cols = mask.shape[1]
    for r0, r1 in _bands(*mask.shape, positions):
        m = mask[r0:r1].reshape(-1)
        sel = m if anchors_pass else ~m
        if not bool(sel.any()):
            continue
        o = _mlp(params, _features(up, a, mask, r0, r1).view(FEATURES, -1)[:, sel])
        mu, b = _symbol_params(*_mu_b(o[0], o[1], s), step32, bound)
        yield slice(r0 * cols, r1 * cols), sel.numpy(), mu, b


class ContextModel(nn.Module):
    """The MLP's weights (trained with the latents; stored in the archive after the synthesis')."""

    def __init__(self, hidden: int, generator=None):
        super().__init__()
        shapes = context_shapes(hidden)
        w1 = (torch.rand(shapes[0], generator=generator) * 2 - 1) / FEATURES**0.5
        w2 = (torch.rand(shapes[2], generator=generator) * 2 - 1) * 0.01  # starts near Laplace(0, s)
        self.w1, self.b1 = nn.Parameter(w1), nn.Parameter(torch.zeros(hidden))
        self.w2, self.b2 = nn.Parameter(w2), nn.Parameter(torch.tensor([0.0, 1.0]))

    def coded_params(self) -> list[Tensor]:
        return [self.w1, self.b1, self.w2, self.b2]

    def freeze_as_coded(self, bits: int) -> None:
        """The MLP's weights as the archive will store them (`bits`-bit symbols), no longer trained: with
        residual quantisation the means decide the latents, so the rounded phase trains the synthesis on
        the means the coder will compute (to float rounding), not on the float MLP's."""
        with torch.no_grad():
            for p in self.parameters():
                q, step = quantise(p.detach().cpu().numpy(), bits)
                p.copy_(torch.from_numpy(dequantise(q, step)))
                p.requires_grad_(False)

    def quantise(self, latents: list[Tensor], scales: Tensor) -> tuple[list[Tensor], Tensor]:
        """Residual quantisation as the coder does it, for training: coarsest level first, anchors then the
        others, each latent rounded around its mean from what is already quantised, y_hat = mu + round(y - mu)
        (straight-through). Returns the y_hat (finest first) and their bits."""
        params, n = self.coded_params(), len(latents)
        hats: list = [None] * n
        total = latents[0].new_zeros(())
        for l in reversed(range(n)):
            y, coarse = latents[l], hats[l + 1] if l + 1 < n else None
            s_c = scales[l + 1] if coarse is not None else None
            mask = anchors(*y.shape, y.device)
            mu_a, b_a = level_params(params, coarse, torch.zeros_like(y), mask, scales[l], s_c, exact=False)
            y_a = torch.where(mask, _round_around(y, mu_a), torch.zeros_like(y))
            mu_o, b_o = level_params(params, coarse, y_a, mask, scales[l], s_c, exact=False)
            mu, b = torch.where(mask, mu_a, mu_o), torch.where(mask, b_a, b_o)
            hats[l] = torch.where(mask, y_a, _round_around(y, mu_o))
            total = total + laplace_bits(hats[l] - mu, b)
        return hats, total

    def bits(self, grids: list[Tensor], scales: Tensor) -> Tensor:
        """Bits of one image's (noisy or rounded) latents, finest first, under the context model, the
        contexts taken from those same latents exactly as the decoder will see them; `scales`: (levels,)."""
        total = grids[0].new_zeros(())
        params = self.coded_params()
        for l, y in enumerate(grids):
            coarse = grids[l + 1] if l + 1 < len(grids) else None
            s_c = scales[l + 1] if coarse is not None else None
            mu, b = level_params(params, coarse, y, anchors(*y.shape, y.device), scales[l], s_c, exact=False)
            total = total + laplace_bits(y - mu, b)
        return total


def _round_around(y: Tensor, mu: Tensor) -> Tensor:
    """mu + round(y - mu), the gradient passed straight through to y and mu."""
    r = y - mu
    return mu + r + (torch.round(r) - r).detach()


def _symbol_params(mu: Tensor, b: Tensor, step: np.float32, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """Latent-unit (mu, b) -> the coder's float64 arrays in symbol units, finite and in range."""
    mu = torch.nan_to_num(mu / step).clamp(-bound, bound)
    b = torch.nan_to_num(b / step, nan=MIN_SCALE).clamp(MIN_SCALE, MAX_SCALE)
    return mu.numpy().astype(np.float64), b.numpy().astype(np.float64)


def latent_scales(scales_sym: list[float], step: float) -> Tensor:
    """One image's per-level scales in latent units, float32, from the header's (symbol units)."""
    return torch.from_numpy(np.asarray(scales_sym, np.float32) * np.float32(step))


def _walk(shapes: list[tuple[int, int]], scales_sym: list[float], bounds: list[int], step: float,
          params: list[Tensor], residual: bool, take) -> list[Tensor]:
    """One image in the coder's order (coarsest level first, anchors then the others): for every band of a
    pass the coder's means mu and scales b (symbol units) from what is reconstructed so far, take(level,
    rows, sel, mu, b) -> the int32 symbols q of those positions (flat slice `rows` of the level, mask `sel`
    within it), and the reconstruction, in float32 element-wise operations that encoder and decoder share:
    (mu + q) x step around the means (`residual`), else q x step (a level whose bound is 0 is then all
    zeros and not walked). Returns the latents (latent units), finest first."""
    step32, s = np.float32(step), latent_scales(scales_sym, step)
    levels = len(shapes)
    out: list = [None] * levels
    with torch.no_grad():
        for l in reversed(range(levels)):
            rec = torch.zeros(shapes[l])
            out[l] = rec
            if not (rec.numel() and (residual or bounds[l])):
                continue
            mask = anchors(*rec.shape)
            coarse = out[l + 1] if l + 1 < levels else None
            s_c = s[l + 1] if coarse is not None else None
            bound = MAX_BOUND if residual else bounds[l]
            flat = rec.view(-1).numpy()  # a view: what lands here is the reconstruction
            for anchors_pass in (True, False):  # anchors (their features never read this level), then the rest
                up, a = _inputs(coarse, rec, mask, s[l], s_c, True)
                for rows, sel, mu, b in _pass(params, up, a, mask, s[l], step32, bound, anchors_pass):
                    band = flat[rows]
                    q = take(l, rows, sel, mu, b).astype(np.float32)
                    band[sel] = ((mu.astype(np.float32) + q) if residual else q) * step32
    return out


def encode(latents: list[list[np.ndarray]], header, params: list[Tensor],
           dead_zone: float = 0.0) -> tuple[bytes, list[list[int]]]:
    """One range-coded stream of every image's latents and the header's bounds (per image and level, the
    largest |symbol|). `latents`: per image its levels (latent units, finest first), rounded here as the
    decoder will rebuild them: around its means (`header.residual`), else to whole steps, whose bounds
    the header already holds (they clamp the coder's means); `header`: sizes, scales and latent step.
    `dead_zone`: rounded toward zero by this much more (round_dead; the decoder never needs it)."""
    step, residual = np.float32(header.latent_step), header.residual
    streams, bounds = [], []
    for i, grids in enumerate(latents):
        ys = [np.asarray(g, np.float32).reshape(-1) / step for g in grids]
        passes: list = []

        def take(l, rows, sel, mu, b, ys=ys, passes=passes):
            y = ys[l][rows][sel]
            q = np.clip(round_dead(y - mu if residual else y, dead_zone), -MAX_BOUND, MAX_BOUND).astype(np.int32)
            passes.append((l, q, np.zeros_like(b) if residual else mu, b))
            return q

        row = None if residual else header.bounds[i]
        _walk([g.shape for g in grids], header.scales[i], row, header.latent_step, params, residual, take)
        if residual:
            row = [0] * len(grids)
            for l, q, _, _ in passes:
                row[l] = max(row[l], int(np.abs(q).max(initial=0)))
        bounds.append(row)
        streams.append(passes)
    enc = RangeEncoder()
    for row, passes in zip(bounds, streams):
        for l, q, mu, b in passes:
            if row[l]:
                enc.encode(q, QuantizedLaplace(-row[l], row[l]), mu, b)
    return stream_bytes(enc), bounds


def round_dead(x: np.ndarray, dead_zone: float) -> np.ndarray:
    """x rounded to whole steps, toward zero by `dead_zone` more: |q| = max(0, floor(|x| + 0.5 - dead_zone)).
    Fewer bytes without moving the step the fit trained at (docs/photo.md, "Ending under the budget")."""
    if dead_zone == 0:  # ties to even, as every archive before the dead zone (the formula rounds them away)
        return np.rint(x)
    return np.sign(x) * np.maximum(np.floor(np.abs(x) + 0.5 - dead_zone), 0)


def decode(data: bytes, header, params: list[Tensor]) -> list[Tensor]:
    """Inverse of encode: the latents (latent units), images then levels, finest first. Corrupt input
    gives garbage."""
    dec = decoder(data)
    out: list = []
    for i, (h, w) in enumerate(header.sizes):
        models = [QuantizedLaplace(-b, b) if b else None for b in header.bounds[i]]

        def take(l, rows, sel, mu, b, models=models):
            if models[l] is None:  # around the means, a level whose residuals are all 0
                return np.zeros(len(b), np.int32)
            return np.asarray(dec.decode(models[l], np.zeros_like(b) if header.residual else mu, b), np.int32)

        out += _walk(level_shapes(h, w, header.levels), header.scales[i], header.bounds[i], header.latent_step,
                     params, header.residual, take)
    return out


def stored_scales(log_scale: Tensor, step: float = 1.0) -> Tensor:
    """exp(log_scale) in symbol units at `step` as the header stores them (float16, MIN_SCALE..HEADER_SCALE_MAX),
    the gradient straight through. The fit trains with these: a finest level's trained scale of 0.038
    clamped to 0.05 only in the archive moved every mean there, 7% more bytes than estimated (docs/photo.md)."""
    s = log_scale.exp() / np.float32(step)
    return s + (s.detach().clamp(MIN_SCALE, HEADER_SCALE_MAX).half().float() - s.detach())


def header_scales(log_scale: Tensor, step: float) -> list[list[float]]:
    """The trained per-(image, level) scales in symbol units at `step`, float16-exact (the header's)."""
    return stored_scales(log_scale.detach(), step).tolist()
