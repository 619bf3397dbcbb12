"""Strict JSON out: what mixinr prints or writes is RFC 8259 JSON, which has no NaN or Infinity.

A non-finite float (the PSNR of an image decoded losslessly is infinite) becomes null; the docs say
so where such a value can occur (README "Use it", docs/compare.md)."""

from __future__ import annotations

import json
import math


def finite(x):
    """`x` with every non-finite float (numpy's too) replaced by None, through dicts, lists and tuples."""
    if isinstance(x, float):  # numpy.float64 is a float
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if hasattr(x, "dtype") and getattr(x, "shape", None) == ():  # a numpy scalar other than float64
        return finite(x.item())
    return x


def dumps(obj, **kwargs) -> str:
    """json.dumps of finite(obj) that refuses anything JSON cannot say (allow_nan=False)."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)
