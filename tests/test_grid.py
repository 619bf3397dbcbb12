"""The grid representation (mixinr.grid): interpolation, format, rate control and decoding."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import smooth_image
from mixinr import bitstream
from mixinr.errors import MixinrError
from mixinr.grid import format as gformat
from mixinr.grid.archive import GridArchive, pack
from mixinr.codec import EncodeConfig, archive_from_bytes, encode
from mixinr.grid.fit import GridModel
from mixinr.metrics import psnr
from mixinr.settings import GridConfig
from mixinr.grid.latents import upsample, upsample_frame

TINY = GridConfig(levels=4, widths=(8,), steps=300, sets=2)


def test_exact_upsampling_matches_torch_and_bands_match_the_frame():
    """The decoder's element-wise interpolation equals torch's bilinear (align_corners=False) to float
    rounding, and any band of rows is bit-identical to the same rows of the whole frame."""
    gen = torch.Generator().manual_seed(0)
    grids = [torch.randn(13, 17, generator=gen), torch.randn(7, 9, generator=gen), torch.randn(4, 5, generator=gen)]
    full = upsample(grids, 13, 17)
    assert torch.allclose(full, upsample_frame(grids, 13, 17), atol=1e-5)
    assert torch.equal(upsample(grids, 13, 17, slice(3, 8)), full[3:8])
    big = upsample(grids, 40, 50)  # any output size: the grids are interpolated there
    ref = F.interpolate(grids[2][None, None], size=(40, 50), mode="bilinear", align_corners=False)[0, 0]
    assert torch.allclose(big[..., 2], ref, atol=1e-5)


def _archive(data: bytes) -> GridArchive:
    assert bitstream.format_version(data) == gformat.VERSION
    return GridArchive.from_bytes(data, "test")


def test_pack_round_trip_decodes_the_models_latents_and_any_size(one_thread):
    """A fresh model's archive parses back to its shapes and names; the decoder renders at any size."""
    sizes = [(12, 20), (9, 9)]
    model = GridModel(sizes, TINY)
    with torch.no_grad():
        model.latents[0][1].copy_(torch.arange(60.0).view(6, 10) / 7)
    data = pack(model, ["a.png", "b.png"], latent_step=0.5)
    archive = _archive(data)
    assert archive.names == ["a.png", "b.png"] and archive.sizes == sizes
    decoded = archive._latents[0][1].numpy()
    assert np.array_equal(decoded, np.rint(np.arange(60.0).reshape(6, 10) / 7 / 0.5) * 0.5)
    assert archive.render(1, 30, 7).shape == (30, 7, 3)
    assert archive.info()["representation"] == "grid"


def test_encode_stays_within_budget_and_reports_the_decoded_psnr(one_thread):
    """At a bpp budget the archive's real bytes never pass it, and the PSNR reported is that of the
    archive's own decode; a budget smaller than the header and synthesis is a clear error."""
    images = [smooth_image(24, 32, s) for s in range(2)]
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    cfg = EncodeConfig(bpp=4.0, representation="grid", grid=TINY)
    result = encode(images, ["a.png", "b.png"], cfg)
    assert len(result.data) <= math.floor(4.0 * pixels / 8)
    archive = archive_from_bytes(result.data)  # the codec's reader picks the grid's by the version byte
    assert isinstance(archive, GridArchive)
    psnrs = [im.psnr for im in result.images]
    assert psnrs == [psnr(archive.decode(i), im) for i, im in enumerate(images)]
    assert min(psnrs) > 22  # smooth images at 4 bpp (measured ~25): far above a flat grey (~10 dB)
    with pytest.raises(MixinrError, match="budget too small"):
        encode(images, ["a.png", "b.png"], dataclasses.replace(cfg, bpp=0.05))


def test_header_claiming_more_latents_than_the_stream_can_hold_is_refused():
    """A valid-checksum archive whose sizes claim far more latent values than its bytes could code (a
    65535 x 65535 image in a few hundred bytes) is refused before any decoding."""
    model = GridModel([(8, 8)], TINY)
    with torch.no_grad():
        model.latents[0][0].fill_(3.0)
    good = gformat.read(pack(model, ["x.png"]))
    h = dataclasses.replace(good.header, sizes=[(65535, 65535)])
    bad = gformat.write(h, good.weights, good.latents)
    with pytest.raises(MixinrError, match="latent values|pixels"):
        gformat.read(bad, "bad.mixinr")


def test_reproduce_kodak_grid_profile_resumes_and_prints_the_seeds_claim(tmp_path, one_thread):
    """`reproduce kodak --grid` codes the seed's Kodak groups present with the grid at 0.6 real bpp, writes
    one row per group, gives the seed's claim beside its mean, and a rerun reuses the finished groups."""
    from PIL import Image
    from mixinr import experiments
    for i in (12, 3):  # kodim12 and kodim03: both in the seed's first N=6 group
        Image.fromarray(smooth_image(24, 36, i)).save(tmp_path / f"kodim{i:02d}.png")
    tiny = {"steps": 30, "levels": 3, "widths": [4]}
    import dataclasses as dc
    from mixinr import settings
    cfg = settings.EncodeConfig(grid=tiny)
    report = experiments.grid_kodak(tmp_path, tmp_path / "out", bpp=3.0, encode_config=cfg)
    assert report["seed_claim"] == {"psnr": 26.5, "bpp": 0.6, "per_sample_bpp": 0.2}
    assert len(report["rows"]) == 1 and sorted(report["rows"][0]["names"]) == ["kodim03.png", "kodim12.png"]
    assert report["mixinr"]["images"] == 2 and report["mixinr"]["bpp"] <= 3.0
    again = experiments.grid_kodak(tmp_path, tmp_path / "out", bpp=3.0, encode_config=cfg)
    assert again["rows"] == report["rows"]  # read back from results-grid.jsonl, not refitted


def test_fitted_scale_codes_a_sparse_level_shortest():
    """Regression: the header's Laplace scale was mean|q|, which for a mostly-zero level (the finest
    levels of a fit) coded it up to 1.8x longer than the best scale. The fitted scale's stream is now
    within 1% of the shortest over a fine scan of scales, on a sparse and on a dense level."""
    from mixinr.grid import prior

    rng = np.random.default_rng(0)
    sparse = np.where(rng.random(5000) < 0.06, rng.choice([-2, -1, 1, 1, 2, 3], 5000), 0).astype(np.int32)
    dense = np.rint(rng.laplace(0, 3, 5000)).astype(np.int32)
    for q in (sparse, dense):
        bound = int(np.abs(q).max())
        size = lambda s: len(prior.encode([q], [float(np.float16(s))], [bound]))  # noqa: E731
        best = min(size(s) for s in np.exp(np.linspace(np.log(0.05), np.log(20), 300)))
        assert size(prior.fitted_scale(q)) <= 1.01 * best + 2
    old = len(prior.encode([sparse], [float(np.float16(np.abs(sparse).mean()))], [3]))
    assert len(prior.encode([sparse], [prior.fitted_scale(sparse)], [3])) < 0.9 * old  # the bug, measured


def test_grid_fit_takes_the_device_flag_and_returns_a_cpu_model(one_thread):
    """--device reaches the grid's fit: "auto" runs where CUDA is (else the CPU) and the model comes back
    on the CPU for packing; "cuda" without a CUDA device is the same one-line error as the SIREN's."""
    from mixinr.grid.fit import fit

    images = [smooth_image(12, 16, 0)]
    model = fit(images, dataclasses.replace(TINY, steps=4), None, device="auto")
    assert all(p.device.type == "cpu" for p in model.parameters())
    if not torch.cuda.is_available():
        with pytest.raises(MixinrError, match="no CUDA device"):
            fit(images, dataclasses.replace(TINY, steps=4), None, device="cuda")
