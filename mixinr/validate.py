"""Checks that run before any work or write: settings, output paths, output sizes.

Torch-free, so the command line refuses a bad argument in a fraction of a second, and the library
(codec, collection) runs the same checks. The caps are in docs/format.md ("Caps").
"""

from __future__ import annotations

import math
import operator
import os
from pathlib import Path

from mixinr import bitstream
from mixinr.errors import MixinrError
from mixinr.settings import PRECISIONS

# Decoder caps (docs/format.md "Caps"). Pixels: the render buffer (float32 RGB) stays under 1 GB. Work:
# pixels x multiply-adds per pixel (a SIREN's: one set's weights); 2^38 took 2-4 minutes on the busy
# 2-core build machine (1.0-2.4e9 multiply-adds/s at load 10) and allows 8192 x 8192 at 5x24 or
# full-size Kodak at --scale 4 with 9x60.
MAX_DECODE_PIXELS = 1 << 26
MAX_RENDER_WORK = 1 << 38
MAX_SEED = (1 << 63) - 1  # torch.Generator.manual_seed takes 64-bit seeds


def check_positive(what: str, value, cap: float | None = None) -> None:
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok or (cap is not None and value > cap):
        bound = f"a positive number up to {cap:g}" if cap is not None else "a positive number"
        raise MixinrError(f"{what} must be {bound}, got {value}")


def _count(what: str, value, low: int, high: int | None = None) -> None:
    if value is None:
        return
    if not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"{low} or more"
        raise MixinrError(f"{what} must be {bound}, got {value}")


def check_encode_settings(bpp=None, precision=None, epochs=None, lr=None, lbfgs_steps=None, qat_epochs=None,
                          seed=None) -> None:
    """The encode settings every representation has, each alone (MixinrError naming the flag)."""
    check_positive("--bpp", bpp)
    check_positive("learning rate", lr)
    _count("--epochs", epochs, 1)
    _count("--lbfgs-steps", lbfgs_steps, 0)
    _count("--qat-epochs", qat_epochs, 0)
    if seed is not None and not (isinstance(seed, int) and abs(seed) <= MAX_SEED):
        raise MixinrError(f"--seed must be an integer of at most 63 bits, got {seed}")
    if precision is not None and precision not in PRECISIONS:
        raise MixinrError(f"--precision must be auto, fp16 or q{bitstream.MIN_BITS}..q{bitstream.MAX_BITS}, "
                          f"got {precision!r}")


def check_config(cfg) -> None:
    """A settings.EncodeConfig before any work: the settings every representation has, and the SIREN's
    network (the default representation; another checks its own when it makes its plan)."""
    check_encode_settings(bpp=cfg.bpp, precision=cfg.precision, epochs=cfg.epochs, lr=cfg.lr,
                          lbfgs_steps=cfg.lbfgs_steps, qat_epochs=cfg.qat_epochs, seed=cfg.seed)
    if cfg.representation in ("siren", "auto"):  # auto: the SIREN unless the images are photo-size
        check_network(cfg.bpp or cfg.psnr, cfg.depth, cfg.width, cfg.sets, cfg.omega)


def check_network(bpp=None, depth=None, width=None, sets=None, omega=None) -> None:
    """The SIREN's network settings (siren.encoder.check): each within the format's caps, omega finite, and
    the network, as far as given, within bitstream.MAX_PARAMS weights (a 64x4096 network is refused here,
    not after minutes of fitting)."""
    check_positive("--omega", omega, bitstream.MAX_OMEGA)
    _count("--depth", depth, 1, bitstream.MAX_DEPTH)
    _count("--width", width, 1, bitstream.MAX_WIDTH)
    _count("--sets", sets, 1, bitstream.MAX_SETS)
    if bpp is None and (depth is None or width is None):
        raise MixinrError("give --bpp, or both --depth and --width")
    if width is None:
        return
    depth, sets = depth or 1, sets or 1
    n = bitstream.params_for(depth, width, sets)
    if n > bitstream.MAX_PARAMS:
        raise MixinrError(f"a {depth}x{width} network with K={sets} has {n} weights, over the format's "
                          f"{bitstream.MAX_PARAMS}")


def check_budget(bpp: float, pixels: int, n_images: int, depth: int, width: int, sets: int, precision: str) -> None:
    """A fixed network that cannot fit the budget even at the format's fewest bytes is refused before
    fitting: fp16 stores 2 bytes per weight, a quantised stream at least one byte per
    bitstream.MAX_VALUES_PER_BYTE values, and the header at least 3 bytes per image name."""
    budget = math.floor(bpp * pixels / 8)
    n = bitstream.params_for(depth, width, sets)
    weights = 2 * n if precision == "fp16" else bitstream.min_stream_bytes(n)
    least = bitstream.FIXED_BYTES + 5 + 3 * n_images + weights
    if least > budget:
        raise MixinrError(f"budget too small: {bpp} bpp is {budget} bytes for {pixels} pixels; a {depth}x{width} "
                          f"network with K={sets} needs at least {least}")


def _nearest_existing(path: Path) -> Path:
    for p in (path, *path.parents):
        try:
            os.stat(p)
            return p
        except FileNotFoundError:
            continue
        except NotADirectoryError:  # a file in the way of a folder
            continue
    return Path(".")


def check_output_dir(path) -> None:
    """`path` is, or can be made, a writable folder: an existing file in the way (also further up,
    `existing_file/sub`) or a folder without write permission is refused before any work."""
    path = Path(path)
    base = _nearest_existing(path)
    if not base.is_dir():
        where = "exists and is not a folder" if base == path else f"cannot be made: {base} is a file, not a folder"
        raise MixinrError(f"{path}: {where}")
    if not os.access(base, os.W_OK | os.X_OK):
        raise MixinrError(f"{path}: cannot write in {base} (permission denied)")


def check_output_file(path, force: bool = False) -> None:
    """`path` may be written: not an existing file without --force, not a folder, in a writable folder."""
    path = Path(path)
    if path.is_dir():
        raise MixinrError(f"{path}: is a directory")
    if path.exists() and not force:
        raise MixinrError(f"{path}: already exists (use --force to overwrite)")
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise MixinrError(f"{path}: cannot be written: {base} is a file, not a folder")
    check_output_dir(path.parent)


def check_output_size(source: str, height, width, work_per_pixel: int) -> None:
    """An output of `height` x `width` pixels the decoder will render: each side 1..MAX_SIDE, at most
    MAX_DECODE_PIXELS pixels, and pixels x `work_per_pixel` (multiply-adds) at most MAX_RENDER_WORK."""
    try:
        height, width = operator.index(height), operator.index(width)  # numpy integers too
    except TypeError:
        raise MixinrError(f"{source}: output size {height}x{width} is not a pair of integers") from None
    ok = all(1 <= v <= bitstream.MAX_SIDE for v in (height, width))
    if not ok or height * width > MAX_DECODE_PIXELS:
        raise MixinrError(f"{source}: output size {height}x{width} out of range (sides 1..{bitstream.MAX_SIDE}, "
                          f"at most {MAX_DECODE_PIXELS} pixels)")
    if height * width * work_per_pixel > MAX_RENDER_WORK:
        raise MixinrError(f"{source}: output {height}x{width} with a network of {work_per_pixel} multiply-adds per "
                          f"pixel is over the decoder's cap of {MAX_RENDER_WORK} (docs/format.md)")


def scaled_size(original: tuple[int, int], scale: float) -> tuple[int, int]:
    """`original` (height, width) times `scale`, each side rounded and at least 1 (never an
    OverflowError: an infinite product is refused here, a finite one too large by check_output_size)."""
    check_positive("--scale", scale)
    sides = [s * scale for s in original]
    if not all(math.isfinite(v) for v in sides):
        raise MixinrError(f"--scale {scale}: output size out of range")
    return tuple(max(1, round(v)) for v in sides)
