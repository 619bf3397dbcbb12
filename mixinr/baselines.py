"""Classical image codecs as baselines: encode an RGB image to real file bytes, decode them back.

Each codec is driven through a maintained library with its stock settings, so a figure here is the
figure a user gets by calling that library directly:

| name     | library                  | call                                                            | setting       |
| -------- | ------------------------ | --------------------------------------------------------------- | ------------- |
| jpeg     | Pillow                   | `Image.save(f, "JPEG", quality=q)` (4:2:0, baseline)            | quality 1-95  |
| webp     | Pillow (libwebp)         | `Image.save(f, "WEBP", quality=q)` (lossy, method 4)            | quality 0-100 |
| avif     | Pillow (libavif)         | `Image.save(f, "AVIF", quality=q)` (4:2:0, speed 6)             | quality 0-100 |
| jpeg2000 | Pillow (OpenJPEG)        | `Image.save(f, "JPEG2000", quality_mode="rates",                | target bpp    |
|          |                          |  quality_layers=[24/bpp], irreversible=True, mct=1)` (JP2 box)  |               |
| heic     | pillow-heif (libheif, x265) | `from_pillow(im).save(f, format="HEIF", quality=q)`          | quality 0-100 |
| jpegxl   | imagecodecs (libjxl)     | `jpegxl_encode(a, level=q)` (a bare JXL codestream, a valid    | quality 0-100 |
|          |                          |  .jxl file)                                                     |               |

Bytes are whole files, container and headers included: that is what a user stores. At 32x32 this
matters (a JPEG header alone is ~600 bytes, about 5 bpp; a HEIF box some 300-450 bytes).

A codec whose library is missing, or built without that format, is reported by `available()` as a
one-line reason and skipped; nothing here raises for that.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

DEFAULT_CODECS = ("jpeg", "webp", "avif", "heic", "jpegxl", "jpeg2000")


class CodecUnavailable(Exception):
    """The library for a codec is missing or lacks the format; the message is one line."""


@dataclass(frozen=True)
class Codec:
    name: str
    description: str
    setting_name: str  # what the numbers in `settings` mean ("quality", "target bpp")
    settings: tuple[float, ...]  # the sweep, from lowest to highest rate
    encode: Callable[[np.ndarray, float], bytes] = field(repr=False)  # (H, W, 3) uint8, setting -> file bytes
    decode: Callable[[bytes], np.ndarray] = field(repr=False)  # file bytes -> (H, W, 3) uint8
    probe: Callable[[], None] = field(repr=False)  # raises CodecUnavailable when it cannot run here


@dataclass
class Coded:
    """One encode/decode round trip."""

    data: bytes
    decoded: np.ndarray
    encode_s: float = 0.0  # wall seconds of the library's encode call
    decode_s: float = 0.0  # and of its decode call

    @property
    def n_bytes(self) -> int:
        return len(self.data)


def _pil(img: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8), "RGB")


def _pil_save(fmt: str, params: Callable[[float], dict]) -> Callable[[np.ndarray, float], bytes]:
    """An encoder calling `Image.save(buf, fmt, **params(setting))`."""

    def encode(img: np.ndarray, setting: float) -> bytes:
        buf = io.BytesIO()
        _pil(img).save(buf, fmt, **params(setting))
        return buf.getvalue()

    return encode


def _pil_decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _pil_probe(feature: str, label: str) -> Callable[[], None]:
    def probe() -> None:
        try:
            from PIL import features
        except ImportError:
            raise CodecUnavailable("Pillow is not installed") from None
        if not features.check(feature):
            raise CodecUnavailable(f"this Pillow is built without {label} support")

    return probe


def _heic_encode(img: np.ndarray, setting: float) -> bytes:
    import pillow_heif

    buf = io.BytesIO()
    pillow_heif.from_pillow(_pil(img)).save(buf, format="HEIF", quality=int(setting))
    return buf.getvalue()


def _heic_decode(data: bytes) -> np.ndarray:
    import pillow_heif

    heif = pillow_heif.open_heif(data, convert_hdr_to_8bit=True)
    return np.asarray(heif, dtype=np.uint8)[..., :3].copy()


def _heic_probe() -> None:
    try:
        import pillow_heif
    except ImportError:
        raise CodecUnavailable("pillow-heif is not installed (pip install pillow-heif)") from None
    if not pillow_heif.libheif_info().get("encoders", {}).get("x265"):
        raise CodecUnavailable("this pillow-heif has no HEVC (x265) encoder")


def _jxl_encode(img: np.ndarray, setting: float) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.jpegxl_encode(np.ascontiguousarray(img, dtype=np.uint8), level=int(setting)))


def _jxl_decode(data: bytes) -> np.ndarray:
    import imagecodecs

    out = np.asarray(imagecodecs.jpegxl_decode(data))
    return out[..., :3].astype(np.uint8, copy=True)


def _jxl_probe() -> None:
    try:
        import imagecodecs
    except ImportError:
        raise CodecUnavailable("imagecodecs is not installed (pip install imagecodecs)") from None
    if not getattr(imagecodecs, "JPEGXL", None) or not imagecodecs.JPEGXL.available:
        raise CodecUnavailable("this imagecodecs is built without JPEG XL support")


# Settings chosen so that each sweep spans roughly 0.1-5 bpp on Kodak-size images and reaches as
# low as the format allows on 32x32 ones (where headers set the floor).
_QUALITY_SWEEP = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
_J2K_BPP = (0.05, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 1.5, 2.5, 4.0, 6.0)

CODECS: dict[str, Codec] = {
    c.name: c
    for c in (
        Codec(
            "jpeg", "JPEG (Pillow/libjpeg, 4:2:0)", "quality", (1, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95),
            _pil_save("JPEG", lambda q: {"quality": int(q)}), _pil_decode, _pil_probe("jpg", "JPEG"),
        ),
        Codec(
            "webp", "WebP (Pillow/libwebp, lossy)", "quality", _QUALITY_SWEEP + (100,),
            _pil_save("WEBP", lambda q: {"quality": int(q)}), _pil_decode, _pil_probe("webp", "WebP"),
        ),
        Codec(
            "avif", "AVIF (Pillow/libavif, 4:2:0)", "quality", _QUALITY_SWEEP,
            _pil_save("AVIF", lambda q: {"quality": int(q)}), _pil_decode, _pil_probe("avif", "AVIF"),
        ),
        Codec(
            "heic", "HEIC (pillow-heif/x265, HEVC intra, BPG family)", "quality", _QUALITY_SWEEP,
            _heic_encode, _heic_decode, _heic_probe,
        ),
        Codec(
            "jpegxl", "JPEG XL (imagecodecs/libjxl)", "quality", (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
            _jxl_encode, _jxl_decode, _jxl_probe,
        ),
        Codec(
            "jpeg2000", "JPEG 2000 (Pillow/OpenJPEG, 9/7 wavelet, JP2)", "target bpp", _J2K_BPP,
            # OpenJPEG's "rates" are compression ratios against the raw 24-bit image.
            _pil_save("JPEG2000", lambda b: {"quality_mode": "rates", "quality_layers": [24.0 / b],
                                         "irreversible": True, "mct": 1}),
            _pil_decode, _pil_probe("jpg_2000", "JPEG 2000"),
        ),
    )
}


def available(names=DEFAULT_CODECS) -> tuple[list[Codec], list[str]]:
    """The named codecs that can run here, and one notice line per codec skipped (and why).

    A probe failure of any kind (missing module, missing format, a library that fails on a tiny
    test image) skips the codec; it never stops the comparison.
    """
    codecs, notices = [], []
    for name in names:
        codec = CODECS.get(name)
        if codec is None:
            notices.append(f"{name}: skipped, unknown codec (known: {', '.join(CODECS)})")
            continue
        try:
            codec.probe()
            # A real round trip on a tiny image: a library can import yet fail to encode.
            tiny = np.full((16, 16, 3), 128, np.uint8)
            out = codec.decode(codec.encode(tiny, codec.settings[len(codec.settings) // 2]))
            if out.shape != tiny.shape:
                raise CodecUnavailable(f"decoded a {out.shape} array from a {tiny.shape} image")
        except CodecUnavailable as e:
            notices.append(f"{name}: skipped, {e}")
            continue
        except Exception as e:  # noqa: BLE001 - any library failure means "not usable here"
            notices.append(f"{name}: skipped, {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": "))
            continue
        codecs.append(codec)
    return codecs, notices


def round_trip(codec: Codec, img: np.ndarray, setting: float) -> Coded:
    """Encode `img` at `setting`, decode the bytes, check the shape came back."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    t0 = time.perf_counter()
    data = codec.encode(img, setting)
    t1 = time.perf_counter()
    decoded = codec.decode(data)
    t2 = time.perf_counter()
    if decoded.shape != img.shape:
        raise RuntimeError(f"{codec.name}: decoded shape {decoded.shape} != input {img.shape}")
    return Coded(data, decoded, t1 - t0, t2 - t1)


def sweep(codec: Codec, img: np.ndarray, settings=None) -> list[tuple[float, Coded]]:
    """Round trips of `img` at every setting of the codec's sweep (or the given ones)."""
    return [(s, round_trip(codec, img, s)) for s in (codec.settings if settings is None else settings)]
