"""`mixinr demo`: compress a few images available offline into one archive and show what came back.

The images are 32x32 tiles of matplotlib's bundled photograph of Grace Hopper (when matplotlib is
installed) or, without it, smooth generated images. Everything stays in memory; about a minute on
a 2-core CPU.
"""

from __future__ import annotations

import numpy as np

from mixinr.cli import add_json_flag, add_threads_flag, emit, plural, times
from mixinr.cli.codec import encode_summary, images_table

TILE = 32
TILES = 8
# Adam epochs, then twice as many L-BFGS steps (encode's four times: 31.22 dB in 26 s, twice: 31.43 in
# 17 s on the 2-core machine, eighth session): shorter than encode's fit, a first look in under half a minute.
DEMO_EPOCHS = 500
DEMO_LBFGS_SHARE = 2
# A fit this short keeps the seed's loss: the default mean-PSNR objective needs the long fit (ninth session:
# 30.85 dB against 31.43, its hardest tile at 21.1 dB against 26.2; with encode's full fit 32.55 against 32.17).
DEMO_OBJECTIVE = "mse"


def register(sub) -> None:
    p = sub.add_parser("demo", help="compress a few bundled images into one archive and report PSNR and bpp")
    p.add_argument("--bpp", type=float, default=2.0, help="budget in bits per pixel (default 2)")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS,
                   help=f"Adam epochs of the fit, then {times(DEMO_LBFGS_SHARE)} as many L-BFGS steps "
                        f"(default {DEMO_EPOCHS})")
    p.add_argument("--seed", type=int, default=0, help="seed of the network's initial weights (default 0)")
    p.add_argument("--output", "-o", metavar="OUT.mixinr", help="also write the archive here")
    p.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    add_threads_flag(p)
    add_json_flag(p)
    p.set_defaults(run=run)


def demo_images() -> tuple[list[np.ndarray], list[str], str]:
    """(tiles, names, where they came from)."""
    try:
        from matplotlib.cbook import get_sample_data
        from PIL import Image

        with Image.open(get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
            # 512x600 -> 128x150: tiles then hold a face, a uniform and background at CIFAR's scale.
            small = np.asarray(im.convert("RGB").resize((128, 150), Image.Resampling.LANCZOS))
        tiles, names = [], []
        for r in range(1, 3):
            for c in range(4):
                tiles.append(np.ascontiguousarray(small[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]))
                names.append(f"hopper-r{r}c{c}.png")
        return tiles[:TILES], names[:TILES], "matplotlib sample grace_hopper.jpg, 32x32 tiles of a 128x150 copy"
    except (ImportError, OSError, ValueError):
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:TILE, 0:TILE] / TILE
        tiles = []
        for _ in range(TILES):
            img = np.zeros((TILE, TILE, 3))
            for ch in range(3):
                f = rng.uniform(0.5, 3, 2)
                img[..., ch] = np.cos(2 * np.pi * (f[0] * y + f[1] * x) + rng.uniform(0, 6.3))
            tiles.append(((img + 1) * 127.5).round().astype(np.uint8))
        return tiles, [f"generated-{i}.png" for i in range(TILES)], "generated images (matplotlib not installed)"


def run(args) -> int:
    from mixinr.codec import EncodeConfig, encode
    from mixinr.errors import MixinrError
    from mixinr.images import atomic_write, png_bytes

    if args.output and not args.force:
        from pathlib import Path

        if Path(args.output).exists():
            raise MixinrError(f"{args.output}: already exists (use --force to overwrite)")
    images, names, source = demo_images()
    cfg = EncodeConfig(bpp=args.bpp, epochs=args.epochs, lbfgs_steps=DEMO_LBFGS_SHARE * args.epochs,
                       objective=DEMO_OBJECTIVE, seed=args.seed, device="cpu")
    result = encode(images, names, cfg)
    if args.output:
        atomic_write(args.output, result.data, force=True)
    png = sum(len(png_bytes(im)) for im in images)
    payload = {
        "source": source,
        "bpp_target": args.bpp,
        **encode_summary(result),
        "png_bpp": png * 8 / sum(im.shape[0] * im.shape[1] for im in images),
        "network": f"{result.arch.depth}x{result.arch.width}, K={result.arch.sets}, {result.precision}",
        "archive": args.output,
    }
    emit(args, payload, _human)
    return 0


def _human(p: dict) -> None:
    from rich.console import Console

    title = f"mixinr demo: {plural(len(p['images']), 'image')}, one archive"
    rate = f"{p['bpp']:.3f} bpp (budget {p['bpp_target']:g})"
    console = Console()
    console.print(images_table(title, p, f"archive {p['bytes']} B", rate))
    console.print(f"images: {p['source']}")
    console.print(f"network {p['network']}, encoded in {p['seconds']:.1f} s; "
                  f"the same images as lossless PNG: {p['png_bpp']:.1f} bpp")
