"""Classical baselines: real round trips, rates that grow with quality, figures identical to calling
Pillow directly, and codecs whose library is missing skipped with a notice instead of a crash."""

import io
import sys

import numpy as np
import pytest
from conftest import smooth_image
from PIL import Image

from mixinr import baselines
from mixinr.baselines import CODECS, available, round_trip
from mixinr.compare import measure_codec
from mixinr.metrics import psnr


def textured(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth image plus mild noise: enough detail that every codec's rate depends on its setting."""
    rng = np.random.default_rng(seed)
    noisy = smooth_image(h, w, seed).astype(int) + rng.integers(-12, 13, (h, w, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


AVAILABLE, NOTICES = available()


def test_all_default_codecs_run_here():
    """The dev environment installs every library, so nothing should be skipped here."""
    assert [c.name for c in AVAILABLE] == list(baselines.DEFAULT_CODECS), NOTICES


@pytest.mark.parametrize("codec", AVAILABLE, ids=lambda c: c.name)
def test_round_trip_shape_and_rate_grow_with_quality(codec):
    """Every codec decodes its own bytes to the input's shape (uint8), and its sweep's bytes grow
    from the lowest to the highest setting (never shrinking along low/middle/high)."""
    img = textured(40, 48, 1)
    settings = codec.settings
    picked = [settings[0], settings[len(settings) // 2], settings[-1]]
    sizes, quality = [], []
    for s in picked:
        out = round_trip(codec, img, s)
        assert out.decoded.shape == img.shape and out.decoded.dtype == np.uint8
        sizes.append(out.n_bytes)
        quality.append(psnr(img, out.decoded))
    assert sizes[0] <= sizes[1] <= sizes[2] and sizes[0] < sizes[2], sizes
    assert quality[2] > quality[0], quality


def test_sweeps_span_the_useful_range_on_a_photo_sized_image():
    """On a 192x128 image the sweeps together reach below 0.3 bpp and above 3 bpp (the range asked
    for: roughly 0.1-5 bpp on Kodak-size images), so the RD curves overlap mixinr's budgets."""
    img = textured(128, 192, 2)
    px = img.shape[0] * img.shape[1]
    lows, highs = [], []
    for codec in AVAILABLE:
        lows.append(round_trip(codec, img, codec.settings[0]).n_bytes * 8 / px)
        highs.append(round_trip(codec, img, codec.settings[-1]).n_bytes * 8 / px)
    assert min(lows) < 0.3 and max(highs) > 3, (lows, highs)


@pytest.mark.parametrize("name,fmt", [("jpeg", "JPEG"), ("webp", "WEBP")])
def test_figures_match_a_direct_pillow_round_trip(name, fmt):
    """The bytes, bpp and PSNR of JPEG and WebP are exactly those of `Image.save(fmt, quality=q)`
    followed by `Image.open`, for two images and every setting of the sweep."""
    if name not in {c.name for c in AVAILABLE}:
        pytest.skip(f"{name} unavailable here")
    imgs = [textured(24, 32, 3), textured(32, 24, 4)]
    curve = measure_codec(CODECS[name], imgs, ["a", "b"])
    for k, q in enumerate(CODECS[name].settings):
        total, ps = 0, []
        for img in imgs:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, fmt, quality=q)
            data = buf.getvalue()
            dec = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            total += len(data)
            ps.append(psnr(img, dec))
            assert round_trip(CODECS[name], img, q).data == data
        assert curve.bpp[k] == total * 8 / (24 * 32 * 2)
        assert curve.psnr[k] == pytest.approx(np.mean(ps), abs=1e-12)
        points = [p for p in curve.points if p.setting == q]
        assert [p.psnr for p in points] == pytest.approx(ps, abs=1e-12)


def test_missing_libraries_are_skipped_with_one_line_notices(monkeypatch):
    """With pillow-heif and imagecodecs unimportable and Pillow lacking AVIF, those codecs are
    skipped with one line each saying why; the others still run; nothing raises."""
    from PIL import features

    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    monkeypatch.setitem(sys.modules, "imagecodecs", None)
    real_check = features.check
    monkeypatch.setattr(features, "check", lambda f: False if f == "avif" else real_check(f))
    codecs, notices = available(["jpeg", "heic", "jpegxl", "avif", "nosuch"])
    assert [c.name for c in codecs] == ["jpeg"]
    assert len(notices) == 4 and all("\n" not in n for n in notices)
    text = " | ".join(notices)
    assert "heic: skipped, pillow-heif is not installed" in text
    assert "jpegxl: skipped, imagecodecs is not installed" in text
    assert "avif: skipped, this Pillow is built without AVIF support" in text
    assert "nosuch: skipped, unknown codec" in text


def test_a_library_that_fails_at_encode_time_is_skipped(monkeypatch):
    """A library that imports but fails on a real encode is skipped too, with the error's name."""

    def broken(img, setting):
        raise OSError("encoder exploded\nsecond line")

    monkeypatch.setitem(CODECS, "webp", baselines.Codec(
        "webp", "broken", "quality", (1, 2), broken, CODECS["webp"].decode, lambda: None))
    codecs, notices = available(["webp", "jpeg"])
    assert [c.name for c in codecs] == ["jpeg"]
    assert notices == ["webp: skipped, OSError: encoder exploded"]
