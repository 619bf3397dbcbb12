"""The representation interface (mixinr.representation): a toy representation registered as one entry
of codec.REPRESENTATIONS is encoded by the same rate control (within the budget, the finest setting,
a refit when the first capacity is off) and read back by its format version byte, with no other code
knowing it; unknown versions and names are refused in one line."""

import math

import numpy as np
import pytest
from conftest import smooth_image

from mixinr import codec
from mixinr.codec import EncodeConfig, archive_from_bytes, encode
from mixinr.errors import MixinrError
from mixinr.representation import (Representation, alpha_for_noise_loss, finest_under, noise_alpha_range,
                                   noise_loss_db)

TOY_VERSION = 9
HEADER = b"MXNR" + bytes([TOY_VERSION])


class ToyCandidate:
    """Capacity c: 10c coded values, float PSNR 20 + c dB; bytes fall as alpha grows."""

    def __init__(self, capacity: int, n_images: int):
        self.arch, self.coeffs, self.n_images = capacity, "none", n_images
        self.float_mse, self.n_values, self.qat_seconds = 1e-3, 10 * capacity, None

    def describe(self):
        return {"capacity": self.arch}

    def pack(self, setting):
        bits = max(0.0, math.log2(1 / setting)) if not isinstance(setting, str) else 8
        return HEADER + bytes(math.ceil(self.n_values * bits / 8)) + bytes([self.arch])

    def psnrs(self, setting):
        return [20.0 + self.arch - self.predicted_loss_db(setting)] * self.n_images

    def precision(self, setting):
        return "q8"

    def predicted_loss_db(self, alpha):
        return noise_loss_db(self.float_mse, self.n_values, alpha)

    def alpha_for_loss(self, db):
        return alpha_for_noise_loss(self.float_mse, self.n_values, db)

    def alpha_range(self):
        return noise_alpha_range(self.float_mse, self.n_values)

    def fine_tuned(self, alpha, epochs):
        return None  # no fine-tuning: rate control keeps the fit as it is


class ToyPlan:
    fits: list = []

    def __init__(self, images, names, cfg):
        self.n, self.fixed_capacity = len(images), cfg.width

    def fit(self, capacity):
        ToyPlan.fits.append(capacity)
        return ToyCandidate(capacity, self.n)

    def min_bytes(self):
        return len(HEADER) + 2

    def capacity_for(self, budget, bits_per_value):
        return max(0, int((budget - len(HEADER) - 1) * 8 / bits_per_value / 10))

    def bits_per_value(self, cand, setting):
        return (len(cand.pack(setting)) - len(HEADER) - 1) * 8 / cand.n_values

    def label(self, capacity):
        return f"toy-{capacity}"


class ToyDecoder:
    def __init__(self, data, source):
        self.source, self.n_bytes, self.capacity = source, len(data), data[-1]


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(codec.REPRESENTATIONS, "toy", Representation("toy", TOY_VERSION, ToyPlan, ToyDecoder))
    ToyPlan.fits = []


def test_rate_control_and_reading_through_one_registry_entry(toy):
    """encode with representation "toy" keeps its archive within the budget at the finest setting that
    fits (no fine-tuning: the toy returns None), records trials with the toy's own fields, and archive_from_bytes reads it with the toy's reader."""
    images = [smooth_image(8, 8, s) for s in range(2)]
    budget = math.floor(2.0 * 2 * 64 / 8)
    res = encode(images, ["a.png", "b.png"], EncodeConfig(bpp=2.0, representation="toy"))
    assert len(res.data) <= budget and res.arch == ToyPlan.fits[-1]
    assert all("capacity" in t and t["bytes"] <= budget for t in res.trials)
    assert len(ToyCandidate(res.arch, 2).pack(res.trials[-1]["alpha"] * 0.99)) > budget  # finest that fits
    decoder = archive_from_bytes(res.data, "toy.mixinr")
    assert isinstance(decoder, ToyDecoder) and decoder.capacity == res.arch


def test_refit_when_the_guess_is_off(toy):
    """A first capacity from far too few guessed bits per value lands off aim: one refit, narrower."""
    images = [smooth_image(8, 8, s) for s in range(2)]
    cfg = EncodeConfig(bpp=2.0, representation="toy", qat_epochs=0, rate=codec.RateControl(est_bits_per_param=0.2))
    encode(images, ["a.png", "b.png"], cfg)
    assert len(ToyPlan.fits) == 2 and ToyPlan.fits[1] < ToyPlan.fits[0]


def test_finest_under_is_the_edge_of_the_budget():
    """The bisection returns an alpha whose archive fits and a slightly finer one that does not."""
    cand = ToyCandidate(5, 1)
    alpha = finest_under(cand, 40)
    assert len(cand.pack(alpha)) <= 40 < len(cand.pack(alpha * 0.999))
    assert finest_under(cand, 3) is None


def test_unknown_versions_and_names_are_refused():
    """An archive of a version no representation owns, and an unknown representation name, are one-line
    MixinrErrors."""
    with pytest.raises(MixinrError, match=r"x\.mixinr: unknown format version 7 \(this mixinr reads 1, 2\)"):
        archive_from_bytes(b"MXNR\x07" + bytes(20), "x.mixinr")
    with pytest.raises(MixinrError, match="unknown representation 'nope'"):
        encode([np.zeros((4, 4, 3), np.uint8)], ["a.png"], EncodeConfig(bpp=2.0, representation="nope"))


def test_the_siren_implements_the_interface():
    """The SIREN's plan, candidate and archive have every method and attribute the protocols name
    (runtime_checkable: presence, not signatures), and its registry entry owns format version 1."""
    import torch

    from mixinr.model import Arch, MixtureSiren
    from mixinr.representation import Candidate, Decoder, Plan
    from mixinr.siren.archive import pack
    from mixinr.siren.encoder import SirenCandidate, SirenPlan

    images, names = [smooth_image(8, 8, s) for s in range(2)], ["a.png", "b.png"]
    model = MixtureSiren(Arch(2, 4, 2), 2, "learned", generator=torch.Generator().manual_seed(0))
    cand = SirenCandidate(model, 1e-3, images, names, [(8, 8)] * 2, EncodeConfig())
    assert isinstance(SirenPlan(images, names, EncodeConfig(bpp=2.0)), Plan) and isinstance(cand, Candidate)
    assert isinstance(archive_from_bytes(pack(model, names, [(8, 8)] * 2)), Decoder)
    assert codec.REPRESENTATIONS["siren"].version == 1
