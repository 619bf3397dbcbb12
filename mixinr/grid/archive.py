"""The grid representation's bytes: a fitted GridModel packed at a latent step (pack), and the decoder
that turns a version-2 archive back into pixels at any size (GridArchive). The decoder needs only this
file, latents.py, synthesis.py, prior.py, context.py and format.py."""

from __future__ import annotations

import numpy as np
import torch

from mixinr import entropy
from mixinr.errors import MixinrError
from mixinr.grid import format as gformat
from mixinr.grid import context as gcontext
from mixinr.grid import prior
from mixinr.grid.latents import columns, level_shapes, rows_of
from mixinr.grid.synthesis import image_layers, run
from mixinr.representation import output_size
from mixinr.validate import MAX_DECODE_PIXELS, check_output_size

BAND_VALUES = 1 << 19  # decoder: output rows per band x width x features stays ~2 MB of floats


def pack(model, names: list[str], latent_step: float = 1.0, dead_zone: float = 0.0) -> bytes:
    """Archive bytes of a fitted GridModel with its latents quantised at `latent_step` (symbol units),
    rounded toward zero by `dead_zone` more (context.round_dead)."""
    return _write(*_parts(model, names, latent_step, dead_zone))


def overhead(model, names: list[str]) -> int:
    """Bytes of `model`'s archive besides its latents (header, weights, checksum): what a budget spends
    before the first latent. Not a fresh model's whole archive: under a learned start's context MLP its
    zero latents can cost more than the budget (twentieth session)."""
    header, weights, _ = _parts(model, names, 1.0, 0.0)
    return len(_write(header, weights, b""))


def _write(header, weights: bytes, latents: bytes) -> bytes:
    try:
        return gformat.write(header, weights, latents)
    except ValueError as e:
        raise MixinrError(f"cannot store this archive: {e}") from None


def _parts(model, names: list[str], latent_step: float, dead_zone: float) -> tuple:
    """pack's (header, weights' bytes, latents' bytes)."""
    step = float(np.float16(latent_step))
    ctx = model.context
    coded = model.synthesis.coded_params() + (ctx.coded_params() if ctx else [])
    tensors = [t.detach().cpu().float().numpy() for t in coded]
    codes, weights = entropy.encode_tensors(tensors, gformat.WEIGHT_BITS)
    floats = [[g.detach().cpu().numpy() for g in grids] for grids in model.latents]
    bound = gformat.MAX_BOUND
    symbols = [[np.clip(gcontext.round_dead(g / np.float32(step), dead_zone), -bound, bound).astype(np.int32)
                for g in grids] for grids in floats]  # whole steps (around the means, encode rounds its own)
    bounds = [[int(np.abs(q).max(initial=0)) for q in row] for row in symbols]
    cfg = model.cfg
    residual = bool(ctx) and cfg.residual
    scales = (gcontext.header_scales(model.log_scale, step) if ctx  # what the context MLP was trained with
              else [[prior.fitted_scale(q) for q in row] for row in symbols])
    header = gformat.GridHeader(model.synthesis.weights[0].shape[0], cfg.levels, tuple(cfg.widths), model.sizes,
                                list(names), step, gformat.WEIGHT_BITS, codes, scales, bounds, cfg.context, residual)
    if ctx:  # the MLP as the decoder will have it: its tensors decoded from these very bytes
        params = _context_params(entropy.decode_tensors(weights, header.weight_shapes(), codes, gformat.WEIGHT_BITS))
        latents, header.bounds = gcontext.encode(floats, header, params, dead_zone)
    else:
        latents = prior.encode([q for row in symbols for q in row], [s for r in scales for s in r],
                               [b for r in bounds for b in r])
    return header, weights, latents


def _context_params(tensors: list[np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(x, np.float32)) for x in tensors[-gformat.CONTEXT_TENSORS:]]


class GridArchive:
    """A parsed version-2 archive: synthesis sets and latents decoded once, images one at a time."""

    def __init__(self, parsed: gformat.ParsedGrid, source: str, n_bytes: int):
        h = self.header = parsed.header
        self.source, self.n_bytes, self.sections = source, n_bytes, parsed.sections
        self.names, self.sizes, self.precision = h.names, h.sizes, h.precision
        self.madds_per_pixel = h.madds_per_pixel()  # the render cost cap counts pixels x this
        try:
            tensors = entropy.decode_tensors(parsed.weights, h.weight_shapes(), h.codes, h.bits)
            if h.context:
                grids = gcontext.decode(parsed.latents, h, _context_params(tensors))
            else:  # the factorized prior: symbols x latent step
                flat = prior.decode(parsed.latents, h.latent_counts(), [s for r in h.scales for s in r],
                                    [b for r in h.bounds for b in r])
                shapes = [s for hh, ww in h.sizes for s in level_shapes(hh, ww, h.levels)]
                grids = [torch.from_numpy(q.astype(np.float32) * np.float32(h.latent_step)).view(shape)
                         for q, shape in zip(flat, shapes)]
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - constriction raises AssertionError or a Rust panic
            raise MixinrError(f"{source}: corrupt archive streams ({type(e).__name__})") from None
        if not all(np.all(np.isfinite(t)) for t in tensors):
            raise MixinrError(f"{source}: weights hold non-finite values")
        synthesis = tensors[: len(tensors) - gformat.CONTEXT_TENSORS] if h.context else tensors
        t = [torch.from_numpy(np.ascontiguousarray(x)) for x in synthesis]
        self._weights, self._biases, self.coeffs = t[0:-1:2], t[1:-1:2], t[-1]
        it = iter(grids)
        self._latents = [[next(it) for _ in range(h.levels)] for _ in h.sizes]

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "archive") -> "GridArchive":
        return cls(gformat.read(data, source), source, len(data))

    def __len__(self) -> int:
        return len(self.names)

    def decode(self, index: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W, 3) uint8 of image `index` only, at its own size or `size` = (height, width)."""
        h, w = output_size(self, index, size, MAX_DECODE_PIXELS)
        check_output_size(self.source, h, w, self.madds_per_pixel)
        return self.render(index, h, w)

    def render(self, index: int, height: int, width: int) -> np.ndarray:
        """(height, width, 3) uint8 of image `index`: its grids interpolated to that size, band by band."""
        layers = image_layers(self.coeffs[:, index], self._weights, self._biases)
        grids = self._latents[index]
        out = np.empty((height, width, 3), np.uint8)
        band = max(1, BAND_VALUES // (width * (len(grids) + max(self.header.widths))))
        with torch.no_grad():
            cols = columns(grids, width)  # once per image; each band then interpolates its rows
            for r0 in range(0, height, band):
                rows = slice(r0, min(height, r0 + band))
                rgb = run(layers, rows_of(cols, height, rows))
                out[rows] = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return out

    def info(self) -> dict:
        return gformat.describe(self.header, self.sections, self.n_bytes)
