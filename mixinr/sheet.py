"""A contact sheet (`mixinr decode ... --grid SHEET.png`): each image's original beside its decode, with
its name, PSNR and the archive's bpp under them, in one PNG for people who would rather look than read.

Small images are enlarged by a whole factor with nearest-neighbour (every coded pixel stays visible as it
is: no smoothing flatters the codec), large ones shrunk to TILE_MAX. Pillow only (no matplotlib).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TILE_MIN = 128  # a tile's longer side is enlarged to at least this (32x32 CIFAR images: x4)
TILE_MAX = 512  # ... and shrunk to at most this (a 768x512 photo: to 512x341)
GAP = 8  # pixels between tiles and around the sheet
FONT_SIZE = 13


@dataclass
class Entry:
    name: str
    decoded: np.ndarray  # (H, W, 3) uint8
    bpp: float  # of the archive it came from (shared by its images)
    original: np.ndarray | None = None
    psnr: float | None = None


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # a scalable font where FreeType is present
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _tile(img: np.ndarray) -> Image.Image:
    im = Image.fromarray(img)
    side = max(im.size)
    if side < TILE_MIN:
        k = math.ceil(TILE_MIN / side)
        return im.resize((im.width * k, im.height * k), Image.Resampling.NEAREST)
    if side > TILE_MAX:
        k = TILE_MAX / side
        return im.resize((max(1, round(im.width * k)), max(1, round(im.height * k))), Image.Resampling.LANCZOS)
    return im


def contact_sheet(entries: list[Entry]) -> np.ndarray:
    """(H, W, 3) uint8: one cell per entry (original | decoded, caption below), cells in a near-square grid."""
    font = _font(FONT_SIZE)
    line = FONT_SIZE + 4
    cells = []
    for e in entries:
        tiles = [_tile(e.decoded)] if e.original is None else [_tile(e.original), _tile(e.decoded)]
        quality = f"{e.bpp:.3f} bpp" if e.psnr is None else f"{e.psnr:.2f} dB, {e.bpp:.3f} bpp"
        labels = ["decoded"] if e.original is None else ["original", "decoded"]
        cells.append((e.name, quality, tiles, labels))
    cell_w = max(sum(t.width for t in tiles) + GAP * (len(tiles) - 1) for _, _, tiles, _ in cells)
    cell_h = max(max(t.height for t in tiles) for _, _, tiles, _ in cells) + 3 * line
    cols = max(1, min(len(cells), round(math.sqrt(len(cells) * cell_h / cell_w))))
    rows = math.ceil(len(cells) / cols)
    sheet = Image.new("RGB", (GAP + cols * (cell_w + GAP), GAP + rows * (cell_h + GAP)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (name, quality, tiles, labels) in enumerate(cells):
        x0, y0 = GAP + (k % cols) * (cell_w + GAP), GAP + (k // cols) * (cell_h + GAP)
        x = x0
        for tile, label in zip(tiles, labels):
            draw.text((x, y0), label, fill=(90, 90, 90), font=font)
            sheet.paste(tile, (x, y0 + line))
            x += tile.width + GAP
        y = y0 + line + max(t.height for t in tiles) + 2
        draw.text((x0, y), _fit(draw, name, font, cell_w), fill="black", font=font)
        draw.text((x0, y + line), quality, fill="black", font=font)
    return np.asarray(sheet)


def _fit(draw, text: str, font, width: int) -> str:
    """`text` shortened from the left ("...name.png") until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength("..." + text, font=font) > width:
        text = text[1:]
    return "..." + text
