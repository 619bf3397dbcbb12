"""Fuzzing whole archives (issue 21): files with a valid checksum and hostile headers (huge counts and
sizes, NaN and infinite floats, zero scales, unknown flags, weights sections of any length) either
decode or end in MixinrError, never another exception, and each within a memory and time bound: the
declared work is bounded by the file (docs/format.md "Caps"), so a file of at most a few hundred bytes
may use a few MB, never the gigabytes its header claims. The time bound is a hang guard (hypothesis'
deadline), not a speed target."""

import struct
import tracemalloc
import zlib
from datetime import timedelta

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mixinr import bitstream
from mixinr.codec import Archive
from mixinr.errors import MixinrError

MEMORY_BOUND = 64 << 20  # bytes numpy and Python allocate while reading and decoding one small file


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte, v = v & 0x7F, v >> 7
        out.append(byte | (0x80 if v else 0))
        if not v:
            return bytes(out)


OFTEN = st.sampled_from([True, True, True, True, False])  # shrinks towards True: towards a valid field


def counts(small: int):
    """Mostly plausible values (so parsing gets deep), sometimes the caps, sometimes far beyond them."""
    plausible = st.integers(1, small)
    return st.one_of(*[plausible] * 8, st.sampled_from([0, 64, 65, 256, 257, 4096, 4097, 65535, 1 << 20]),
                     st.integers(0, (1 << 35) - 1))


def floats(width: int, low: float, high: float):
    """Mostly in [low, high], sometimes NaN, infinite, zero, negative or huge."""
    exact = np.float16 if width == 16 else np.float32
    fine = st.floats(float(exact(low)), float(exact(high)), width=width)
    hostile = st.sampled_from([0.0, -0.0, -1.0, 1e-7, 6e4, 3e38, float("nan"), float("inf"), float("-inf")])
    return st.one_of(*[fine] * 4, hostile)


@st.composite
def archives(draw) -> bytes:
    """The bytes of an archive whose every header field is drawn, with a correct CRC-32."""
    if draw(OFTEN):  # a consistent set of flags, else any byte
        learned, quantised = draw(st.booleans()), draw(st.booleans())
        flags = (learned * bitstream.FLAG_LEARNED | quantised * bitstream.FLAG_QUANTISED
                 | draw(st.booleans()) * bitstream.FLAG_OMEGA | draw(st.booleans()) * bitstream.FLAG_MIXED_SIZES
                 | (learned and draw(st.booleans())) * bitstream.FLAG_PER_LAYER
                 | (learned and quantised and draw(st.booleans())) * bitstream.FLAG_COEFFS_CODED)
    else:
        flags = draw(st.integers(0, 255))
    depth, width, sets, n = draw(counts(3)), draw(counts(6)), draw(counts(3)), draw(counts(3))
    body = bytearray(bitstream.MAGIC + bytes([bitstream.VERSION, flags]))
    body += _varint(depth) + _varint(width) + _varint(sets) + _varint(n)
    if flags & bitstream.FLAG_OMEGA:
        body += struct.pack("<ff", draw(floats(32, 1.0, 60.0)), draw(floats(32, 1.0, 60.0)))
    if flags & bitstream.FLAG_QUANTISED:
        body.append(draw(st.one_of(st.integers(2, 16), st.integers(0, 255))))
    listed = min(n, 3)  # a header may claim more images than it lists
    for _ in range(listed if flags & bitstream.FLAG_MIXED_SIZES else 1):
        body += _varint(draw(counts(12))) + _varint(draw(counts(12)))
    for i in range(listed):
        name = f"{i}.png".encode() if draw(OFTEN) else draw(st.binary(max_size=6))
        body += _varint(0) + _varint(draw(st.sampled_from([0, 0, 0, 3]))) + _varint(len(name)) + name
    coded = flags & bitstream.FLAG_COEFFS_CODED
    if flags & bitstream.FLAG_QUANTISED:
        tensors = 2 * (min(depth, 8) + 1) + bool(coded)
        for _ in range(tensors if draw(OFTEN) else draw(st.integers(0, tensors + 1))):
            step, scale = draw(floats(16, 1e-3, 1.0)), draw(floats(16, 0.05, 50.0))
            body += bytes([draw(st.sampled_from([0, 1, 0, 1, 2, 255]))]) + np.array([step, scale], "<f2").tobytes()
    if flags & bitstream.FLAG_LEARNED and not coded:  # a coefficient section, often of the right size
        rows = (min(depth, 8) + 1 if flags & bitstream.FLAG_PER_LAYER else 1) * min(n, 8) * min(sets, 8)
        count = rows if draw(OFTEN) else draw(st.integers(0, 12))
        body += np.array([draw(floats(16, -2.0, 2.0)) for _ in range(count)], "<f2").tobytes()
    plausible = max(depth, width, sets) < 64
    if not flags & bitstream.FLAG_QUANTISED and plausible and draw(OFTEN):
        body += np.array(draw(st.lists(floats(16, -1.0, 1.0), min_size=1, max_size=4)) * (
            bitstream.params_for(max(depth, 1), max(width, 1), max(sets, 1))), "<f2").tobytes()[
            : 2 * bitstream.params_for(max(depth, 1), max(width, 1), max(sets, 1))]
    else:
        body += draw(st.binary(max_size=64))
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


@settings(max_examples=400, deadline=timedelta(seconds=20), suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=archives())
def test_hostile_archives_decode_or_raise_mixinr_error(data, one_thread):
    """Parse, decode the weights and render image 0 (at most 16x16): a result or MixinrError, within the bound."""
    tracemalloc.start()
    try:
        try:
            archive = Archive.from_bytes(data, "fuzz.mixinr")
            h, w = archive.sizes[0]
            img = archive.decode(0, (min(h, 16), min(w, 16)))
            assert img.dtype == np.uint8 and img.shape[2] == 3
            event("decoded")
        except MixinrError as e:
            assert str(e).startswith("fuzz.mixinr: ") and "\n" not in str(e)
            event(" ".join(str(e).split(": ", 1)[1].split()[:3]))  # --hypothesis-show-statistics: how far it got
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, f"{peak} bytes for a {len(data)}-byte file"
