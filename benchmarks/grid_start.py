"""Make the grid's learned start (mixinr/grid/start.py): fit images from random weights, save the fit's
synthesis (each layer averaged over the images) and context MLP as the start later fits begin from.

    python benchmarks/grid_start.py ../shared/data/kodak/kodim03.png --scale 2 --target 0.7 -o mixinr/grid/start.npz

(the shipped start.npz: that command, 1200 steps, seed 0, with the fit as of commit a62ee2b; docs/photo.md,
"Seeds, and a learned start". The fit has changed since (nineteenth session): today it makes another start.)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grid_fit import grid_settings, load  # noqa: E402  (puts the package on sys.path)

from mixinr.grid import start  # noqa: E402
from mixinr.grid.fit import GridConfig, fit  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--scale", type=int, default=1, help="downscale each image by this factor (Lanczos)")
    p.add_argument("--target", type=float, default=0.7, help="rate of the rounded latents to steer to (bits / pixel)")
    p.add_argument("--settings", default="{}", help="other GridConfig fields as JSON")
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    images = load(args.images, args.scale)
    model = fit(images, replace(GridConfig(**grid_settings(args.settings)), start=False), args.target, progress=False)
    start.save(start.of_fit(model), args.output)
    print(json.dumps({"images": [str(p) for p in args.images], "scale": args.scale, "output": str(args.output)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
