"""Rate control: the best archive of a group within a byte budget, for any representation.

Top to bottom (docs/codec.md, "Rate control"): the budget in bytes is floor(bpp * pixels / 8). The
group is fitted at the largest capacity (the SIREN's width) predicted to fit at a guessed number of
bits per coded value; the finest setting within the budget follows by bisection
(representation.finest_under). If that setting's predicted quantisation loss lies far from the aim (or
nothing fits), the capacity is corrected from the bits per value measured and the group refitted once.
Each fit is then finished: fine-tuned onto its quantisation grid one range-coder word under the budget,
the result kept where it decodes better within the budget. The best of the finished fits is stored.
Every PSNR here is decoded from the archive's own bytes (Candidate.psnrs).

The representation is reached only through its Plan and Candidate (mixinr.representation).
"""

from __future__ import annotations

import math

import numpy as np

from mixinr.errors import BudgetTooSmall
from mixinr.metrics import psnr_from_mse
from mixinr.progress import log
from mixinr.representation import Candidate, Plan, Setting, finest_under
from mixinr.settings import EncodeConfig, precision_bits

# The first capacity's guess of bits per coded value for fixed precisions: fp16 stores 16; entropy
# coding saves about ENTROPY_SAVING_BITS per value against a fixed-length q<bits> (docs/codec.md).
FP16_BITS = 16.0
ENTROPY_SAVING_BITS = 0.9
# The lowest measured bits per value believed: a nearly empty stream would otherwise ask for a huge refit.
MIN_MEASURED_BITS = 0.25


def without_budget(plan: Plan, cfg: EncodeConfig) -> tuple[Candidate, Setting, list[dict]]:
    """The fit at the caller's capacity, at its precision, or for "auto" the alpha predicted to cost
    cfg.rate.no_budget_loss_db; fine-tuned within the bytes that setting already takes."""
    cand = plan.fit(plan.fixed_capacity)
    setting = cfg.precision if cfg.precision != "auto" else cand.alpha_for_loss(cfg.rate.no_budget_loss_db)
    return finish(cand, setting, len(cand.pack(setting)), cfg)


def within_budget(plan: Plan, budget: int, pixels: int, cfg: EncodeConfig) -> tuple[Candidate, Setting, list[dict]]:
    """(candidate, setting, trials): the best mean PSNR among the finished fits' archives within `budget`."""
    # Before any fit: a fixed network's smallest archive is about min_bytes (one bit per value: a lower
    # bound); a free one needs the budget at which its first capacity is at least 1.
    need = plan.min_bytes() if plan.fixed_capacity else _first_capacity_budget(plan, _guessed_bits(cfg))
    if need > budget:
        net = plan.label(1)
        raise BudgetTooSmall(f"budget too small: {cfg.bpp:g} bpp is {budget} bytes for {pixels} pixels, even a {net} "
                             f"network needs about {need}: use --bpp {bpp_up(need, pixels):g} or more",
                             bpp_up(need, pixels))
    tried = _fits(plan, budget, cfg)
    fits = [(c, s) for _, c, s in tried if s is not None]
    if not fits:
        # The fits show exactly how small their archives get: the narrowest one's coarsest setting.
        capacity, cand, _ = min(tried, key=lambda t: t[0])
        need = bpp_up(len(cand.pack(cand.alpha_range()[1] if cfg.precision == "auto" else cfg.precision)), pixels)
        where = "at any precision" if cfg.precision == "auto" else f"at {cfg.precision}"
        raise BudgetTooSmall(f"budget too small: {cfg.bpp:g} bpp is {budget} bytes; a {plan.label(capacity)} "
                             f"network does not fit {where}: use --bpp {need:g} or more", need)
    # Each fit as it will be stored (fine-tuned where that helped): fine-tuning recovers most where rounding
    # cost most, so a wider fit that rounds badly can still end best.
    finished, trials = [], []
    for cand, setting in fits:
        cand, setting, tried = finish(cand, setting, budget, cfg)
        finished.append((cand, setting))
        trials += tried
    scored = [(float(np.mean(c.psnrs(s))), -len(c.pack(s)), i) for i, (c, s) in enumerate(finished)]
    cand, setting = finished[max(scored)[2]]
    return cand, setting, trials


def bpp_up(n_bytes: int, pixels: int) -> float:
    """n_bytes as bits per pixel, rounded up to 3 significant digits: a budget that holds n_bytes."""
    bpp = n_bytes * 8 / pixels
    scale = 10 ** (2 - math.floor(math.log10(bpp)))
    return math.ceil(bpp * scale - 1e-9) / scale


def _first_capacity_budget(plan: Plan, bits: float) -> int:
    """The smallest budget whose capacity_for(budget, bits) is at least 1 (capacity grows with the budget)."""
    lo = hi = max(plan.min_bytes(), 1)
    while plan.capacity_for(hi, bits) < 1:
        lo, hi = hi, hi * 2
    while lo < hi:
        mid = (lo + hi) // 2
        if plan.capacity_for(mid, bits) >= 1:
            hi = mid
        else:
            lo = mid + 1
    return hi


def _fits(plan: Plan, budget: int, cfg: EncodeConfig) -> list[tuple[int, Candidate, Setting | None]]:
    """The fits rate control makes, (capacity, candidate, its finest setting within the budget or None):
    the first at the capacity the guessed bits per value allow, a refit where that one lands off aim."""
    rate = cfg.rate
    capacity = plan.fixed_capacity or plan.capacity_for(budget, _guessed_bits(cfg))
    tried: dict[int, tuple[Candidate, Setting | None]] = {}
    while capacity >= 1 and capacity not in tried:
        cand = plan.fit(capacity)
        setting = _best_setting(cand, budget, cfg.precision, cfg.progress)
        tried[capacity] = (cand, setting)
        if plan.fixed_capacity:
            break
        loss = None if setting is None or isinstance(setting, str) else cand.predicted_loss_db(setting)
        if setting is not None and (loss is None or rate.low_loss_db <= loss <= rate.high_loss_db or len(tried) > 1):
            break
        # Quantisation far from the intended operating point (or nothing fits): one refit at the capacity
        # the bits per value measured there say fits the budget (narrower when nothing fitted).
        aim = cand.alpha_for_loss(rate.target_loss_db) if cfg.precision == "auto" else cfg.precision
        measured = max(plan.bits_per_value(cand, aim), MIN_MEASURED_BITS)
        nxt = plan.capacity_for(budget, measured)
        capacity = min(nxt, capacity - 1) if setting is None else nxt
    return [(c, *t) for c, t in tried.items()]


def _guessed_bits(cfg: EncodeConfig) -> float:
    """Bits per coded value the first capacity is chosen for."""
    if cfg.precision == "fp16":
        return FP16_BITS
    if cfg.precision == "auto":
        return cfg.rate.est_bits_per_param
    return max(1.0, precision_bits(cfg.precision) - ENTROPY_SAVING_BITS)


def _best_setting(cand: Candidate, budget: int, precision: str, show=None) -> Setting | None:
    """The finest alpha within the budget ("auto"), or the fixed precision if its archive fits."""
    if precision == "auto":
        return finest_under(cand, budget, show)
    return precision if len(cand.pack(precision)) <= budget else None


def finish(cand: Candidate, setting: Setting, budget: int, cfg: EncodeConfig) -> tuple[Candidate, Setting, list[dict]]:
    """(candidate, setting, trials) after quantisation-aware fine-tuning where that decodes better within
    `budget` (docs/codec.md); fixed precisions are kept as they are."""
    before = trial(cand, setting)
    epochs = cfg.qat.epochs if cfg.qat_epochs is None else cfg.qat_epochs
    if not epochs or isinstance(setting, str):
        return cand, setting, [before]
    # Retraining and the greedy rounding move the coded size by a few bytes: aim cfg.qat.margin_bytes under
    # the budget so the result fits at the steps it was tuned to. Else the finest steps that fit, which
    # round every weight again and lose most of what fine-tuning won (docs/codec.md).
    aim = finest_under(cand, budget - cfg.qat.margin_bytes, cfg.progress) or setting
    tuned = cand.fine_tuned(aim, epochs)
    if tuned is None:  # the representation has no fine-tuning
        return cand, setting, [before]
    requantised = len(tuned.pack(aim)) > budget
    tuned_setting = finest_under(tuned, budget, cfg.progress) if requantised else aim
    if tuned_setting is None:
        return cand, setting, [before]
    after = trial(tuned, tuned_setting, qat_epochs=epochs, qat_seconds=tuned.qat_seconds, requantised=requantised)
    best = (tuned, tuned_setting) if after["psnr"] > before["psnr"] else (cand, setting)
    return *best, [before, after]


def trial(cand: Candidate, setting: Setting, **extra) -> dict:
    """What EncodeResult.trials records of one archive rate control looked at."""
    alpha = None if isinstance(setting, str) else setting
    t = {**cand.describe(), "precision": cand.precision(setting), "alpha": alpha,
         "predicted_loss_db": None if alpha is None else cand.predicted_loss_db(alpha),
         "float_psnr": psnr_from_mse(cand.float_mse),
         "bytes": len(cand.pack(setting)), "psnr": float(np.mean(cand.psnrs(setting))), **extra}
    shape = " ".join(f"{k} {v}" for k, v in cand.describe().items())
    log.info(f"{shape}, {t['precision']}{', fine-tuned' if extra else ''}: {t['bytes']} B, {t['psnr']:.2f} dB"
             + ("" if alpha is None else f" (quantisation predicted to cost {t['predicted_loss_db']:.2f} dB)"))
    return t
