"""The codec API (mixinr.codec, mixinr.entropy): quantisation and entropy coding round trips, pack and
Archive agree with the fitted model, encode reports exactly the PSNR decode gives, archives are
byte-identical for the same seed, rate control keeps every archive under its budget, learned
coefficients are stored, mixed sizes survive, and decoding one image renders only that image."""

import dataclasses
import math
import struct
import zlib

import numpy as np
import pytest
import torch
from conftest import smooth_image
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mixinr import bitstream, codec, entropy
from mixinr.siren import archive as siren_archive
from mixinr.siren import encoder as siren
from mixinr.codec import Archive, EncodeConfig, encode, pack, read_archive
from mixinr.errors import BudgetTooSmall, MixinrError
from mixinr.metrics import psnr
from mixinr.model import Arch, MixtureSiren, render, to_uint8
from mixinr.train import FitConfig, fit

FAST = dict(epochs=60, progress=False, device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def group():
    return [smooth_image(12, 12, s) for s in range(3)], ["a.png", "b.png", "c.png"]


@pytest.mark.parametrize("bits", [2, 4, 8, 12, 16])
def test_entropy_round_trip(bits):
    """decode_tensors(encode_tensors(t)) is exactly the dequantised tensor, within step/2 of t."""
    rng = np.random.default_rng(bits)
    tensors = [rng.normal(0, 0.1, (2, 7, 5)).astype(np.float32), rng.laplace(0, 2, (2, 7)).astype(np.float32),
               np.zeros((2, 3), np.float32)]
    codes, payload = entropy.encode_tensors(tensors, bits)
    out = entropy.decode_tensors(payload, [t.shape for t in tensors], codes, bits)
    for t, o, c in zip(tensors, out, codes):
        q, step = entropy.quantise(t, bits)
        assert np.array_equal(o, entropy.dequantise(q, step).reshape(t.shape))
        assert np.abs(o - t).max() <= step / 2 * 1.001 + 1e-7


def test_entropy_coding_beats_fixed_length():
    """Laplace-like weights at 8 bits cost clearly fewer than 8 bits each."""
    t = np.random.default_rng(0).laplace(0, 0.05, (4, 500)).astype(np.float32)
    _, payload = entropy.encode_tensors([t], 8)
    assert len(payload) * 8 / t.size < 7.0


@pytest.mark.parametrize("precision", ["fp16", "q10"])
def test_pack_then_decode_matches_model(group, precision):
    """Archive.decode renders the stored (rounded) weights exactly as the model would."""
    images, names = group
    model = MixtureSiren(Arch(2, 6, 2), 3, generator=torch.Generator().manual_seed(0))
    data = pack(model, names, [im.shape[:2] for im in images], precision)
    a = Archive.from_bytes(data)
    assert a.names == names and a.sizes == [(12, 12)] * 3 and a.precision == precision
    with torch.no_grad():
        ref = to_uint8(render(model.image_layers(1), model.arch, 12, 12)).numpy()
    dec = a.decode(1)
    assert dec.shape == (12, 12, 3) and dec.dtype == np.uint8
    assert np.abs(dec.astype(int) - ref.astype(int)).max() <= (1 if precision == "fp16" else 8)


def test_encode_reports_decoded_psnr_and_is_deterministic(group, tmp_path):
    """The PSNR encode reports is that of Archive.decode on the written bytes; same seed -> same bytes."""
    images, names = group
    cfg = EncodeConfig(depth=2, width=8, precision="q9", **FAST)
    r1 = encode(images, names, cfg)
    path = tmp_path / "g.mixinr"
    path.write_bytes(r1.data)
    a = read_archive(path)
    for i, im in enumerate(r1.images):
        assert im.psnr == psnr(a.decode(i), images[i])
        assert (im.width, im.height) == (12, 12)
    assert r1.bpp == len(r1.data) * 8 / (3 * 144)
    assert r1.psnr_mean == pytest.approx(np.mean([im.psnr for im in r1.images]))
    r2 = encode(images, names, cfg)
    assert r2.data == r1.data
    r3 = encode(images, names, EncodeConfig(depth=2, width=8, precision="q9", seed=1, **FAST))
    assert r3.data != r1.data


def test_auto_precision_without_budget(group):
    """Without a budget, auto quantises to clearly fewer bytes than fp16 at almost the same PSNR."""
    images, names = group
    auto = encode(images, names, EncodeConfig(depth=2, width=8, **FAST))
    half = encode(images, names, EncodeConfig(depth=2, width=8, precision="fp16", **FAST))
    assert auto.precision.startswith("q") and half.precision == "fp16"
    assert len(auto.data) < 0.8 * len(half.data)
    assert auto.psnr_mean >= half.psnr_mean - 0.2


@pytest.mark.parametrize("bpp", [3.0, 6.0, 12.0])
def test_rate_control_stays_under_budget(group, bpp):
    """Whatever the budget, the archive never exceeds it, and a bigger budget buys a bigger network."""
    images, names = group
    r = encode(images, names, EncodeConfig(bpp=bpp, **FAST))
    assert r.bpp <= bpp
    assert len(r.data) <= int(bpp * 3 * 144 / 8)
    assert Archive.from_bytes(r.data).arch == r.arch
    if bpp == 12.0:
        small = encode(images, names, EncodeConfig(bpp=3.0, **FAST))
        assert r.arch.width > small.arch.width
    if bpp == 6.0:  # rate control is deterministic too
        assert encode(images, names, EncodeConfig(bpp=bpp, **FAST)).data == r.data


def test_rate_control_fp16_and_fixed_width(group):
    """A fixed precision or a fixed width is respected, and still kept under the budget."""
    images, names = group
    r = encode(images, names, EncodeConfig(bpp=8.0, precision="fp16", **FAST))
    assert r.precision == "fp16" and r.bpp <= 8.0
    r = encode(images, names, EncodeConfig(bpp=8.0, width=4, depth=3, **FAST))
    assert (r.arch.depth, r.arch.width) == (3, 4) and r.bpp <= 8.0


def test_depth_follows_the_image_size(group):
    """Without --depth, small images get DEFAULT_DEPTH and images averaging over LARGE_PIXELS get
    LARGE_DEPTH (a 12x12 group at depth 5, one 72x72 image at depth 9); a given depth is kept."""
    rules = codec.NetworkRules()
    assert siren.default_depth(32 * 32) == rules.small_depth == 5
    assert siren.default_depth(128 * 192) == rules.large_depth == 9
    assert siren.default_depth((64 * 64 + 65 * 65) / 2) == rules.large_depth
    assert siren.default_depth(32 * 32, codec.NetworkRules(small_depth=4)) == 4
    images, names = group
    assert encode(images, names, EncodeConfig(bpp=8.0, **FAST)).arch.depth == 5
    big = encode([smooth_image(72, 72, 0)], ["big.png"], EncodeConfig(bpp=1.0, epochs=5, qat_epochs=0, progress=False))
    assert big.arch.depth == 9 and big.bpp <= 1.0
    assert encode(images, names, EncodeConfig(bpp=8.0, depth=3, **FAST)).arch.depth == 3


def test_budget_too_small_names_a_budget_that_works(group):
    """A budget below even the smallest network's size is a MixinrError before any fitting, naming the
    bpp that works (encoding there succeeds). A fixed network's estimate before fitting is a lower bound
    (4x40 overfits 432 values to ~96 dB, so even its coarsest steps cost 9 bits a weight); the fit then
    names the exact budget, and encoding there succeeds."""
    images, names = group
    fast = dict(FAST, epochs=20, qat_epochs=0)
    for cfg, tries in ((EncodeConfig(bpp=0.05, **fast), 1), (EncodeConfig(bpp=2.0, depth=4, width=40, **fast), 2)):
        for _ in range(tries):
            with pytest.raises(BudgetTooSmall, match="budget too small") as info:
                encode(images, names, cfg)
            assert f"use --bpp {info.value.min_bpp:g} or more" in str(info.value) and info.value.min_bpp > cfg.bpp
            cfg = dataclasses.replace(cfg, bpp=info.value.min_bpp)
        assert encode(images, names, cfg).bpp <= cfg.bpp


@pytest.mark.parametrize("scheme", ["learned", "per-layer"])
def test_learned_coefficients_are_stored(group, scheme):
    """Learned coefficients ((N, K), or (L+1, N, K) per layer) go into the archive: as float16 beside
    fp16 weights, as the last range-coded tensor of a quantised archive; decode uses what was stored."""
    images, names = group
    res = fit(images, Arch(2, 8, 3), FitConfig(epochs=40, coeffs=scheme, progress=False, device="cpu"))
    shape = (3, 3) if scheme == "learned" else (3, 3, 3)
    assert res.model.coeffs.shape == shape
    half = Archive.from_bytes(pack(res.model, names, [(12, 12)] * 3, "fp16"))
    assert half.scheme == scheme and half.sections["coefficients"] == 2 * math.prod(shape)
    assert torch.equal(half.coeffs, res.model.coeffs.detach().half().float())
    coded = Archive.from_bytes(pack(res.model, names, [(12, 12)] * 3, "q10"))
    assert coded.scheme == scheme and "coefficients" not in coded.sections and coded.coeffs.shape == shape
    step = max(abs(res.model.coeffs).max().item() / 511, 1e-3)
    assert torch.allclose(coded.coeffs, res.model.coeffs.detach(), atol=step)
    for i in range(3):  # the decoder mixes each layer with the stored rows
        ref = to_uint8(render(res.model.image_layers(i), res.model.arch, 12, 12)).numpy()
        assert np.abs(coded.decode(i).astype(int) - ref).max() <= 6
    r = encode(images, names, EncodeConfig(depth=2, width=8, coeffs=scheme, precision="q10", **FAST))
    assert Archive.from_bytes(r.data).scheme == scheme


def test_mixed_sizes_keep_their_sizes():
    """Images of different sizes in one archive decode at their own sizes, or at any requested size."""
    images = [smooth_image(10, 14, 0), smooth_image(16, 8, 1)]
    r = encode(images, ["wide.png", "tall.png"], EncodeConfig(depth=2, width=6, precision="q8", **FAST))
    a = Archive.from_bytes(r.data)
    assert a.sizes == [(10, 14), (16, 8)]
    assert a.decode(0).shape == (10, 14, 3) and a.decode(1).shape == (16, 8, 3)
    assert a.decode(1, (33, 5)).shape == (33, 5, 3)
    assert [(im.width, im.height) for im in r.images] == [(14, 10), (8, 16)]


def test_decoding_one_image_renders_only_that_image(group, monkeypatch):
    """Archive.decode(i) renders one network, the one mixed with image i's coefficients."""
    images, names = group
    model = MixtureSiren(Arch(2, 5, 2), 3, generator=torch.Generator().manual_seed(1))
    a = Archive.from_bytes(pack(model, names, [(12, 12)] * 3, "fp16"))
    calls = []
    real = siren_archive.render
    monkeypatch.setattr(siren_archive, "render", lambda layers, *rest: calls.append(layers) or real(layers, *rest))
    a.decode(2)
    assert len(calls) == 1
    expected = a.layers(2)
    assert all(torch.equal(w, we) for (w, _), (we, _) in zip(calls[0], expected))


@pytest.mark.parametrize(
    "images, names, cfg, message",
    [
        ([], [], EncodeConfig(bpp=1.0), "no input images"),
        ([np.zeros((4, 4), np.uint8)], ["x.png"], EncodeConfig(bpp=1.0), "expected an"),
        ([np.zeros((4, 4, 3), np.uint8)], ["a/b.png"], EncodeConfig(bpp=1.0), "not a plain file name"),
        ([np.zeros((4, 4, 3), np.uint8)], ["x.png"], EncodeConfig(), "give --bpp"),
        ([np.zeros((4, 4, 3), np.uint8)], ["x.png"], EncodeConfig(bpp=-1.0), "positive"),
        ([np.zeros((4, 4, 3), np.uint8)], ["x.png"], EncodeConfig(bpp=1.0, precision="q40"), "precision"),
        ([np.zeros((4, 4, 3), np.uint8)], ["x.png"], EncodeConfig(bpp=1.0, sets=0), "--sets"),
        ([np.zeros((4, 4, 3), np.uint8)], ["x.png"], EncodeConfig(bpp=1.0, lr=0.0), "learning rate"),
        ([np.zeros((4, 4, 3), np.uint8)], ["x.png"], EncodeConfig(bpp=1.0, coeffs="per-image"), "--coeffs"),
    ],
)
def test_bad_encode_inputs(images, names, cfg, message):
    """Bad inputs and settings are one-line MixinrErrors, raised before any fitting."""
    with pytest.raises(MixinrError, match=message):
        encode(images, names, cfg)


def test_decode_errors(group, tmp_path):
    """Bad indices, absurd sizes, missing files and corrupt weights are MixinrErrors."""
    images, names = group
    model = MixtureSiren(Arch(2, 5, 2), 3, generator=torch.Generator().manual_seed(1))
    data = pack(model, names, [(12, 12)] * 3, "q8")
    a = Archive.from_bytes(data)
    with pytest.raises(MixinrError, match="no image 3"):
        a.decode(3)
    with pytest.raises(MixinrError, match="out of range"):
        a.decode(0, (0, 5))
    with pytest.raises(MixinrError, match="out of range"):
        a.decode(0, (60000, 60000))
    with pytest.raises(MixinrError, match="no such file"):
        read_archive(tmp_path / "missing.mixinr")
    # Valid header and checksum but garbage in the entropy-coded weights: still only MixinrError or a decode.
    p = bitstream.read(data)
    for fill in (b"", b"\xff" * 3, b"\x00" * 40, bytes(range(256))):
        try:
            Archive.from_bytes(bitstream.write(p.header, None, fill)).decode(0)
        except MixinrError:
            pass


QUANTISED = pack(MixtureSiren(Arch(2, 4, 2), 2, generator=torch.Generator().manual_seed(2)), ["x.png", "y.png"],
                 [(5, 6), (3, 4)], "q9")


@settings(max_examples=200, deadline=None)
@given(flips=st.lists(st.integers(0, len(QUANTISED) * 8 - 1), min_size=1, max_size=5),
       cut=st.integers(0, len(QUANTISED)), fix_crc=st.booleans())
@example(flips=[480, 530], cut=77, fix_crc=True)  # constriction raised AssertionError here once
def test_fuzz_archive_decoding(flips, cut, fix_crc):
    """Bit flips and truncations of a real quantised archive, with or without a repaired checksum:
    Archive.from_bytes and decode either work or raise MixinrError; nothing else escapes."""
    data = bytearray(QUANTISED)
    for bit in flips:
        data[bit // 8] ^= 1 << (bit % 8)
    data = bytes(data[:cut])
    if fix_crc and len(data) > 4:
        data = data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))
    try:
        a = Archive.from_bytes(data)
        for i in range(len(a.names)):
            a.decode(i)
    except MixinrError:
        pass


def test_refit_when_first_width_is_off(group):
    """A first width far too wide for the budget (a wrong bits-per-weight guess) is corrected by a
    narrower refit, and the result still fits the budget."""
    images, names = group
    r = encode(images, names, EncodeConfig(bpp=4.0, rate=codec.RateControl(est_bits_per_param=0.5), **FAST))
    assert r.bpp <= 4.0
    first = siren.width_for(int(4.0 * 3 * 144 / 8), 5, 2, 0, 0.5)
    assert r.arch.width < first


def test_single_image_uses_one_set():
    """One image never pays for a second weight set it could not use."""
    r = encode([smooth_image(12, 12, 5)], ["solo.png"], EncodeConfig(bpp=8.0, **FAST))
    assert r.arch.sets == 1 and Archive.from_bytes(r.data).arch.sets == 1 and r.bpp <= 8.0


def test_quantisation_aware_fine_tuning(group):
    """QAT (on by default) never exceeds the budget, never lowers the PSNR of the archive rate control
    had chosen without it (same seed: the same fits and steps), stays deterministic, records a trial for
    every fit rate control made (here a refit: two), stores the best of the fits as finished (fine-tuned
    or not, whichever decoded better), and qat_epochs=0 gives the archive of the plain rate control."""
    images, names = group
    # A first width too wide (5x3, predicted to lose 5.7 dB) forces the refit (5x2); left to the
    # default guess, a better fit once made the refit unneeded and this test failed in CI. QAT's lr
    # 1e-3: a tiny fit, few epochs, a visible step.
    fast = dict(rate=codec.RateControl(est_bits_per_param=3.0), qat=codec.QatConfig(lr=1e-3), **FAST)
    budget = int(4.0 * 3 * 144 / 8)
    plain = encode(images, names, EncodeConfig(bpp=4.0, qat_epochs=0, **fast))
    tuned = encode(images, names, EncodeConfig(bpp=4.0, qat_epochs=40, **fast))
    assert len(tuned.data) <= budget and len(plain.data) <= budget
    assert tuned.psnr_mean >= plain.psnr_mean
    assert not any("qat_epochs" in t for t in plain.trials)
    qat = [t for t in tuned.trials if "qat_epochs" in t]
    fitted = [t for t in tuned.trials if "qat_epochs" not in t]
    assert len(qat) == len(fitted) == 2 and all(t["qat_epochs"] == 40 and t["bytes"] <= budget for t in qat)
    finished = [max(a["psnr"], b["psnr"]) for a, b in zip(fitted, qat)]
    assert tuned.psnr_mean == pytest.approx(max(finished), abs=1e-12)
    if tuned.data != plain.data:  # fine-tuning was kept: it must have been the better archive
        assert tuned.psnr_mean in [t["psnr"] for t in qat] and tuned.psnr_mean > plain.psnr_mean
    assert encode(images, names, EncodeConfig(bpp=4.0, qat_epochs=40, **fast)).data == tuned.data
    with pytest.raises(MixinrError, match="qat-epochs"):
        encode(images, names, EncodeConfig(bpp=4.0, qat_epochs=-1, **fast))


def test_fine_tuning_keeps_the_steps_and_gains(group):
    """The incrementally quantised candidate keeps its parent's sensitivities (an alpha names the same
    steps), its every coded value lies on that alpha's grid, and on a coarse quantisation it decodes
    better than its parent rounded to the same steps, for about the same bytes."""
    images, names = group
    sizes = [im.shape[:2] for im in images]
    res = fit(images, Arch(3, 10), FitConfig(epochs=150, t0=150, lr=1e-3, progress=False))
    qat = codec.QatConfig(lr=1e-3)  # tiny fit, few epochs: a visible step
    cand = siren.SirenCandidate(res.model, res.best_loss, images, names, sizes,
                                EncodeConfig(depth=3, width=10, qat=qat, **FAST))
    alpha = cand.alpha_for_loss(3.0)
    tuned = cand.fine_tuned(alpha, 60)
    assert tuned._g is cand._g and tuned.qat_seconds > 0
    assert tuned.stored_steps(alpha) == cand.stored_steps(alpha)
    for t, step in zip(tuned.tensors, tuned.stored_steps(alpha)):
        assert np.array_equal(t / np.float32(step), np.rint(t / np.float32(step)))
    assert abs(len(tuned.pack(alpha)) - len(cand.pack(alpha))) <= 0.05 * len(cand.pack(alpha))
    assert np.mean(tuned.psnrs(alpha)) > np.mean(cand.psnrs(alpha)) + 0.3


def test_auto_coefficients_follow_the_budget():
    """"auto" stores coefficients per layer when they are predicted to take at most a quarter of the
    budget (16 CIFAR images: 432 of 2048 bytes at 1 bpp), else one learned row per image; an explicit
    scheme is kept."""
    pixels = 16 * 32 * 32
    assert siren.coeff_scheme(EncodeConfig(bpp=1.0), 16, pixels) == "per-layer"
    assert siren.coeff_scheme(EncodeConfig(bpp=0.5), 16, pixels) == "learned"
    assert siren.coeff_scheme(EncodeConfig(), 16, pixels) == "per-layer"
    assert siren.coeff_scheme(EncodeConfig(bpp=0.5, coeffs="per-layer"), 16, pixels) == "per-layer"


def test_both_objectives_encode_within_budget_and_psnr_weights_rate_control(group):
    """Both objectives ("psnr", the default, and the seed's "mse") give archives within the budget that
    decode to the PSNRs reported; the sensitivities rate control uses under "psnr" weight each image's
    error (linear in the weights: the per-image parts add up to the unweighted figure, same seeded
    noise); an unknown objective is a clear error."""
    images, names = group
    assert EncodeConfig().objective == "psnr"
    for objective in ("psnr", "mse"):
        r = encode(images, names, EncodeConfig(bpp=4.0, objective=objective, **FAST))
        assert len(r.data) <= int(4.0 * 3 * 144 / 8)
        a = Archive.from_bytes(r.data)
        assert [psnr(a.decode(i), im) for i, im in enumerate(images)] == [im.psnr for im in r.images]
    model = fit(images, Arch(2, 6, sets=2), FitConfig(epochs=30, t0=30, lr=1e-3, coeffs="learned", progress=False)).model
    sizes = [im.shape[:2] for im in images]
    plain = siren.sensitivity(model, sizes)
    parts = sum(siren.sensitivity(model, sizes, image_weights=np.eye(3)[i]) for i in range(3))
    assert np.allclose(parts, plain, rtol=1e-4)
    assert np.allclose(siren.sensitivity(model, sizes, image_weights=[2.0, 2.0, 2.0]), 2 * plain, rtol=1e-5)
    with pytest.raises(MixinrError, match="objective"):
        encode(images, names, EncodeConfig(bpp=4.0, objective="ssim", **FAST))


def test_effort_scales_siren_epochs_and_grid_steps_and_5_is_the_defaults():
    """--effort: one number scales the whole schedule (SIREN epochs, its fine-tuning, grid steps) by
    EFFORT_SCALE; effort 5 leaves every default as it is; nothing else of the grid changes."""
    from mixinr.settings import EFFORT_SCALE, EncodeConfig, GridConfig
    base, photo = EncodeConfig(), 512 * 768
    assert base.resolved(photo).grid == base.grid and base.resolved(photo).schedule == base.schedule
    for effort, k in EFFORT_SCALE.items():
        r = EncodeConfig(effort=effort).resolved(photo)
        assert r.schedule.epochs == max(1, round(base.schedule.epochs * k))
        assert r.qat.epochs == (max(1, round(base.qat.epochs * k)) if base.qat.epochs else 0)
        assert r.grid == dataclasses.replace(GridConfig(), steps=max(1, round(GridConfig.steps * k)))
    assert EncodeConfig(effort=9).resolved(photo).grid.steps > EncodeConfig(effort=1).resolved(photo).grid.steps
