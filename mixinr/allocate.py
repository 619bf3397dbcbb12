"""Per-image settings for a group under one byte budget: which of each image's coded versions to keep so
that the group's mean quality is highest while the total bytes fit (a multiple-choice knapsack).

mixinr's archive spends one budget on a whole group; this gives a classical codec the same freedom
(docs/compare.md "Allocated curves"). Each image offers options (bytes, quality), e.g. one per quality
setting of a sweep; `allocate` picks one option per image.

- Exact (dynamic programming over bytes) when the table it needs is small: images x (budget + 1) cells,
  each a max over that image's options. CIFAR-10 groups of 16 at 4 bpp: 16 x 8193 cells.
- Otherwise Lagrangian: each image's options reduced to their upper convex hull, increments taken in
  order of falling quality per byte while they fit, then any later increment that still fits. The
  result is feasible and at least as good as the best hull point under the budget, but may miss the
  exact optimum by part of one increment.
"""

from __future__ import annotations

import numpy as np

EXACT_CELLS = 4_000_000  # images x (budget + 1) at most for the exact table (int16 choices: 8 MB)


def _frontier(options: list[tuple[int, float]]) -> list[int]:
    """Indices of the options not dominated by a cheaper (or equal-bytes) one of at least the quality,
    sorted by bytes; both bytes and quality strictly increase along the result."""
    order = sorted(range(len(options)), key=lambda j: (options[j][0], -options[j][1]))
    keep: list[int] = []
    for j in order:
        if keep and options[j][1] <= options[keep[-1]][1]:
            continue
        keep.append(j)
    return keep


def _exact(options, fronts, budget: int) -> list[int]:
    n = len(options)
    dp = np.zeros(budget + 1)  # best quality sum of the images so far with total bytes <= b
    choice = np.full((n, budget + 1), -1, dtype=np.int16 if max(map(len, options)) < 2**15 else np.int32)
    for i, front in enumerate(fronts):
        new = np.full(budget + 1, -np.inf)
        for j in front:
            w, q = options[i][j]
            if w > budget:
                break
            cand = np.full(budget + 1, -np.inf)
            cand[w:] = dp[: budget + 1 - w] + q
            better = cand > new
            new[better] = cand[better]
            choice[i][better] = j
        dp = new
    picks, b = [0] * n, budget
    for i in range(n - 1, -1, -1):
        j = int(choice[i][b])
        picks[i] = j
        b -= options[i][j][0]
    return picks


def _hull(options, front: list[int]) -> list[int]:
    """The frontier's upper convex hull in (bytes, quality): quality per extra byte falls along it."""
    hull: list[int] = []
    for j in front:
        while len(hull) >= 2:
            (w0, q0), (w1, q1), (w2, q2) = options[hull[-2]], options[hull[-1]], options[j]
            if (q1 - q0) * (w2 - w1) <= (q2 - q1) * (w1 - w0):  # the middle point lies on or under the chord
                hull.pop()
            else:
                break
        hull.append(j)
    return hull


def _lagrangian(options, fronts, budget: int) -> list[int]:
    hulls = [_hull(opts, front) for opts, front in zip(options, fronts)]
    picks = [h[0] for h in hulls]
    spent = sum(options[i][h[0]][0] for i, h in enumerate(hulls))
    steps = []  # (quality per byte, image, position on its hull)
    for i, h in enumerate(hulls):
        for k in range(1, len(h)):
            (w0, q0), (w1, q1) = options[i][h[k - 1]], options[i][h[k]]
            steps.append(((q1 - q0) / (w1 - w0), i, k))
    steps.sort(key=lambda s: -s[0])  # steps of one image come in hull order: their slopes fall
    blocked = set()
    for _, i, k in steps:
        if i in blocked:
            continue
        extra = options[i][hulls[i][k]][0] - options[i][picks[i]][0]
        if spent + extra <= budget:
            picks[i], spent = hulls[i][k], spent + extra
        else:
            blocked.add(i)  # its later steps would skip this one
    return picks


def allocate(options: list[list[tuple[int, float]]], budget: int, exact: bool | None = None) -> list[int] | None:
    """One option index per image maximising the sum of qualities with total bytes <= `budget`.

    options[i] lists image i's (bytes, quality) pairs. None when even the cheapest option of every image
    together exceeds the budget. `exact`: force the dynamic programme (True) or the Lagrangian (False);
    by default exact when images x (budget + 1) <= EXACT_CELLS.
    """
    if not options or any(not o for o in options):
        raise ValueError("every image needs at least one option")
    budget = int(budget)
    fronts = [_frontier(o) for o in options]
    if sum(o[f[0]][0] for o, f in zip(options, fronts)) > budget:
        return None
    if exact is None:
        exact = len(options) * (budget + 1) <= EXACT_CELLS
    return _exact(options, fronts, budget) if exact else _lagrangian(options, fronts, budget)
