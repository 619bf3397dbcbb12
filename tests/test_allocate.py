"""mixinr.allocate: the exact knapsack against brute force, the Lagrangian against the exact answer,
and the edge cases (a budget nothing fits, dominated options)."""

import itertools

import numpy as np
import pytest

from mixinr.allocate import allocate


def _tiny(seed):
    """Three images, four options each: bytes rising, quality rising with noise (some dominated)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(3):
        w = np.sort(rng.choice(np.arange(5, 60), 4, replace=False))
        q = 20 + np.cumsum(rng.uniform(-0.5, 3.0, 4))
        out.append([(int(a), float(b)) for a, b in zip(w, q)])
    return out


def _brute(options, budget):
    best = None
    for picks in itertools.product(*(range(len(o)) for o in options)):
        if sum(o[j][0] for o, j in zip(options, picks)) <= budget:
            q = sum(o[j][1] for o, j in zip(options, picks))
            best = q if best is None else max(best, q)
    return best


def _value(options, picks):
    return sum(o[j][1] for o, j in zip(options, picks)), sum(o[j][0] for o, j in zip(options, picks))


@pytest.mark.parametrize("seed", range(6))
def test_exact_allocation_matches_brute_force_at_every_budget(seed):
    """At every budget from infeasible to generous, the exact allocation fits and reaches the brute-force
    optimum of 3 images x 4 options; where nothing fits it returns None, as brute force finds nothing."""
    options = _tiny(seed)
    for budget in range(0, 190):
        best = _brute(options, budget)
        picks = allocate(options, budget, exact=True)
        if best is None:
            assert picks is None
            continue
        q, spent = _value(options, picks)
        assert spent <= budget and q == pytest.approx(best)


@pytest.mark.parametrize("seed", range(6))
def test_lagrangian_is_feasible_and_close_to_exact(seed):
    """The Lagrangian allocation never exceeds the budget, never beats the exact one, and is never below
    the cheapest choice; it stays within one image's quality range of the optimum (one hull step at most)."""
    options = _tiny(seed)
    for budget in range(sum(o[0][0] for o in options), 190):
        exact, _ = _value(options, allocate(options, budget, exact=True))
        picks = allocate(options, budget, exact=False)
        q, spent = _value(options, picks)
        assert spent <= budget and q <= exact + 1e-9
        # LP bound: the optimum is at most the hull solution plus part of one hull step of one image
        step = max(max(q for _, q in o) - min(q for _, q in o) for o in options)
        assert q >= exact - step - 1e-9


def test_lagrangian_is_exact_on_concave_options_at_hull_points():
    """When every option lies on its image's concave hull and the budget is a sum of hull points taken
    in slope order, the Lagrangian answer is the optimum."""
    options = [[(10, 20.0), (20, 25.0), (40, 28.0)], [(10, 18.0), (30, 26.0), (50, 27.0)]]
    for budget in (20, 30, 50, 70, 90):  # the sums after each step in slope order (0.5, 0.4, 0.15, 0.05)
        assert _value(options, allocate(options, budget, exact=False))[0] == pytest.approx(
            _brute(options, budget))


def test_allocation_beats_any_single_setting_and_picks_by_default():
    """The allocation under the bytes that one common setting spends is at least that setting's quality
    sum (that setting is a feasible choice); the default path (exact for a small table) agrees."""
    options = _tiny(3)
    for s in range(4):
        budget = sum(o[s][0] for o in options)
        q, spent = _value(options, allocate(options, budget))
        assert spent <= budget and q >= sum(o[s][1] for o in options) - 1e-9


def test_allocation_refuses_an_image_without_options():
    """An image with no options is a caller's error, not an empty answer."""
    with pytest.raises(ValueError):
        allocate([[(1, 1.0)], []], 10)
