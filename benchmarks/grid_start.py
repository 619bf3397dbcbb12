"""Make the grid's learned start (mixinr/grid/start.py): fit images from random weights, save the fit's
synthesis (each layer averaged over the images) and context MLP as the start later fits begin from.
With --generations G, each next generation fits the same images again from the last one's start (fresh
latents, the networks carried on: docs/photo.md, "Generations of the start").

    python benchmarks/grid_start.py ../shared/data/kodak/kodim03.png --scale 2 --target 0.7 -o mixinr/grid/start.npz

(the shipped start.npz: that command with --generations 3, the best of six starts; it reproduced the file
bit for bit at b908621, whose fit had one latent lr for every level: --settings '{"level_lr": 1.0}' today.
A change to the fit makes another start: judge it as docs/photo.md did.)
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
    p.add_argument("--generations", type=int, default=1, help="fits in a row, each from the last one's start")
    p.add_argument("--begin", type=Path, help="the first generation's start (a start file; default: random weights)")
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    images = load(args.images, args.scale)
    cfg = GridConfig(**grid_settings(args.settings))
    tensors = start.load(args.begin) if args.begin else None
    for _ in range(args.generations):
        model = fit(images, replace(cfg, start=tensors is not None), args.target, progress=False, begin=tensors)
        tensors = start.of_fit(model)
    start.save(tensors, args.output)
    print(json.dumps({"images": [str(p) for p in args.images], "scale": args.scale, "generations": args.generations,
                      "begin": str(args.begin) if args.begin else None, "output": str(args.output)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
