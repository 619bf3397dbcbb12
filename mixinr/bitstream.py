"""The .mixinr file format: bytes in, validated fields out (and back). Nothing about networks here.

Layout (all integers little-endian; docs/format.md has it byte by byte):

    magic "MXNR" | version u8 | header | coefficients (learned, fp16 only) | weights | CRC-32 u32

The header is self-delimiting (varints and fixed-size fields), the coefficient section's size
follows from the header, the weights run up to the checksum. Every size read from a file is
checked against caps and against the bytes actually present before anything is allocated.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from mixinr.errors import MixinrError

MAGIC = b"MXNR"
VERSION = 1  # the SIREN's archives; version 2 is the grid representation's (mixinr.grid.format)

# Caps: a header asking for more is rejected before any allocation.
MAX_DEPTH = 64
MAX_WIDTH = 4096
MAX_SETS = 256
MAX_IMAGES = 1 << 20
MAX_SIDE = 65535
MAX_PARAMS = 1 << 26  # K x params per set: 256 MiB of float32; also the cap on N x K coefficients
MAX_NAME_BYTES = 255
MIN_BITS, MAX_BITS = 2, 16
MAX_OMEGA = 1e4
MAX_COEFF = 1e4
# Work bounded by the file (docs/format.md "Caps"): an archive is read whole into memory only up to
# MAX_ARCHIVE_BYTES (the largest network the caps allow in fp16 is 128 MiB), and a quantised weights
# section must hold at least one byte per MAX_VALUES_PER_BYTE values it decodes to. Real archives code
# 1-16 bits per value (0.5-8 values per byte); the writer pads the rare degenerate stream (a tensor of
# almost only zeros at a coarse step) with zero bytes, which decode to the same symbols. Without this a
# 60-byte file could ask the range coder for 2^26 symbols.
MAX_ARCHIVE_BYTES = 1 << 28
MAX_VALUES_PER_BYTE = 1 << 10

FLAG_LEARNED = 1
FLAG_QUANTISED = 2
FLAG_OMEGA = 4  # omegas stored (else both are IMPLICIT_OMEGA)
FLAG_MIXED_SIZES = 8
FLAG_PER_LAYER = 16  # learned coefficients, one (N, K) matrix per layer
FLAG_COEFFS_CODED = 32  # learned coefficients quantised as the weights stream's last tensor
KNOWN_FLAGS = FLAG_LEARNED | FLAG_QUANTISED | FLAG_OMEGA | FLAG_MIXED_SIZES | FLAG_PER_LAYER | FLAG_COEFFS_CODED
# Coefficient schemes: linear, the seed's fixed chain (not stored); learned, one row of K per image;
# per-layer, one row per image and layer (each layer mixes the sets its own way; docs/rd.md).
SCHEMES = ("linear", "learned", "per-layer")

FAMILIES = ("laplace", "gaussian")
IMPLICIT_OMEGA = 30.0  # the seed's omega: what an archive without FLAG_OMEGA means (not the encoder's default)
# constriction's range coder gives every symbol a probability of at least 2^-24, so no value costs more than 3
# bytes; 4 per value plus 16 for the last words bounds any stream this network can have produced.
STREAM_BYTES_PER_VALUE, STREAM_SLACK_BYTES = 4, 16
FIXED_BYTES = len(MAGIC) + 1 + 4  # magic, version, checksum


@dataclass
class TensorCode:
    """How one quantised tensor was coded: symbols q, value q * step, q ~ family(0, scale)."""

    family: int  # index into FAMILIES
    step: float  # float16-exact
    scale: float  # float16-exact, in units of step (symbol units)


@dataclass
class Header:
    depth: int
    width: int
    sets: int
    omega_first: float
    omega: float
    coeffs: str  # "linear" | "learned" | "per-layer"
    precision: str  # "fp16" | "q<bits>"
    sizes: list[tuple[int, int]]  # (height, width) per image
    names: list[str]
    codes: list[TensorCode] = field(default_factory=list)  # quantised only, one per tensor (coefficients last)

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def bits(self) -> int | None:
        return int(self.precision[1:]) if self.precision.startswith("q") else None

    @property
    def coeffs_coded(self) -> bool:
        """Learned coefficients stored in the quantised weights stream (one tensor code more)."""
        return self.bits is not None and self.coeffs != "linear" and len(self.codes) == 2 * self.depth + 3

    def coeff_shape(self) -> tuple[int, ...] | None:
        return coeff_shape(self.coeffs, self.depth, self.n, self.sets)

    def tensor_shapes(self) -> list[tuple[int, ...]]:
        """Shapes in file order: layer 0 weights (K, out, in), layer 0 biases (K, out), layer 1 ...,
        then the coefficients when they are coded in the stream."""
        k = self.sets
        shapes: list[tuple[int, ...]] = []
        for o, i in layer_shapes(self.depth, self.width):
            shapes += [(k, o, i), (k, o)]
        if self.coeffs_coded:
            shapes.append(self.coeff_shape())
        return shapes

    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.tensor_shapes())

    def madds_per_pixel(self) -> int:
        """Rendering cost of one output pixel (the decoder's work cap counts this): one set's weights."""
        return params_for(self.depth, self.width, 1)


@dataclass
class Parsed:
    header: Header
    coeffs: np.ndarray | None  # learned coefficients kept as float16 (Header.coeff_shape), as float32
    weights: bytes  # fp16 values or the entropy-coded stream
    sections: dict[str, int]  # bytes per section, for `mixinr info`


def coeff_shape(scheme: str, depth: int, n: int, sets: int) -> tuple[int, ...] | None:
    """Stored coefficients: (N, K), (L+1, N, K) per layer, or None for linear ones (not stored)."""
    return {"linear": None, "learned": (n, sets), "per-layer": (depth + 1, n, sets)}[scheme]


def layer_shapes(depth: int, width: int) -> list[tuple[int, int]]:
    """(out, in) of every layer's weight matrix, first to last: (row, col) in, RGB out."""
    return [(width, 2)] + [(width, width)] * (depth - 1) + [(3, width)]


def params_for(depth: int, width: int, sets: int) -> int:
    """K x params per set, the sum over layer_shapes of out x in + out, in closed form so that it is safe
    on unchecked values (no list built): P = 3W + (L-1)(W^2 + W) + 3W + 3."""
    per_set = 3 * width + (depth - 1) * (width * width + width) + 3 * width + 3
    return sets * per_set


def check_name(name: str) -> str | None:
    """Why `name` cannot be stored (it becomes a file name on decode), or None if it can."""
    if not isinstance(name, str) or not name:
        return "image name is empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"image name longer than {MAX_NAME_BYTES} bytes"
    if name in (".", "..") or any(c in name for c in "/\\") or any(ord(c) < 32 for c in name):
        return f"image name {name!r} is not a plain file name"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"image name {name!r} is not valid UTF-8"
    return None


# ---------------------------------------------------------------------------------------- writing


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _f16(value: float) -> bytes:
    return np.array([value], dtype="<f2").tobytes()


def encode_sizes(sizes, mixed: bool) -> bytes:
    """(height, width) varints of every image, or of the first only when all share it."""
    return b"".join(_varint(hh) + _varint(ww) for hh, ww in (sizes if mixed else sizes[:1]))


def encode_names(names) -> bytes:
    """Names as edits of the previous name: bytes shared at the start, bytes shared at the end
    (".png"), and the new middle: "0001.png" after "0000.png" costs 4 bytes."""
    out, prev = bytearray(), b""
    for name in names:
        cur = name.encode("utf-8")
        pre = 0
        while pre < min(len(prev), len(cur)) and prev[pre] == cur[pre]:
            pre += 1
        suf = 0
        while suf < min(len(prev), len(cur)) - pre and prev[-1 - suf] == cur[-1 - suf]:
            suf += 1
        middle = cur[pre : len(cur) - suf]
        out += _varint(pre) + _varint(suf) + _varint(len(middle)) + middle
        prev = cur
    return bytes(out)


varint, f16 = _varint, _f16  # for the other representations' headers (mixinr.grid.format)


def encode_header(h: Header) -> bytes:
    """The header bytes (without magic and version). Raises ValueError on values the format cannot hold."""
    problem = _header_problem(h)
    if problem:
        raise ValueError(problem)
    flags = 0
    if h.coeffs != "linear":
        flags |= FLAG_LEARNED
    if h.coeffs == "per-layer":
        flags |= FLAG_PER_LAYER
    if h.coeffs_coded:
        flags |= FLAG_COEFFS_CODED
    if h.precision != "fp16":
        flags |= FLAG_QUANTISED
    custom_omega = (h.omega_first, h.omega) != (IMPLICIT_OMEGA, IMPLICIT_OMEGA)
    if custom_omega:
        flags |= FLAG_OMEGA
    mixed = len(set(h.sizes)) > 1
    if mixed:
        flags |= FLAG_MIXED_SIZES
    out = bytearray([flags])
    out += _varint(h.depth) + _varint(h.width) + _varint(h.sets) + _varint(h.n)
    if custom_omega:
        out += struct.pack("<ff", h.omega_first, h.omega)
    if h.bits is not None:
        out.append(h.bits)
    out += encode_sizes(h.sizes, mixed) + encode_names(h.names)
    for c in h.codes:
        out.append(c.family)
        out += _f16(c.step) + _f16(c.scale)
    return bytes(out)


def coeff_bytes(coeffs: np.ndarray) -> bytes:
    return np.asarray(coeffs, dtype="<f2").tobytes()


def write(h: Header, coeffs: np.ndarray | None, weights: bytes) -> bytes:
    """The complete archive. `coeffs` (Header.coeff_shape) is stored as float16 for learned
    coefficients that are not coded in the weights stream; otherwise it must be None."""
    body = bytearray(MAGIC) + bytes([VERSION]) + encode_header(h)
    if h.coeffs != "linear" and not h.coeffs_coded:
        if coeffs is None or np.shape(coeffs) != h.coeff_shape():
            raise ValueError(f"learned coefficients need a {h.coeff_shape()} matrix")
        body += coeff_bytes(coeffs)
    if h.bits is not None:
        weights = bytes(weights) + bytes(max(0, min_stream_bytes(h.n_params()) - len(weights)))
    body += weights
    if len(body) + 4 > MAX_ARCHIVE_BYTES:
        raise ValueError(f"archive of {len(body) + 4} bytes is over the format's {MAX_ARCHIVE_BYTES} bytes")
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def min_stream_bytes(values: int) -> int:
    """The fewest bytes a range-coded section may have that decodes to `values` values (the reader's
    bound on declared work; see MAX_VALUES_PER_BYTE)."""
    return -(-values // MAX_VALUES_PER_BYTE)


def _header_problem(h: Header) -> str | None:
    if not (1 <= h.depth <= MAX_DEPTH and 1 <= h.width <= MAX_WIDTH and 1 <= h.sets <= MAX_SETS):
        return f"architecture {h.depth}x{h.width}, K={h.sets} out of range"
    if not 1 <= h.n <= MAX_IMAGES or len(h.sizes) != h.n:
        return "image count out of range"
    if params_for(h.depth, h.width, h.sets) > MAX_PARAMS:
        return "network too large"
    if h.coeffs not in SCHEMES:
        return f"unknown coefficient scheme {h.coeffs!r}"
    if h.n * h.sets > MAX_PARAMS or (h.coeffs != "linear" and math.prod(h.coeff_shape()) > MAX_PARAMS):
        return "coefficient matrix too large"
    for o in (h.omega_first, h.omega):
        if not (math.isfinite(o) and 0 < o <= MAX_OMEGA):
            return f"omega {o} out of range"
    bits = h.bits
    if h.precision != "fp16" and (bits is None or not MIN_BITS <= bits <= MAX_BITS):
        return f"unknown precision {h.precision!r}"
    if bits is not None and len(h.codes) not in (2 * (h.depth + 1), 2 * (h.depth + 1) + (h.coeffs != "linear")):
        return "one tensor code per tensor needed"
    for hh, ww in h.sizes:
        if not (1 <= hh <= MAX_SIDE and 1 <= ww <= MAX_SIDE):
            return f"image size {hh}x{ww} out of range"
    for name in h.names:
        problem = check_name(name)
        if problem:
            return problem
    for c in h.codes:
        if c.family not in range(len(FAMILIES)) or not (c.step > 0 and math.isfinite(c.step)):
            return "bad tensor code"
        if not (c.scale > 0 and math.isfinite(c.scale)):
            return "bad tensor scale"
    return None


# ---------------------------------------------------------------------------------------- reading


class _Reader:
    def __init__(self, data: bytes, pos: int, end: int, source: str):
        self.data, self.pos, self.end, self.source = data, pos, end, source

    def fail(self, problem: str):
        raise MixinrError(f"{self.source}: {problem}")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            self.fail("truncated or corrupt header")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def varint(self, cap: int, what: str) -> int:
        value = shift = 0
        for _ in range(5):  # 35 bits: more than any cap
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if value > cap:
                    self.fail(f"{what} {value} out of range (max {cap})")
                return value
        self.fail(f"{what}: malformed number")

    def f16(self) -> float:
        return float(np.frombuffer(self.take(2), dtype="<f2")[0])


def read_sizes(r: _Reader, n: int, mixed: bool) -> list[tuple[int, int]]:
    sizes = []
    for _ in range(n if mixed else 1):
        hh, ww = r.varint(MAX_SIDE, "image height"), r.varint(MAX_SIDE, "image width")
        if hh < 1 or ww < 1:
            r.fail("image size must be at least 1x1")
        sizes.append((hh, ww))
    return sizes if mixed else sizes * n


def read_names(r: _Reader, n: int) -> list[str]:
    names, prev = [], b""
    for _ in range(n):
        pre = r.varint(MAX_NAME_BYTES, "name prefix")
        suf = r.varint(MAX_NAME_BYTES, "name suffix")
        rest = r.varint(MAX_NAME_BYTES, "name length")
        if pre + suf > len(prev) or pre + suf + rest > MAX_NAME_BYTES:
            r.fail("corrupt image name")
        cur = prev[:pre] + r.take(rest) + prev[len(prev) - suf :]
        try:
            name = cur.decode("utf-8")
        except UnicodeDecodeError:
            r.fail("image name is not UTF-8")
        problem = check_name(name)
        if problem:
            r.fail(problem)
        names.append(name)
        prev = cur
    return names


def check_start(head: bytes, source: str = "archive") -> None:
    """Refuse a file from its first bytes (the whole file when it is that short): empty or foreign.
    Readers call it on the first block, before reading (say) all of /dev/zero."""
    if not head:
        raise MixinrError(f"{source}: empty file, not a mixinr archive")
    if head[: len(MAGIC)] != MAGIC:
        if len(head) < len(MAGIC) and MAGIC.startswith(head):
            raise MixinrError(f"{source}: truncated file ({len(head)} bytes)")
        raise MixinrError(f"{source}: not a mixinr archive (wrong magic bytes)")


def format_version(data: bytes, source: str = "archive") -> int:
    """The format version byte of what looks like an archive (size, magic and length checked): which
    representation's reader gets it (codec.archive_from_bytes)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MixinrError(f"{source}: not bytes")
    if len(data) > MAX_ARCHIVE_BYTES:
        raise MixinrError(f"{source}: {len(data)} bytes, over the largest archive the format allows "
                          f"({MAX_ARCHIVE_BYTES} bytes)")
    check_start(bytes(data[:FIXED_BYTES]), source)
    if len(data) < FIXED_BYTES:
        raise MixinrError(f"{source}: truncated file ({len(data)} bytes)")
    return data[len(MAGIC)]


def check_crc(data: bytes, source: str = "archive") -> None:
    """The CRC-32 at the end of every version's archive, over all bytes before it."""
    end = len(data) - 4
    (stored_crc,) = struct.unpack("<I", data[end:])
    if zlib.crc32(data[:end]) != stored_crc:
        raise MixinrError(f"{source}: checksum mismatch (file truncated or corrupt)")


def read(data: bytes, source: str = "archive") -> Parsed:
    """Parse and validate a version-1 archive; every problem is a MixinrError naming `source`."""
    version = format_version(data, source)
    data = bytes(data)
    if version != VERSION:
        raise MixinrError(f"{source}: unknown format version {version} (this mixinr reads {VERSION})")
    check_crc(data, source)
    end = len(data) - 4
    r = _Reader(data, len(MAGIC) + 1, end, source)

    flags = r.u8()
    if flags & ~KNOWN_FLAGS:
        r.fail(f"unknown header flags {flags:#x}")
    if flags & (FLAG_PER_LAYER | FLAG_COEFFS_CODED) and not flags & FLAG_LEARNED:
        r.fail("coefficient flags set without learned coefficients")
    if flags & FLAG_COEFFS_CODED and not flags & FLAG_QUANTISED:
        r.fail("coded coefficients need quantised weights")
    depth = r.varint(MAX_DEPTH, "depth")
    width = r.varint(MAX_WIDTH, "width")
    sets = r.varint(MAX_SETS, "number of weight sets K")
    n = r.varint(MAX_IMAGES, "number of images N")
    if min(depth, width, sets, n) < 1:
        r.fail("depth, width, K and N must be at least 1")
    if params_for(depth, width, sets) > MAX_PARAMS:
        r.fail(f"network {depth}x{width}, K={sets} too large")
    # Each image needs at least 3 bytes of names: reject counts the file cannot hold before allocating.
    if 3 * n > end - r.pos:
        r.fail(f"header claims {n} images but the file is too short")
    if n * sets > MAX_PARAMS:  # the coefficient matrix, stored or not (linear ones are computed)
        r.fail(f"{n} images x K={sets} coefficients too many (max {MAX_PARAMS})")
    omega_first = omega = IMPLICIT_OMEGA
    if flags & FLAG_OMEGA:
        omega_first, omega = struct.unpack("<ff", r.take(8))
        for o in (omega_first, omega):
            if not (math.isfinite(o) and 0 < o <= MAX_OMEGA):
                r.fail(f"omega {o} out of range")
    precision = "fp16"
    if flags & FLAG_QUANTISED:
        bits = r.u8()
        if not MIN_BITS <= bits <= MAX_BITS:
            r.fail(f"bit depth {bits} out of range ({MIN_BITS}-{MAX_BITS})")
        precision = f"q{bits}"
    sizes = read_sizes(r, n, bool(flags & FLAG_MIXED_SIZES))
    names = read_names(r, n)
    codes = []
    if flags & FLAG_QUANTISED:
        for _ in range(2 * (depth + 1) + bool(flags & FLAG_COEFFS_CODED)):
            family = r.u8()
            step, scale = r.f16(), r.f16()
            if family >= len(FAMILIES):
                r.fail(f"unknown entropy model {family}")
            if not (step > 0 and math.isfinite(step) and scale > 0 and math.isfinite(scale)):
                r.fail("quantisation step or scale out of range")
            codes.append(TensorCode(family, step, scale))
    scheme = "linear" if not flags & FLAG_LEARNED else "per-layer" if flags & FLAG_PER_LAYER else "learned"
    header = Header(depth, width, sets, omega_first, omega, scheme, precision, sizes, names, codes)
    if scheme != "linear" and math.prod(header.coeff_shape()) > MAX_PARAMS:
        r.fail(f"coefficient matrix {header.coeff_shape()} too large")
    sections = {"magic+version": len(MAGIC) + 1, "header": r.pos - len(MAGIC) - 1}

    coeffs = None
    if flags & FLAG_LEARNED and not header.coeffs_coded:
        shape = header.coeff_shape()
        raw = r.take(2 * math.prod(shape))
        coeffs = np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(shape)
        if not np.all(np.isfinite(coeffs)) or np.abs(coeffs).max() > MAX_COEFF:
            r.fail("coefficient matrix holds values out of range")
        sections["coefficients"] = len(raw)
    weights = data[r.pos : end]
    params = params_for(depth, width, sets) + (math.prod(header.coeff_shape()) if header.coeffs_coded else 0)
    if precision == "fp16":
        if len(weights) != 2 * params:
            r.fail(f"weights section is {len(weights)} bytes, expected {2 * params} (truncated or corrupt)")
    elif len(weights) > STREAM_BYTES_PER_VALUE * params + STREAM_SLACK_BYTES:
        r.fail("weights section larger than the network can need")
    elif len(weights) < min_stream_bytes(params):
        r.fail(f"weights section of {len(weights)} bytes cannot hold {params} values "
               f"(at most {MAX_VALUES_PER_BYTE} per byte)")
    sections["weights"] = len(weights)
    sections["checksum"] = 4
    return Parsed(header, coeffs, weights, sections)


def describe(h: Header, sections: dict[str, int], n_bytes: int) -> dict:
    """What `mixinr info` prints: the header's fields and the bytes per section (Parsed.sections), from
    the header alone (the weights are not decoded, so this needs no torch)."""
    return {
        "version": VERSION,
        "representation": "siren",
        "network": f"SIREN {h.depth}x{h.width} (omega first {h.omega_first:g}, hidden {h.omega:g}), K={h.sets} sets "
                   f"of {params_for(h.depth, h.width, 1)} parameters, coefficients {h.coeffs}",
        "bytes": n_bytes,
        "arch": {"depth": h.depth, "width": h.width, "omega_first": h.omega_first, "omega": h.omega},
        "sets": h.sets,
        "images_count": h.n,
        "coeffs": h.coeffs,
        "precision": h.precision,
        "params_per_set": params_for(h.depth, h.width, 1),
        "sections": dict(sections),
        "images": describe_images(h.names, h.sizes),
    }


def describe_images(names, sizes) -> list[dict]:
    """The "images" rows of `mixinr info`, for every version: index, name, height, width."""
    return [{"index": i, "name": n, "height": s[0], "width": s[1]} for i, (n, s) in enumerate(zip(names, sizes))]
