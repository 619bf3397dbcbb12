"""Context model of the latents (docs/photo.md, "Context model"): each latent's quantised Laplace gets
its own mean and scale, predicted by a tiny MLP (shared by the group) from values already decoded.

Decoding order per image: coarsest level first, each level in `passes` passes by the parity of (row, col):
2, the checkerboard's anchors ((r + c) even) then the others (He et al. 2021); 4, the quad order (both
even, both odd, even row odd column, odd row even column), so only a quarter of a level is coded without
same-level neighbours (docs/photo.md "Quad order"). Every position's features are the next coarser level
bilinearly upsampled to this level's grid (its 3x3 neighbourhood, zero-padded), its same-level neighbours
(the cross; with 4 passes also the diagonals) where already decoded, zero elsewhere, and one flag per pass
after the first; all inputs are divided by their level's scale s (per image and level), the outputs give
mu = s * o0 and b = s * (MIN_REL + |o1|). So a level decodes in `passes` vectorised range-coder calls.

Encoder and decoder compute the parameters with `exact=True`: element-wise float32 multiplies and adds in
a fixed order (no matmul, no exp, no reduction whose order a BLAS or a CPU's vector width could change),
from the same integers, so both see bit-identical models. Training computes the same MLP as convolutions
over the whole level (the same values to float rounding, faster: docs/photo.md)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixinr.grid.format import CONTEXT_FEATURES, MIN_SCALE, context_shapes
from mixinr.grid.latents import level_shapes, upsample, upsample_frame
from mixinr.entropy import RangeEncoder, decoder, stream_bytes
from mixinr.grid.prior import QuantizedLaplace, laplace_bits

MIN_REL = 0.02  # the smallest scale as a share of the level's scale (the format's MIN_SCALE still binds)
MAX_SCALE = 1e4  # symbol units: keeps a corrupt archive's parameters finite for the coder
BAND_POSITIONS = 1 << 16  # the coder's MLP runs on this many positions at once (~100 bytes each), whatever a file declares
# Same-level neighbours read, as (row, col) offsets, in feature order: the cross (up, down, left, right);
# with 4 passes the diagonals too.
OFFSETS = {2: [(-1, 0), (1, 0), (0, -1), (0, 1)],
           4: [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]}
_QUAD = torch.tensor([[0, 2], [3, 1]])  # pass by (row parity, col parity)


def pass_map(rows: int, cols: int, passes: int, device=None) -> Tensor:
    """(rows, cols) int64: the pass that codes each position (0 first)."""
    r = torch.arange(rows, device=device)[:, None] % 2
    c = torch.arange(cols, device=device)[None, :] % 2
    return (r + c) % 2 if passes == 2 else _QUAD.to(device)[r, c]


def visible(passes: int) -> Tensor:
    """(passes, len(OFFSETS)) bool: whether a pass-p position's neighbour at each offset is decoded before
    it. The parity pattern repeats every 2 rows and columns, so it is one table (the level's edge reads the
    zero padding)."""
    pm = pass_map(4, 4, passes)
    out = torch.zeros(passes, len(OFFSETS[passes]), dtype=torch.bool)
    for p in range(passes):
        r, c = next((r, c) for r in (1, 2) for c in (1, 2) if pm[r, c] == p)
        out[p] = torch.tensor([bool(pm[r + dr, c + dc] < p) for dr, dc in OFFSETS[passes]])
    return out


def _linear(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """(in, n) -> (out, n), positions contiguous, one multiply and one add per input always in this order
    (each output element's own sequence of float32 operations)."""
    out = b[:, None].repeat(1, x.shape[1])
    for i in range(w.shape[1]):
        out += x[i][None, :] * w[:, i][:, None]
    return out


def _coarse(coarse: Tensor | None, rows: int, cols: int, s_coarse: Tensor | None, exact: bool) -> Tensor:
    """The next coarser level upsampled to this level's grid over its scale, zero-padded (rows + 2, cols + 2)."""
    if coarse is None:
        return torch.zeros(rows + 2, cols + 2)
    up = (upsample if exact else upsample_frame)([coarse], rows, cols)[..., 0] / s_coarse  # equal to float rounding
    return F.pad(up, (1, 1, 1, 1))


def _decoded(cur: Tensor, pm: Tensor, p: int, s: Tensor) -> Tensor:
    """This level's values decoded before pass p over its scale, others zero, zero-padded."""
    return F.pad(torch.where(pm < p, cur, cur.new_zeros(())) / s, (1, 1, 1, 1))


def _features(up: Tensor, a: Tensor, pm: Tensor, passes: int, r0: int, r1: int) -> Tensor:
    """(features, r1 - r0, cols): every position of rows r0..r1's features, the coarser level's 3x3
    neighbourhood, the same-level neighbours in `a` (_decoded's map), a flag per pass after the first."""
    cols = pm.shape[1]
    feats = [up[r0 + i : r1 + i, j : j + cols] for i in range(3) for j in range(3)]
    feats += [a[r0 + 1 + dr : r1 + 1 + dr, 1 + dc : 1 + dc + cols] for dr, dc in OFFSETS[passes]]
    feats += [(pm[r0:r1] == q).to(up.dtype) for q in range(1, passes)]
    return torch.stack(feats)


def _mu_b(o0: Tensor, o1: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    return s * o0, s * (MIN_REL + o1.abs())


def level_params(params: list[Tensor], coarse: Tensor | None, cur: Tensor, passes: int, s: Tensor,
                 s_coarse: Tensor | None, exact: bool) -> tuple[Tensor, Tensor]:
    """(mu, b) of every position of a (rows, cols) level, latent units. `coarse`: the next coarser
    level's values (None at the coarsest); `cur`: this level's values, each position reading only those
    of earlier passes."""
    rows, cols = cur.shape
    pm = pass_map(rows, cols, passes, cur.device)
    up = _coarse(coarse, rows, cols, s_coarse, exact).to(cur.device)
    if exact:
        o = cur.new_empty(2, rows * cols)
        for p in range(passes):
            sel = (pm == p).view(-1)
            o[:, sel] = _mlp(params, _features(up, _decoded(cur, pm, p, s), pm, passes, 0, rows).view(-1, rows * cols)[:, sel])
        o = o.view(2, rows, cols)
    else:
        o = _conv_mlp(params, up, F.pad(cur / s, (1, 1, 1, 1)), pm, passes)
    return _mu_b(o[0], o[1], s)


def _conv_mlp(params: list[Tensor], up: Tensor, cur: Tensor, pm: Tensor, passes: int) -> Tensor:
    """The MLP over every position at once as convolutions (training). Its first layer is a linear map of
    shifted maps: a 3x3 convolution of the coarser level, plus one of the level itself per pass whose
    kernel keeps only what that pass sees (which neighbours are decoded depends only on the pass: the
    parity pattern repeats), plus the pass's flag weight; each position takes its own pass's sum. The
    same values as _features + _mlp to float rounding (tests), without stacking the features (a full-size
    fit step 0.35 -> 0.28 s; docs/photo.md). `up`, `cur`: padded maps over their scales."""
    w1, b1, w2, b2 = params
    hidden, offs = w1.shape[0], OFFSETS[passes]
    h = F.conv2d(up[None, None], w1[:, :9].reshape(hidden, 1, 3, 3), b1)[0]
    same = w1.new_zeros(hidden, 9)
    same[:, [(dr + 1) * 3 + dc + 1 for dr, dc in offs]] = w1[:, 9 : 9 + len(offs)]
    vis = torch.zeros(passes - 1, 9, dtype=w1.dtype, device=w1.device)
    vis[:, [(dr + 1) * 3 + dc + 1 for dr, dc in offs]] = visible(passes)[1:].to(w1)
    k = (same[None] * vis[:, None]).reshape(-1, 1, 3, 3)  # (passes - 1) x hidden kernels
    rows, cols = pm.shape
    o = F.conv2d(cur[None, None], k)[0].view(passes - 1, hidden, rows, cols)
    o = o + w1[:, 9 + len(offs) :].T[:, :, None, None]  # the pass flags
    sel = F.one_hot(pm, passes)[..., 1:].permute(2, 0, 1).to(w1.dtype)  # (passes - 1, rows, cols)
    h = torch.relu(h + (o * sel[:, None]).sum(0))
    return F.conv2d(h[None], w2[:, :, None, None], b2)[0]


def _mlp(params: list[Tensor], x: Tensor) -> Tensor:
    """features -> hidden -> 2, ReLU between: (features, n) in, (2, n) out, element-wise (exact)."""
    w1, b1, w2, b2 = params
    return _linear(torch.relu(_linear(x, w1, b1)), w2, b2)


def _bands(rows: int, cols: int, positions: int) -> list[tuple[int, int]]:
    step = max(1, positions // max(cols, 1))
    return [(r, min(r + step, rows)) for r in range(0, rows, step)]


def _level(params, q: np.ndarray, coarse: Tensor | None, s, s_coarse, step32, bound, passes: int,
           positions: int = BAND_POSITIONS):
    """Every pass of one level in the coder's order (pass by pass, band by band of rows, row-major): yields
    (flat slice of the level, that band's positions of the pass, coder means, coder scales). `q` (symbols)
    is read afresh at each pass, so a decoder filling it in as it goes gives every pass what it may read."""
    rows, cols = q.shape
    pm = pass_map(rows, cols, passes)
    up = _coarse(coarse, rows, cols, s_coarse, True)
    for p in range(passes):
        a = _decoded(torch.from_numpy(q.astype(np.float32) * step32), pm, p, s)
        for r0, r1 in _bands(rows, cols, positions):
            sel = (pm[r0:r1] == p).reshape(-1)
            if not bool(sel.any()):
                continue
            o = _mlp(params, _features(up, a, pm, passes, r0, r1).view(-1, (r1 - r0) * cols)[:, sel])
            mu, b = _symbol_params(*_mu_b(o[0], o[1], s), step32, bound)
            yield slice(r0 * cols, r1 * cols), sel.numpy(), mu, b


class ContextModel(nn.Module):
    """The MLP's weights (trained with the latents; stored in the archive after the synthesis')."""

    def __init__(self, hidden: int, passes: int = 2, generator=None):
        super().__init__()
        self.passes = passes
        shapes = context_shapes(hidden, passes)
        w1 = (torch.rand(shapes[0], generator=generator) * 2 - 1) / CONTEXT_FEATURES[passes]**0.5
        w2 = (torch.rand(shapes[2], generator=generator) * 2 - 1) * 0.01  # starts near Laplace(0, s)
        self.w1, self.b1 = nn.Parameter(w1), nn.Parameter(torch.zeros(hidden))
        self.w2, self.b2 = nn.Parameter(w2), nn.Parameter(torch.tensor([0.0, 1.0]))

    def coded_params(self) -> list[Tensor]:
        return [self.w1, self.b1, self.w2, self.b2]

    def bits(self, grids: list[Tensor], scales: Tensor) -> Tensor:
        """Bits of one image's (noisy or rounded) latents, finest first, under the context model, the
        contexts taken from those same latents exactly as the decoder will see them; `scales`: (levels,)."""
        total = grids[0].new_zeros(())
        params = self.coded_params()
        for l, y in enumerate(grids):
            coarse = grids[l + 1] if l + 1 < len(grids) else None
            s_c = scales[l + 1] if coarse is not None else None
            mu, b = level_params(params, coarse, y, self.passes, scales[l], s_c, exact=False)
            total = total + laplace_bits(y - mu, b)
        return total


def _symbol_params(mu: Tensor, b: Tensor, step: np.float32, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """Latent-unit (mu, b) -> the coder's float64 arrays in symbol units, finite and in range."""
    mu = torch.nan_to_num(mu / step).clamp(-bound, bound)
    b = torch.nan_to_num(b / step, nan=MIN_SCALE).clamp(MIN_SCALE, MAX_SCALE)
    return mu.numpy().astype(np.float64), b.numpy().astype(np.float64)


def latent_scales(scales_sym: list[float], step: float) -> Tensor:
    """One image's per-level scales in latent units, float32, from the header's (symbol units)."""
    return torch.from_numpy(np.asarray(scales_sym, np.float32) * np.float32(step))


def _coarse_symbols(q: np.ndarray | None, step: np.float32) -> Tensor | None:
    return None if q is None else torch.from_numpy(q.astype(np.float32) * step)


def encode_image(enc, symbols: list[np.ndarray], scales_sym: list[float], bounds: list[int], step: float,
                 params: list[Tensor], passes: int) -> None:
    """Append one image's (rows, cols) int32 symbols, finest first, to the range encoder `enc`, in the
    decoder's order: coarsest level first, each level pass by pass."""
    step32, s = np.float32(step), latent_scales(scales_sym, step)
    levels = len(symbols)
    with torch.no_grad():
        for l in reversed(range(levels)):
            q = symbols[l]
            if not (q.size and bounds[l]):
                continue
            coarse = _coarse_symbols(symbols[l + 1] if l + 1 < levels else None, step32)
            s_c = s[l + 1] if coarse is not None else None
            model = QuantizedLaplace(-bounds[l], bounds[l])
            flat = q.reshape(-1)
            for rows, sel, mu, b in _level(params, q, coarse, s[l], s_c, step32, bounds[l], passes):
                enc.encode(np.ascontiguousarray(flat[rows][sel], np.int32), model, mu, b)


def decode_image(dec, shapes: list[tuple[int, int]], scales_sym: list[float], bounds: list[int], step: float,
                 params: list[Tensor], passes: int) -> list[np.ndarray]:
    """Inverse of encode_image: one image's (rows, cols) int32 symbols, finest first."""
    step32, s = np.float32(step), latent_scales(scales_sym, step)
    levels = len(shapes)
    out: list = [None] * levels
    with torch.no_grad():
        for l in reversed(range(levels)):
            q = np.zeros(shapes[l], np.int32)
            out[l] = q
            if not (q.size and bounds[l]):
                continue
            coarse = _coarse_symbols(out[l + 1] if l + 1 < levels else None, step32)
            s_c = s[l + 1] if coarse is not None else None
            model = QuantizedLaplace(-bounds[l], bounds[l])
            flat = q.reshape(-1)
            for rows, sel, mu, b in _level(params, q, coarse, s[l], s_c, step32, bounds[l], passes):
                band = flat[rows]  # a view: the decoded symbols land in q, which the next pass reads
                band[sel] = np.asarray(dec.decode(model, mu, b), np.int32)
    return out


def encode(symbols: list[np.ndarray], header, params: list[Tensor]) -> bytes:
    """One range-coded stream of every image (`symbols`: images then levels, finest first, as pack lists
    them); `header`: the archive's GridHeader (sizes, scales, bounds, latent step)."""
    enc = RangeEncoder()
    levels = header.levels
    for i in range(header.n):
        encode_image(enc, symbols[i * levels : (i + 1) * levels], header.scales[i], header.bounds[i],
                     header.latent_step, params, header.context_passes)
    return stream_bytes(enc)


def decode(data: bytes, header, params: list[Tensor]) -> list[np.ndarray]:
    """Inverse of encode: (rows, cols) int32 symbols, images then levels. Corrupt input gives garbage."""
    dec = decoder(data)
    out = []
    for i, (h, w) in enumerate(header.sizes):
        out += decode_image(dec, level_shapes(h, w, header.levels), header.scales[i], header.bounds[i],
                            header.latent_step, params, header.context_passes)
    return out


def header_scales(log_scale: Tensor, step: float) -> list[list[float]]:
    """The trained per-(image, level) scales in symbol units at `step`, float16-exact (the header's)."""
    s = log_scale.detach().exp().double().numpy() / float(step)
    return [[float(np.float16(min(max(v, MIN_SCALE), 60000.0))) for v in row] for row in s]

