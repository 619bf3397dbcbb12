"""How even the quality is across one group's images: each image's PSNR at one budget, for mixinr under
each objective and for WebP at the highest quality whose total bytes fit the budget.

    python benchmarks/spread.py --class 1 --bpp 2            # mixinr psnr and mse, WebP; one JSON line each

The mean-PSNR objective (the default) raises the group's mean by spending bits where dB come cheap; this
shows what that does to the hardest image (docs/rd.md, ninth session). `benchmarks/rd.py` reports the
same spread (mixinr.compare.spread) for every method, the allocated classical codecs included.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rd import CIFAR, load_cifar_groups  # noqa: E402

from mixinr import baselines  # noqa: E402
from mixinr.codec import EncodeConfig, encode  # noqa: E402
from mixinr.compare import spread  # noqa: E402
from mixinr.metrics import psnr  # noqa: E402


def stats(method: str, bpp: float, psnrs, **extra) -> dict:
    s = spread(psnrs)
    return {"method": method, "bpp": round(bpp, 4), "mean": round(s["mean"], 3), "min": round(s["min"], 2),
            "max": round(s["max"], 2), "std": round(s["std"], 2), **extra}


def webp_at(images, bpp: float) -> dict:
    """WebP at one quality for every image: the highest whose total bytes fit the budget (every quality is
    tried: WebP's bytes need not grow with quality at every step)."""
    webp = baselines.CODECS["webp"]
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    best = None
    for q in range(1, 101):
        coded = [baselines.round_trip(webp, im, q) for im in images]
        rate = sum(c.n_bytes for c in coded) * 8 / pixels
        if rate <= bpp:
            best = q, rate, coded
    if best is None:
        raise SystemExit(f"WebP cannot reach {bpp} bpp on this group: even quality 1 is larger")
    q, rate, coded = best
    return stats("webp", rate, [psnr(c.decoded, im) for c, im in zip(coded, images)], quality=q)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=CIFAR, help="CIFAR-10 class folders")
    p.add_argument("--class", dest="cls", type=int, default=1)
    p.add_argument("--group-size", type=int, default=16)
    p.add_argument("--bpp", type=float, default=2.0)
    p.add_argument("--objectives", nargs="*", default=["psnr", "mse"], help="mixinr objectives to encode with")
    args = p.parse_args()
    group = load_cifar_groups(args.data, [args.cls], args.group_size)[0]
    print(json.dumps({"class": args.cls, **webp_at(group.images, args.bpp)}), flush=True)
    for objective in args.objectives:
        t = time.time()
        r = encode(group.images, group.names, EncodeConfig(bpp=args.bpp, objective=objective, progress=False))
        print(json.dumps({"class": args.cls, **stats(f"mixinr-{objective}", r.bpp, [i.psnr for i in r.images],
                                                     net=f"{r.arch.depth}x{r.arch.width}", seconds=round(time.time() - t, 1))}),
              flush=True)


if __name__ == "__main__":
    main()
