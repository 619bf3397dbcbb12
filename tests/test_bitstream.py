"""The .mixinr file format: exact round trip of every header field, and every kind of damaged or
hostile file (truncated, wrong magic, unknown version, bad checksum, out-of-range fields, random
bit flips) ending in a one-line MixinrError rather than a crash, a hang or a huge allocation."""

import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixinr import bitstream
from mixinr.bitstream import Header, TensorCode
from mixinr.errors import MixinrError


def _header(**kw) -> Header:
    base = dict(depth=2, width=3, sets=2, omega_first=30.0, omega=30.0, coeffs="linear", precision="q8",
                sizes=[(4, 5), (4, 5), (4, 5)], names=["img-001.png", "img-002.png", "other.jpg"],
                codes=[TensorCode(i % 2, 0.015625 * (i + 1), 1.5 + i) for i in range(6)])
    base.update(kw)
    return Header(**base)


def _archive(**kw) -> bytes:
    h = _header(**kw)
    coeffs = np.arange(h.n * h.sets, dtype=np.float32).reshape(h.n, h.sets) / 8 if h.coeffs == "learned" else None
    weights = bytes(2 * h.n_params()) if h.precision == "fp16" else b"\x01\x02\x03\x04\x05"
    return bitstream.write(h, coeffs, weights)


def _recrc(body: bytes) -> bytes:
    """A file with `body` and a valid checksum: reaches the header checks behind the CRC."""
    return body + struct.pack("<I", zlib.crc32(body))


def test_round_trip_all_fields():
    """Every header field, learned coefficients and the weights come back exactly."""
    h = _header(coeffs="learned", omega_first=20.0, omega=31.5, sizes=[(4, 5), (7, 3), (1, 1)])
    coeffs = np.array([[1, 0], [0.5, 0.25], [-2, 3]], np.float32)
    data = bitstream.write(h, coeffs, b"payload")
    p = bitstream.read(data)
    assert p.header == h
    assert np.array_equal(p.coeffs, coeffs)
    assert p.weights == b"payload"
    assert sum(p.sections.values()) == len(data)


def test_coefficient_schemes_round_trip():
    """Per-layer coefficients ((L+1, N, K) float16 section) and coefficients coded in the weights
    stream (one tensor code more, no coefficient section) come back with their scheme."""
    h = _header(coeffs="per-layer", precision="fp16", codes=[])
    coeffs = np.arange(3 * 3 * 2, dtype=np.float32).reshape(3, 3, 2) / 4
    p = bitstream.read(bitstream.write(h, coeffs, bytes(2 * h.n_params())))
    assert p.header == h and np.array_equal(p.coeffs, coeffs)
    for scheme, shape in (("learned", (3, 2)), ("per-layer", (3, 3, 2))):
        h = _header(coeffs=scheme, codes=[TensorCode(0, 0.5, 2.0)] * 7)
        assert h.coeffs_coded and h.tensor_shapes()[-1] == shape
        p = bitstream.read(bitstream.write(h, None, b"\x01\x02"))
        assert p.header == h and p.coeffs is None and "coefficients" not in p.sections
    with pytest.raises(ValueError, match="one tensor code per tensor"):
        bitstream.write(_header(codes=[TensorCode(0, 0.5, 2.0)] * 7), None, b"")  # linear: nothing to code


def test_coefficient_flags_need_learned_coefficients():
    """Per-layer or coded-coefficient flags on an archive without learned coefficients are rejected."""
    data = bytearray(_archive())
    for flag in (bitstream.FLAG_PER_LAYER, bitstream.FLAG_COEFFS_CODED):
        bad = bytearray(data[:-4])
        bad[5] |= flag
        with pytest.raises(MixinrError, match="without learned coefficients"):
            bitstream.read(_recrc(bytes(bad)), "x.mixinr")


def test_fp16_round_trip_and_same_size_shortcut():
    """fp16 archives hold exactly 2 bytes per parameter; equal sizes are stored once."""
    data = _archive(precision="fp16", codes=[])
    p = bitstream.read(data)
    assert p.header.sizes == [(4, 5)] * 3 and p.header.precision == "fp16"
    assert len(p.weights) == 2 * bitstream.params_for(2, 3, 2)
    mixed = _archive(precision="fp16", codes=[], sizes=[(4, 5), (4, 6), (4, 5)])
    assert len(mixed) > len(data)


def test_header_uses_few_bytes():
    """Front-coded names and varints keep the header small (it counts against tiny budgets)."""
    names = [f"{i:04d}.png" for i in range(16)]
    h = _header(names=names, sizes=[(32, 32)] * 16)
    assert len(bitstream.encode_header(h)) <= 9 + 15 * 4 + 6 * 5 + 12  # first name, 4 B per later name, codes


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"MX", "truncated"),
        (b"PNG\x89rest-of-file", "wrong magic"),
        (b"MXNR\x01ab", "truncated"),
    ],
)
def test_short_or_foreign_files(data, message):
    """Empty, too short and foreign files are named as such."""
    with pytest.raises(MixinrError, match=message):
        bitstream.read(data, "x.mixinr")


def test_unknown_version():
    """A future version is refused by number, before the checksum."""
    data = bytearray(_archive())
    data[4] = 9
    with pytest.raises(MixinrError, match="unknown format version 9"):
        bitstream.read(bytes(data), "x.mixinr")


def test_every_truncation_fails_cleanly():
    """Every proper prefix of a valid archive is rejected with a MixinrError naming the file."""
    data = _archive(coeffs="learned")
    for n in range(len(data)):
        with pytest.raises(MixinrError, match="^x.mixinr: "):
            bitstream.read(data[:n], "x.mixinr")


def test_checksum_mismatch():
    """One flipped bit in the weights is caught by the checksum."""
    data = bytearray(_archive())
    data[-6] ^= 0x10
    with pytest.raises(MixinrError, match="checksum mismatch"):
        bitstream.read(bytes(data))


def _body(flags, *varints, extra=b"") -> bytes:
    out = bytearray(bitstream.MAGIC + bytes([bitstream.VERSION, flags]))
    for v in varints:
        out += bitstream._varint(v)
    return bytes(out) + extra


@pytest.mark.parametrize(
    "body, message",
    [
        (_body(0x80, 1, 1, 1, 1), "unknown header flags"),
        (_body(0, 65, 8, 2, 1), "depth 65 out of range"),
        (_body(0, 2, 5000, 2, 1), "width 5000 out of range"),
        (_body(0, 2, 8, 300, 1), "K 300 out of range"),
        (_body(0, 0, 8, 2, 1), "at least 1"),
        (_body(0, 64, 4096, 256, 1), "too large"),
        (_body(0, 2, 8, 2, 1 << 20), "file is too short"),  # a million names claimed in a tiny file
        (_body(0, 2, 8, 2, 1, 0, 5, extra=b"\x00" * 8), "at least 1x1"),
        (_body(0, 2, 8, 2, 1, 70000, 5, extra=b"\x00" * 8), "height 70000 out of range"),
        (_body(bitstream.FLAG_QUANTISED, 2, 8, 2, 1, extra=b"\x01" + b"\x00" * 8), "bit depth 1 out of range"),
        (_body(bitstream.FLAG_OMEGA, 2, 8, 2, 1, extra=struct.pack("<ff", float("nan"), 30) + b"\0" * 4), "omega"),
        (_body(0, 2, 8, 2, 1, 4, 4, 0, 0, 3, extra=b"../"), "not a plain file name"),
        (_body(0, 2, 8, 2, 1, 4, 4, 0, 0, 2, extra=b"\xff\xfe"), "not UTF-8"),
        (_body(0, 2, 8, 2, 1, 4, 4, 3, 0, 2, extra=b"ab"), "corrupt image name"),
        (_body(0, 2, 8, 2, 1, 4, 4, 0, 0, 1, extra=b"a" + b"\0" * 3), "weights section is 3 bytes"),
        (_body(0, 2, extra=b"\xff" * 6), "width: malformed number"),
    ],
)
def test_out_of_range_fields_behind_valid_checksum(body, message):
    """Header fields are validated (and capped before allocation) even when the checksum is right."""
    with pytest.raises(MixinrError, match=message):
        bitstream.read(_recrc(body), "x.mixinr")


def test_bad_tensor_codes_and_coefficients():
    """Zero steps, infinite scales and huge coefficients are refused."""
    data = _archive()
    p = bitstream.read(data)
    h = p.header
    bad = bytearray(data[:-4])
    start = 5 + len(bitstream.encode_header(h)) - 5 * len(h.codes)
    bad[start + 1 : start + 3] = np.array([0.0], "<f2").tobytes()
    with pytest.raises(MixinrError, match="step or scale"):
        bitstream.read(_recrc(bytes(bad)))
    h2 = _header(coeffs="learned")
    raw = bitstream.write(h2, np.full((3, 2), 60000.0, np.float32), b"x")
    with pytest.raises(MixinrError, match="coefficient matrix"):
        bitstream.read(raw)


def test_writer_refuses_unstorable_values():
    """The writer will not produce a file the reader would reject."""
    with pytest.raises(ValueError):
        bitstream.write(_header(names=["a/b.png", "c", "d"]), None, b"")
    with pytest.raises(ValueError):
        bitstream.write(_header(depth=70), None, b"")
    with pytest.raises(ValueError):
        bitstream.write(_header(codes=[]), None, b"")


VALID = _archive(coeffs="learned", sizes=[(4, 5), (7, 3), (2, 2)])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.integers(0, len(VALID) * 8 - 1), min_size=1, max_size=4),
       cut=st.integers(0, len(VALID)))
def test_fuzz_bit_flips_and_truncations(flips, cut):
    """Random bit flips then a truncation: either the unchanged archive or a MixinrError."""
    data = bytearray(VALID)
    for bit in flips:
        data[bit // 8] ^= 1 << (bit % 8)
    data = bytes(data[:cut])
    if data == VALID:
        bitstream.read(data)
        return
    with pytest.raises(MixinrError):
        bitstream.read(data)


@settings(max_examples=300, deadline=None)
@given(flips=st.lists(st.integers(0, (len(VALID) - 4) * 8 - 1), min_size=1, max_size=6),
       cut=st.integers(5, len(VALID) - 4))
def test_fuzz_behind_valid_checksum(flips, cut):
    """Mutated headers with a recomputed checksum parse into valid fields or raise MixinrError."""
    body = bytearray(VALID[:-4])
    for bit in flips:
        body[bit // 8] ^= 1 << (bit % 8)
    try:
        p = bitstream.read(_recrc(bytes(body[:cut])))
    except MixinrError:
        return
    h = p.header
    assert bitstream._header_problem(h) is None
    assert h.n_params() <= bitstream.MAX_PARAMS
