"""Tiles of one photo as the members of one mixture (issue 20's third "cheaper route"; docs/photo.md):
the photo is cut into tiles, the tiles are encoded as one group (one archive, one budget for all), and
the decoded tiles are put back together. Prints JSON: the real archive's bpp over the whole photo, the
stitched photo's PSNR, encode seconds.

    python benchmarks/tiles.py ../shared/data/kodak/kodim03.png --scale 2 --tile 128 --bpp 0.8 --model siren
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixinr import codec  # noqa: E402
from mixinr.data import resize  # noqa: E402
from mixinr.images import read_image  # noqa: E402
from mixinr.metrics import psnr  # noqa: E402


def cut(im: np.ndarray, tile: int) -> list[tuple[int, int, np.ndarray]]:
    """(row, col, pixels) of every tile, row-major; edge tiles are smaller."""
    return [(r, c, im[r : r + tile, c : c + tile]) for r in range(0, im.shape[0], tile)
            for c in range(0, im.shape[1], tile)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image", type=Path)
    p.add_argument("--scale", type=int, default=1, help="downscale the photo by this factor first (Lanczos)")
    p.add_argument("--tile", type=int, default=128, help="tile side in pixels")
    p.add_argument("--bpp", type=float, required=True)
    p.add_argument("--model", default="siren", help="the representation the tiles are fitted with")
    p.add_argument("--settings", default="{}", help="other EncodeConfig fields as JSON")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    im = read_image(args.image)
    im = resize(im, (im.shape[0] // args.scale, im.shape[1] // args.scale))
    tiles = cut(im, args.tile)
    cfg = codec.EncodeConfig(bpp=args.bpp, representation=args.model, progress=False, **json.loads(args.settings))
    start = time.perf_counter()
    res = codec.encode([t for _, _, t in tiles], [f"tile{r}_{c}" for r, c, _ in tiles], cfg)
    seconds = time.perf_counter() - start
    archive = codec.archive_from_bytes(res.data)
    out = np.zeros_like(im)
    for i, (r, c, t) in enumerate(tiles):
        out[r : r + t.shape[0], c : c + t.shape[1]] = archive.decode(i)
    print(json.dumps({"image": str(args.image), "size": list(im.shape[:2]), "tile": args.tile, "tiles": len(tiles),
                      "model": args.model, "target_bpp": args.bpp, "bpp": res.bpp,
                      "psnr": psnr(out, im), "arch": str(res.arch), "encode_s": round(seconds, 1),
                      "threads": args.threads, "load_average": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
