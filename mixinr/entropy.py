"""Quantisation and entropy coding of weight tensors (constriction's range coder).

Each tensor gets its own step: step = max|w| / (2^(bits-1) - 1), so symbols q = round(w / step)
lie in [-(2^(bits-1) - 1), 2^(bits-1) - 1]. The symbols of a tensor are coded with a quantised
Laplace or Gaussian of mean 0 whose scale is fitted to them (whichever codes the tensor shorter);
step and scale are stored as float16 and the encoder uses the stored (rounded) values, so encoder
and decoder see exactly the same model.
"""

from __future__ import annotations

import math

import numpy as np
import constriction  # its submodules are attributes of a native module, not importable by path

QuantizedGaussian = constriction.stream.model.QuantizedGaussian
QuantizedLaplace = constriction.stream.model.QuantizedLaplace
RangeEncoder = constriction.stream.queue.RangeEncoder
RangeDecoder = constriction.stream.queue.RangeDecoder

from mixinr.bitstream import FAMILIES, TensorCode

MIN_SCALE = 0.05  # symbol units: keeps a near-constant tensor's model well defined


def _f16(x: float) -> float:
    return float(np.float16(x))


def qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def quantise(t: np.ndarray, bits: int, step: float | None = None) -> tuple[np.ndarray, float]:
    """Symbols (int32) and the float16-exact step of one tensor.

    Default step: max|t| / (2^(bits-1) - 1), the whole alphabet. A given `step` (rate control's
    per-tensor allocation) is raised where needed so every symbol stays inside the alphabet.
    """
    t = np.asarray(t, dtype=np.float32)
    m = qmax(bits)
    peak = float(np.abs(t).max()) if t.size else 0.0
    floor = peak / m
    want = floor if step is None else max(float(step), floor)
    step = _f16(want) if want > 0 else 1.0
    if step == 0.0 or not np.isfinite(step):  # outside float16's range
        step = _f16(min(max(want, 6.2e-5), 65000.0))
    q = np.clip(np.rint(t / np.float32(step)), -m, m).astype(np.int32)
    return q, step


def bits_for(tensors: list[np.ndarray], steps: list[float]) -> int:
    """The smallest bit depth whose alphabet holds every tensor at its step (capped at 16)."""
    levels = max((float(np.abs(t).max()) / s for t, s in zip(tensors, steps) if t.size), default=1.0)
    return int(min(16, max(2, math.ceil(math.log2(levels + 1.0)) + 1)))


def dequantise(q: np.ndarray, step: float) -> np.ndarray:
    return q.astype(np.float32) * np.float32(step)


def _model(family: int, scale: float, bits: int):
    m = qmax(bits)
    cls = QuantizedLaplace if FAMILIES[family] == "laplace" else QuantizedGaussian
    return cls(-m, m, 0.0, scale)


def _candidates(q: np.ndarray) -> list[tuple[int, float]]:
    qf = q.astype(np.float64).ravel()
    lap = _f16(max(np.abs(qf).mean() if qf.size else 0.0, MIN_SCALE))  # Laplace MLE (mean 0)
    gau = _f16(max(np.sqrt((qf**2).mean()) if qf.size else 0.0, MIN_SCALE))
    return [(FAMILIES.index("laplace"), lap), (FAMILIES.index("gaussian"), gau)]


def encode_tensors(
    tensors: list[np.ndarray], bits: int, steps: list[float] | None = None
) -> tuple[list[TensorCode], bytes]:
    """Quantise (tensor i with steps[i], default the full alphabet) and entropy code `tensors` in
    order -> (per-tensor codes, the coded bytes)."""
    codes, symbols = [], []
    for i, t in enumerate(tensors):
        q, step = quantise(t, bits, None if steps is None else steps[i])
        q = q.ravel()
        best = None
        for family, scale in _candidates(q):
            enc = RangeEncoder()
            enc.encode(q, _model(family, scale, bits))
            if best is None or enc.num_bits() < best[0]:
                best = (enc.num_bits(), family, scale)
        codes.append(TensorCode(best[1], step, best[2]))
        symbols.append(q)
    enc = RangeEncoder()
    for q, c in zip(symbols, codes):
        if q.size:
            enc.encode(q, _model(c.family, c.scale, bits))
    return codes, stream_bytes(enc)


def stream_bytes(enc) -> bytes:
    """A range encoder's words as bytes; trailing zero bytes carry nothing (decoder() pads them back)."""
    return enc.get_compressed().astype("<u4").tobytes().rstrip(b"\0")


def decoder(data: bytes):
    """A range decoder over stream_bytes() output (any bytes: corrupt input decodes to garbage, never hangs)."""
    return RangeDecoder(np.frombuffer(data + b"\0" * ((-len(data)) % 4), dtype="<u4").astype(np.uint32))


def decode_tensors(
    payload: bytes, shapes: list[tuple[int, ...]], codes: list[TensorCode], bits: int
) -> list[np.ndarray]:
    """Inverse of encode_tensors. Corrupt input gives garbage values or ValueError, never a hang."""
    dec = decoder(payload)
    out = []
    for shape, c in zip(shapes, codes):
        n = int(np.prod(shape))
        q = dec.decode(_model(c.family, c.scale, bits), n) if n else np.zeros(0, np.int32)
        out.append(dequantise(np.asarray(q), c.step).reshape(shape))
    return out


def fp16_bytes(tensors: list[np.ndarray]) -> bytes:
    return b"".join(np.asarray(t, dtype="<f2").tobytes() for t in tensors)


def fp16_tensors(raw: bytes, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    out, pos = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(np.frombuffer(raw, dtype="<f2", count=n, offset=pos).astype(np.float32).reshape(shape))
        pos += 2 * n
    return out
