"""A quality target instead of a budget (`mixinr encode --psnr DB`, as `cwebp -psnr`): the smallest
archive whose mean decoded PSNR reaches DB, found by bisection over the bpp budget.

Each probe is a whole rate-controlled encode at one budget (`encode_at(bpp)`); the caller keeps the
fits between probes, so a probe whose rate control picks a width already fitted only re-quantises.
First a bracket (settings.PsnrSearch): from `start_bpp` the budget moves by the PSNR still missing at
`db_per_doubling` (clamped to x1.19..x4 per probe) until one probe reaches the target and one does not;
then geometric bisection until the bracket's ends are within `rel_tol` of each other. The result is the smallest
archive among the probes that reached the target. See docs/codec.md, "Quality target".
"""

from __future__ import annotations

import math
from collections.abc import Callable

from mixinr.errors import BudgetTooSmall, MixinrError
from mixinr.progress import note
from mixinr.settings import PsnrSearch


def search(encode_at: Callable[[float], object], target: float, cfg: PsnrSearch = PsnrSearch(),
           show: bool | None = None):
    """The result of `encode_at(bpp)` (anything with .bpp and .psnr_mean) with the fewest bytes whose
    psnr_mean reaches `target`, with `.probes` set to [(budget, bpp, psnr)] in the order tried."""
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise MixinrError(f"--psnr must be a positive number of dB, got {target}")
    probes, best, low, high = [], None, None, None  # low: a budget below the target; high: one reaching it
    floor = 0.0  # the smallest budget the codec accepts, once known
    bpp = cfg.start_bpp
    while len(probes) < cfg.max_probes:
        try:
            result = encode_at(bpp)
        except BudgetTooSmall as e:
            if e.min_bpp <= bpp or (high is not None and e.min_bpp >= high):
                if best is not None:
                    break  # nothing smaller than what already reached the target
                raise
            floor = bpp = e.min_bpp  # rises with every refusal: no loop
            continue
        probes.append((bpp, result.bpp, result.psnr_mean))
        reached = result.psnr_mean >= target
        note(f"--psnr {target:g}: budget {bpp:.4g} bpp gave {result.psnr_mean:.2f} dB at {result.bpp:.4g} bpp"
             + (" (reached)" if reached else ""), show)
        if reached:
            if best is None or result.bpp < best.bpp:
                best = result
            high = bpp if high is None else min(high, bpp)
        else:
            low = bpp if low is None else max(low, bpp)
            if high is None and (result.bpp < cfg.saturated_share * bpp or bpp >= cfg.max_bpp):
                raise MixinrError(f"--psnr {target:g}: out of reach, the best archive gives "
                                  f"{result.psnr_mean:.2f} dB (at {result.bpp:.3f} bpp, budget {bpp:.3g})")
        if high is not None and low is not None and high <= low * (1 + cfg.rel_tol):
            break
        if high is not None and low is not None:
            bpp = math.sqrt(low * high)
        elif high is None:
            bpp = min(cfg.max_bpp, bpp * _factor(target - result.psnr_mean, cfg))
        elif bpp <= floor:
            break  # the smallest archive there is already reaches the target
        else:
            bpp = max(floor, bpp / _factor(result.psnr_mean - target, cfg))
    if best is None:
        raise MixinrError(f"--psnr {target:g}: not reached in {len(probes)} encodes (best "
                          f"{max(p[2] for p in probes):.2f} dB)")
    best.probes = probes
    return best


def _factor(db: float, cfg: PsnrSearch) -> float:
    """How far to move the budget to make up `db` at the assumed slope, x1.19 to x4."""
    return 2 ** min(2.0, max(0.25, db / cfg.db_per_doubling))
