"""mixinr.target.search (`encode --psnr`) on made-up rate-distortion curves: it returns the smallest archive
that reaches the target within its tolerance, starts again from the codec's smallest budget when the first
guess is too small, and says when a target is out of reach instead of probing forever."""

import math
from dataclasses import dataclass

import pytest

from mixinr.errors import BudgetTooSmall, MixinrError
from mixinr.target import PsnrSearch, search


@dataclass
class Fake:
    bpp: float
    psnr_mean: float
    probes: list = None


def curve(db_at_1bpp=25.0, slope=5.0, floor=0.0, cap=None):
    """encode_at for PSNR = db_at_1bpp + slope * log2(budget), refusing budgets under `floor` and never
    spending more than `cap` bpp (a fixed network at its finest steps)."""
    calls = []

    def encode_at(bpp):
        if bpp < floor:
            raise BudgetTooSmall("budget too small", floor)
        calls.append(bpp)
        used = bpp if cap is None else min(bpp, cap)
        return Fake(used, db_at_1bpp + slope * math.log2(used))

    return encode_at, calls


@pytest.mark.parametrize("target", [22.0, 30.0, 37.5, 44.0])
def test_smallest_archive_within_tolerance(target):
    """The result reaches the target and its budget is within rel_tol of the true smallest one; a
    handful of encodes, each reported as a probe."""
    encode_at, calls = curve()
    cfg = PsnrSearch()
    result = search(encode_at, target, cfg)
    exact = 2 ** ((target - 25.0) / 5.0)
    assert result.psnr_mean >= target
    assert exact <= result.bpp <= exact * (1 + cfg.rel_tol)
    assert len(calls) <= 8 and [p[0] for p in result.probes] == calls


def test_starts_again_from_the_smallest_budget():
    """A first guess under the codec's smallest budget moves to that budget (BudgetTooSmall.min_bpp); when
    the smallest archive already reaches the target, it is the answer."""
    encode_at, calls = curve(floor=3.0)
    result = search(encode_at, 20.0)
    assert result.bpp == 3.0 and calls == [3.0]


def test_out_of_reach_is_an_error_not_a_loop():
    """A network that cannot spend more bytes (archive far under its budget) ends the search with the best
    PSNR it found; so does the largest budget."""
    encode_at, calls = curve(cap=1.5)
    with pytest.raises(MixinrError, match="out of reach"):
        search(encode_at, 40.0)
    assert len(calls) <= 3
    encode_at, calls = curve(slope=0.1)
    with pytest.raises(MixinrError, match="out of reach"):
        search(encode_at, 60.0)
    assert calls[-1] == PsnrSearch().max_bpp


def test_bad_target():
    """A target that is not a positive finite number of dB is refused before any encode."""
    encode_at, calls = curve()
    for bad in (0, -3, float("nan"), float("inf")):
        with pytest.raises(MixinrError, match="--psnr"):
            search(encode_at, bad)
    assert calls == []
