"""The SIREN's archives (format version 1, docs/format.md): fitted weights -> bytes (pack) and bytes ->
a decoder that renders any image at any size (Archive). The layout itself is mixinr.bitstream's."""

from __future__ import annotations

import numpy as np
import torch

from mixinr import bitstream, entropy
from mixinr.bitstream import Header, TensorCode
from mixinr.errors import MixinrError
from mixinr.model import Arch, MixtureSiren, image_layers, layer_coeffs, linear_coefficients, render, to_uint8
from mixinr.representation import output_size
from mixinr.settings import precision_bits
from mixinr.validate import MAX_DECODE_PIXELS, check_output_size


def coded_tensors(model: MixtureSiren) -> list[np.ndarray]:
    """The model's coded tensors in file order (MixtureSiren.coded_params), as float32 arrays."""
    return [t.detach().cpu().float().numpy() for t in model.coded_params()]


def _header(arch: Arch, names, sizes, scheme: str, precision: str, codes=()) -> Header:
    return Header(arch.depth, arch.width, arch.sets, float(arch.omega_first), float(arch.omega), scheme,
                  precision, [tuple(map(int, s)) for s in sizes], list(names), list(codes))


def _write(header: Header, coeffs, weights: bytes) -> bytes:
    try:
        return bitstream.write(header, coeffs, weights)
    except ValueError as e:
        raise MixinrError(f"cannot store this archive: {e}") from None


def pack_tensors(arch, tensors, scheme, names, sizes, precision, steps=None) -> bytes:
    """fp16: weights and (as their own section) coefficients as float16. Quantised (precision "q<b>",
    or steps given: the bits the steps need): every tensor, coefficients last, range coded."""
    if precision == "fp16":
        n = 2 * (arch.depth + 1)
        coeffs = tensors[n] if scheme != "linear" else None
        return _write(_header(arch, names, sizes, scheme, "fp16"), coeffs, entropy.fp16_bytes(tensors[:n]))
    bits = precision_bits(precision) if steps is None else entropy.bits_for(tensors, steps)
    codes, payload = entropy.encode_tensors(tensors, bits, steps)
    return _write(_header(arch, names, sizes, scheme, f"q{bits}", codes), None, payload)


def pack(model: MixtureSiren, names: list[str], sizes: list[tuple[int, int]], precision: str = "fp16") -> bytes:
    """Archive bytes of an already-fitted model; sizes are (height, width) per image."""
    if len(names) != model.n_images or len(sizes) != model.n_images:
        raise MixinrError(f"pack: {model.n_images} images in the model, {len(names)} names, {len(sizes)} sizes")
    return pack_tensors(model.arch, coded_tensors(model), model.scheme, names, sizes, precision)


def overhead(arch: Arch, names, sizes, scheme: str, quantised: bool) -> int:
    """Bytes of an archive whose weights section is empty (magic, header, coefficients, checksum)."""
    codes = [TensorCode(0, 1.0, 1.0)] * (2 * (arch.depth + 1) + (scheme != "linear")) if quantised else []
    h = _header(arch, names, sizes, scheme, "q8" if quantised else "fp16", codes)
    coeffs = np.zeros(h.coeff_shape(), np.float32) if scheme != "linear" and not quantised else None
    return len(_write(h, coeffs, b""))



class Archive:
    """A parsed, validated archive: the K weight sets are decoded once, images one at a time."""

    def __init__(self, parsed: bitstream.Parsed, source: str, n_bytes: int):
        h = parsed.header
        self.header, self.source, self.n_bytes, self.sections = h, source, n_bytes, parsed.sections
        self.madds_per_pixel = h.madds_per_pixel()  # the render cost cap counts pixels x this
        self.version = bitstream.VERSION
        self.names, self.sizes, self.precision, self.scheme = h.names, h.sizes, h.precision, h.coeffs
        self.arch = Arch(h.depth, h.width, h.sets, h.omega, h.omega_first)
        shapes = h.tensor_shapes()
        try:
            if h.precision == "fp16":
                tensors = entropy.fp16_tensors(parsed.weights, shapes)
            else:
                tensors = entropy.decode_tensors(parsed.weights, shapes, h.codes, h.bits)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - constriction raises AssertionError, or a Rust panic
            # (pyo3's PanicException derives from BaseException), on data its model cannot have produced.
            raise MixinrError(f"{source}: corrupt weights section ({type(e).__name__})") from None
        if not all(np.all(np.isfinite(t)) for t in tensors):
            raise MixinrError(f"{source}: weights section holds non-finite values")
        t = [torch.from_numpy(np.ascontiguousarray(x)) for x in tensors]
        n = 2 * (h.depth + 1)
        self._weights, self._biases = t[0:n:2], t[1:n:2]
        if h.coeffs_coded:
            self.coeffs = t[n]
        elif parsed.coeffs is not None:
            self.coeffs = torch.from_numpy(parsed.coeffs.copy())
        else:
            self.coeffs = linear_coefficients(h.n, h.sets)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "archive") -> "Archive":
        return cls(bitstream.read(data, source), source, len(data))

    def __len__(self) -> int:
        return len(self.names)

    def layers(self, index: int):
        """Image `index`'s own SIREN [(W, b)], theta_i = sum_k C[i, k] theta_k."""
        return image_layers(layer_coeffs(self.coeffs, self.arch.depth + 1)[:, index], self._weights, self._biases)

    def decode(self, index: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W, 3) uint8 of image `index` only, at its own size or `size` = (height, width)."""
        h, w = output_size(self, index, size, MAX_DECODE_PIXELS)
        check_output_size(self.source, h, w, self.madds_per_pixel)  # sides, pixels, pixels x network
        rgb = render(self.layers(index), self.arch, h, w)
        return to_uint8(rgb).numpy()

    def info(self) -> dict:
        return bitstream.describe(self.header, self.sections, self.n_bytes)
