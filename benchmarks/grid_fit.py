"""One grid fit at a fixed lambda, for sorting design questions quickly (docs/photo.md): prints the real
archive's bpp and decoded PSNR (and the float latents' PSNR) as JSON, one line per seed, then their mean.

Two seeds of one setting differ by up to 1 dB at half size (docs/photo.md, "Seeds, and a learned
start"): compare settings on the mean of several seeds (`--seeds 0 1 2`), never on one run.

    python benchmarks/grid_fit.py ../shared/data/kodak/kodim03.png --scale 2 --steps 600 --lam 1e-3
    python benchmarks/grid_fit.py IMAGE --scale 2 --target 0.7 --seeds 0 1 2 --settings '{"latent_lr": 0.1}'
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixinr.data import resize  # noqa: E402
from mixinr.grid.encode import GridCandidate  # noqa: E402
from mixinr.grid.fit import GridConfig, fit  # noqa: E402
from mixinr.images import read_image  # noqa: E402


def load(paths: list[Path], scale: int) -> list:
    """The images, each downscaled by `scale` (Lanczos)."""
    images = [read_image(path) for path in paths]
    return [resize(im, (im.shape[0] // scale, im.shape[1] // scale)) for im in images]


def grid_settings(text: str) -> dict:
    """GridConfig fields from JSON (lists become the tuples GridConfig holds)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(text).items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--scale", type=int, default=1, help="downscale each image by this factor (Lanczos)")
    p.add_argument("--steps", type=int, default=GridConfig.steps)
    p.add_argument("--lam", type=float, default=GridConfig.lam, help="fixed rate weight (no rate target)")
    p.add_argument("--target", type=float, default=None,
                   help="steer lambda to this rate of the rounded latents (bits / pixel) instead of fixing it")
    p.add_argument("--settings", default="{}", help="other GridConfig fields as JSON")
    p.add_argument("--seeds", type=int, nargs="+",
                   help="one fit per seed (GridConfig.seed: the init and the noise), then a mean row")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    images = load(args.images, args.scale)
    settings = grid_settings(args.settings)
    if args.seeds and "seed" in settings:
        p.error("give the seed once: --seeds or the settings' seed")
    seeds = args.seeds or [settings.pop("seed", GridConfig.seed)]
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    rows = []
    for seed in seeds:
        cfg = GridConfig(steps=args.steps, lam=args.lam, **{**settings, "seed": seed})
        start = time.perf_counter()
        model = fit(images, cfg, args.target)
        seconds = time.perf_counter() - start
        cand = GridCandidate(model, images, [p.name for p in args.images], seconds)
        rows.append({"images": [str(p) for p in args.images], "scale": args.scale, "config": repr(cfg),
                     "target": args.target, "seed": seed, "bpp": len(cand.pack(1.0)) * 8 / pixels,
                     "psnr": float(np.mean(cand.psnrs(1.0))), "float_psnr": 10 * math.log10(4 / cand.float_mse),
                     "fit_seconds": round(seconds, 1), "threads": args.threads, "load_average": os.getloadavg()[0]})
        print(json.dumps(rows[-1]), flush=True)
    if len(rows) > 1:
        print(json.dumps({"seeds": seeds, **{k: float(np.mean([r[k] for r in rows]))
                                                   for k in ("bpp", "psnr", "float_psnr", "fit_seconds")},
                          "psnr_min": min(r["psnr"] for r in rows), "psnr_max": max(r["psnr"] for r in rows)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
