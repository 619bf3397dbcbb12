"""The grid representation's archive (format version 2): bytes in, validated fields out (and back).
Torch-free, like mixinr.bitstream, whose magic, varints, names and checksum it shares.

    magic "MXNR" | version 2 | kind u8 (1: grid) | flags u8 (flag 4: latents around their context means)
    | N, K, levels, hidden layers, widths (varints) | [flag 2: the context MLP's hidden width (varint)]
    | image sizes | names | latent step f16 | weight bits u8 | per weight tensor (the context MLP's four
    last): family u8, step f16, scale f16 | per image and level: Laplace scale f16, alphabet bound varint
    | weights stream length (varint) | weights stream | latents stream | CRC-32 u32

docs/format.md has it byte by byte."""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

from mixinr import bitstream
from mixinr.bitstream import FAMILIES, MAGIC, TensorCode
from mixinr.errors import MixinrError

VERSION = 2
KIND_GRID = 1
FLAG_MIXED_SIZES = 1
FLAG_CONTEXT = 2  # latents coded with the context model (context.py), its MLP's tensors after the synthesis'
FLAG_RESIDUAL = 4  # with FLAG_CONTEXT: each latent is its context mean plus a coded whole residual (context.py)
KNOWN_FLAGS = FLAG_MIXED_SIZES | FLAG_CONTEXT | FLAG_RESIDUAL
WEIGHT_BITS = 10  # the synthesis' and context MLP's symbols: ~0.1% of a weight's range, a few hundred bytes per set
MAX_LEVELS = 12
MAX_LAYERS = 8
MAX_SYNTH_WIDTH = 256
MAX_BOUND = (1 << 15) - 1  # latent symbols' alphabet [-bound, bound]
MAX_SETS = 64
MAX_CONTEXT_WIDTH = 64
CONTEXT_FEATURES = 14  # context.FEATURES
MAX_PIXELS = 1 << 28  # all images together: 256 Mpx, ~1.4 GB of float latents at most
# The latents' Laplace scale never goes under MIN_SCALE (symbol units), so a coded symbol costs at least
# -log2(1 - exp(-1 / (2 MIN_SCALE))) bits: about 6.5e-5, i.e. at most ~123k symbols per byte.
MIN_SCALE = 0.05
# Twice that: the coder rounds probabilities, and a valid archive must never be refused.
MAX_SYMBOLS_PER_BYTE = 2 * math.ceil(8 / -math.log2(1 - math.exp(-0.5 / MIN_SCALE)))


def layer_shapes(features: int, widths: tuple[int, ...]) -> list[tuple[int, int]]:
    """(out, in) of every synthesis layer, first to last (3 outputs: RGB); the synthesis derives from it."""
    dims = (features,) + tuple(widths) + (3,)
    return list(zip(dims[1:], dims[:-1]))


def context_shapes(hidden: int) -> list[tuple[int, ...]]:
    """File order of the context MLP's tensors (grid/context.py): W_1 (hidden, features), b_1, W_2 (2,
    hidden), b_2."""
    return [(hidden, CONTEXT_FEATURES), (hidden,), (2, hidden), (2,)]


CONTEXT_TENSORS = len(context_shapes(1))  # last in the weights stream, after the synthesis'


@dataclass
class GridHeader:
    sets: int
    levels: int
    widths: tuple[int, ...]  # synthesis hidden layers
    sizes: list[tuple[int, int]]  # (height, width) per image
    names: list[str]
    latent_step: float  # float16-exact
    bits: int  # weight symbols' alphabet
    codes: list[TensorCode]  # one per weight tensor (file order), coefficients last
    scales: list[list[float]]  # [image][level] Laplace scale of the latent symbols
    bounds: list[list[int]]  # [image][level] alphabet bound (0: the level's symbols are all zeros)
    context: int = 0  # the context MLP's hidden width; 0: the factorized Laplace (prior.py)
    residual: bool = False  # latent = context mean + symbol (FLAG_RESIDUAL), else symbol x latent step

    @property
    def n(self) -> int:
        return len(self.names)

    def weight_shapes(self) -> list[tuple[int, ...]]:
        """File order: W_0 (K, out, in), b_0 (K, out), ..., then the coefficients (layers, N, K)."""
        layers = layer_shapes(self.levels, self.widths)
        shapes: list[tuple[int, ...]] = []
        for o, i in layers:
            shapes += [(self.sets, o, i), (self.sets, o)]
        shapes.append((len(layers), self.n, self.sets))
        return shapes + (context_shapes(self.context) if self.context else [])

    def latent_counts(self) -> list[int]:
        """Symbols per (image, level), images then levels."""
        return [math.ceil(h / 2**l) * math.ceil(w / 2**l) for h, w in self.sizes for l in range(self.levels)]

    @property
    def precision(self) -> str:
        """What `mixinr info` reports: the weights' bits ("q10"); the latents are (context mean +) whole steps."""
        return f"q{self.bits}"

    def madds_per_pixel(self) -> int:
        """Multiply-adds per output pixel (the synthesis, and 4 per level for its interpolation): what the
        decoder's render-cost cap (validate.check_output_size) counts."""
        return sum(o * i for o, i in layer_shapes(self.levels, self.widths)) + 4 * self.levels


@dataclass
class ParsedGrid:
    header: GridHeader
    weights: bytes
    latents: bytes
    sections: dict[str, int]


def write(h: GridHeader, weights: bytes, latents: bytes) -> bytes:
    mixed = len(set(h.sizes)) > 1
    flags = ((FLAG_MIXED_SIZES if mixed else 0) | (FLAG_CONTEXT if h.context else 0)
             | (FLAG_RESIDUAL if h.residual else 0))
    out = bytearray(MAGIC) + bytes([VERSION, KIND_GRID, flags])
    v = bitstream.varint
    out += v(h.n) + v(h.sets) + v(h.levels) + v(len(h.widths)) + b"".join(v(w) for w in h.widths)
    if h.context:
        out += v(h.context)
    out += bitstream.encode_sizes(h.sizes, mixed) + bitstream.encode_names(h.names)
    out += bitstream.f16(h.latent_step) + bytes([h.bits])
    for c in h.codes:
        out += bytes([c.family]) + bitstream.f16(c.step) + bitstream.f16(c.scale)
    for scales, bounds in zip(h.scales, h.bounds):
        for s, b in zip(scales, bounds):
            out += bitstream.f16(s) + v(b)
    out += v(len(weights)) + weights + latents
    return bytes(out) + struct.pack("<I", zlib.crc32(out))


def read(data: bytes, source: str = "archive") -> ParsedGrid:
    """Parse and validate a version-2 archive; every problem is a MixinrError naming `source`."""
    version = bitstream.format_version(data, source)
    data = bytes(data)
    if version != VERSION:
        raise MixinrError(f"{source}: format version {version} is not a grid archive")
    bitstream.check_crc(data, source)
    end = len(data) - 4
    r = bitstream._Reader(data, len(MAGIC) + 1, end, source)
    kind = r.u8()
    if kind != KIND_GRID:
        r.fail(f"unknown representation {kind} in a version {VERSION} archive")
    flags = r.u8()
    if flags & ~KNOWN_FLAGS:
        r.fail(f"unknown header flags {flags:#x}")
    n = r.varint(bitstream.MAX_IMAGES, "number of images N")
    sets = r.varint(MAX_SETS, "number of weight sets K")
    levels = r.varint(MAX_LEVELS, "number of latent levels")
    depth = r.varint(MAX_LAYERS, "number of hidden layers")
    widths = tuple(r.varint(MAX_SYNTH_WIDTH, "synthesis width") for _ in range(depth))
    context = r.varint(MAX_CONTEXT_WIDTH, "context width") if flags & FLAG_CONTEXT else 0
    if min((n, sets, levels) + widths) < 1 or (flags & FLAG_CONTEXT and context < 1):
        r.fail("N, K, levels and widths must be at least 1")
    residual = bool(flags & FLAG_RESIDUAL)
    if residual and not context:
        r.fail("latents coded around context means without a context model")
    if 3 * n > end - r.pos:
        r.fail(f"header claims {n} images but the file is too short")
    sizes = bitstream.read_sizes(r, n, bool(flags & FLAG_MIXED_SIZES))
    names = bitstream.read_names(r, n)
    latent_step = r.f16()
    bits = r.u8()
    if not (latent_step > 0 and math.isfinite(latent_step)):
        r.fail("latent step out of range")
    if not bitstream.MIN_BITS <= bits <= bitstream.MAX_BITS:
        r.fail(f"bit depth {bits} out of range")
    codes = []
    for _ in range(2 * (depth + 1) + 1 + (CONTEXT_TENSORS if context else 0)):
        family, step, scale = r.u8(), r.f16(), r.f16()
        if family >= len(FAMILIES) or not all(x > 0 and math.isfinite(x) for x in (step, scale)):
            r.fail("bad weight tensor code")
        codes.append(TensorCode(family, step, scale))
    scales, bounds = [], []
    for _ in range(n):
        s_row, b_row = [], []
        for _ in range(levels):
            s, b = r.f16(), r.varint(MAX_BOUND, "latent alphabet bound")
            if not (s > 0 and math.isfinite(s)):
                r.fail("latent scale out of range")
            s_row.append(s)
            b_row.append(b)
        scales.append(s_row)
        bounds.append(b_row)
    header = GridHeader(sets, levels, widths, sizes, names, latent_step, bits, codes, scales, bounds, context, residual)
    n_weights = r.varint(end, "weights stream length")
    head = r.pos - len(MAGIC) - 1
    weights = r.take(n_weights)
    latents = data[r.pos : end]
    # A range coder spends at least a fraction of a bit per symbol: a header whose symbol count the
    # streams could not have come from is refused before anything is decoded. Around context means every
    # latent is computed, coded or not (bound 0), so every one counts.
    flat_bounds = [b for row in bounds for b in row]
    symbols = sum(c for c, b in zip(header.latent_counts(), flat_bounds) if b or residual)
    if symbols > MAX_SYMBOLS_PER_BYTE * (len(latents) + 4):
        r.fail(f"header claims {symbols} latent values, more than {len(latents)} bytes can hold")
    n_params = sum(math.prod(s) for s in header.weight_shapes())
    if n_params > MAX_SYMBOLS_PER_BYTE * (len(weights) + 4):
        r.fail(f"header claims {n_params} weights, more than {len(weights)} bytes can hold")
    if sum(h * w for h, w in sizes) > MAX_PIXELS:
        r.fail(f"images of {sum(h * w for h, w in sizes)} pixels in all, over the cap of {MAX_PIXELS}")
    sections = {"magic+version": len(MAGIC) + 1, "header": head, "weights": len(weights),
                "latents": len(latents), "checksum": 4}
    return ParsedGrid(header, weights, latents, sections)


def describe(h: GridHeader, sections: dict[str, int], n_bytes: int) -> dict:
    """What `mixinr info` prints: the header's fields and the bytes per section (ParsedGrid.sections), from
    the header alone (no latents decoded, no torch); GridArchive.info() is this."""
    return {"version": VERSION, "representation": "grid", "bytes": n_bytes, "sets": h.sets,
            "network": f"grid of {h.levels} latent levels, synthesis {'x'.join(map(str, h.widths))}, "
                       f"K={h.sets} sets, coefficients per layer, "
                       + (f"context model {h.context} hidden" if h.context else "factorized latents")
                       + (", latents around their context means" if h.residual else ""),
            "precision": h.precision,
            "levels": h.levels, "synthesis": list(h.widths), "context": h.context, "residual": h.residual,
            "latent_step": h.latent_step,
            "images_count": h.n, "sections": dict(sections),
            "images": bitstream.describe_images(h.names, h.sizes)}
