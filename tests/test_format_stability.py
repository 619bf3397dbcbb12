"""Format stability and determinism (issue 21): archives written today decode to the same pixels
forever, and the same input and seed give the same archive whatever the thread count.

tests/data holds two golden archives of format version 1, written once (2026-12-01, torch 2.13.0+cpu,
constriction 0.5.0, x86_64) and never to be rewritten: a quantised one (q8, per-layer coefficients coded
in the weights stream) and an fp16 one (learned coefficients in their own section, omega 15, two image
sizes). Beside each, a PNG of what it decoded to then: every image at its own size, then every image at
5x7, side by side. 0.4.0, 0.4.2 and 0.5.0 of constriction decoded them identically (pyproject pins
<0.6). Two of format version 2 (the grid) were added the same way (2026-12-01, same build): one with
the factorized latents prior (two 12x16 images), one with the context model (flag 2; 12x16 and 9x14),
both at latent step 0.75. A third (2026-12-03, same build) has the latents around their context means
(flags 2 and 4; 12x16 and 9x14, latent step 0.75)."""

import hashlib
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_image

from mixinr import bitstream
from mixinr.codec import EncodeConfig, encode, read_archive
from mixinr.grid import format as gformat
from mixinr.images import read_image

DATA = Path(__file__).parent / "data"
RECORDED = ("2.13.0+cpu", "x86_64")  # torch.__version__, platform.machine() of the PNGs
GOLDEN = {  # stem: (SHA-256 of the archive, SHA-256 of the decoded pixels, header fields)
    "golden-q8-per-layer": ("418741681e88e730e352ea705b29a40a027f67a11402d97b65dc0bda5adf3036",
                            "02db8f67673ed151ea1d208404751d6cdcc18c146dfb48ae686f0efba4f1a9c8",
                            dict(depth=2, width=6, sets=2, coeffs="per-layer", precision="q8", sizes=[(8, 8), (8, 8)],
                                 names=["a.png", "b.png"])),
    "golden-fp16-learned": ("6965a64f0da25f176420485a202939bbf740b027e8ac96ec76b7a8b4db2e58f0",
                            "7e57f60205079fbd8e84e554f5c9968703befb2b278649af03f4123c15c0459c",
                            dict(depth=2, width=4, sets=2, coeffs="learned", precision="fp16",
                                 sizes=[(8, 8), (6, 10)], names=["c.png", "d.png"])),
    "golden-grid-factorized": ("0a9ce6020b2b2def57b2410083d0da0a48a4e33212f0225fd2f74fb00f984d50",
                               "31a0bffc31b275273469c6a48276c874bf0c2a1be0755a38d793fcc49b4bf4ac",
                               dict(levels=3, widths=(8,), sets=2, context=0, latent_step=0.75,
                                    sizes=[(12, 16), (12, 16)], names=["e.png", "f.png"])),
    "golden-grid-context": ("379415d0aa4664dc1c7af0626368282b6c7e8d279409880f7c7180fbbb8d2eec",
                            "c6789d412acafbec34146baf54cd108280d2e61e2c83f8edebdb251ababa91dd",
                            dict(levels=3, widths=(8,), sets=2, context=8, latent_step=0.75,
                                 sizes=[(12, 16), (9, 14)], names=["e.png", "f.png"])),
    "golden-grid-residual": ("584724db8734a85de3a0828b1d16430b015b2c2f0c851dd16354ac3fa04b3993",
                             "f96d20cc315eff6ad5a81353b34a10e9f374e12405a7bd34b42c24047d7e8f22",
                             dict(levels=3, widths=(8,), sets=2, context=8, residual=True, latent_step=0.75,
                                  sizes=[(12, 16), (9, 14)], names=["g.png", "h.png"])),
}


def _sheet(archive) -> np.ndarray:
    rows = [archive.decode(i) for i in range(len(archive))] + [archive.decode(i, (5, 7)) for i in range(len(archive))]
    sheet = np.zeros((max(r.shape[0] for r in rows), sum(r.shape[1] for r in rows), 3), np.uint8)
    x = 0
    for r in rows:
        sheet[: r.shape[0], x : x + r.shape[1]] = r
        x += r.shape[1]
    return sheet


@pytest.mark.parametrize("stem", list(GOLDEN))
def test_golden_archive_is_unchanged_and_parses(stem):
    """The committed archive is the one recorded (never regenerated) and its header reads as written."""
    data = (DATA / f"{stem}.mixinr").read_bytes()
    archive_hash, _, fields = GOLDEN[stem]
    assert hashlib.sha256(data).hexdigest() == archive_hash
    reader = gformat.read if bitstream.format_version(data) == gformat.VERSION else bitstream.read
    h = reader(data, stem).header
    assert {k: getattr(h, k) for k in fields} == fields


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("stem", list(GOLDEN))
def test_golden_archive_decodes_to_the_recorded_pixels(stem, threads):
    """Every image, at its own size and resized, decodes to the recorded pixels with 1 or 2 torch threads:
    bit-exact on the recording's torch build and CPU architecture, within 1 level elsewhere (float
    rounding of sin and matmul may differ between builds; docs/format.md "Stability")."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sheet = _sheet(read_archive(DATA / f"{stem}.mixinr"))
    finally:
        torch.set_num_threads(before)
    expected = read_image(DATA / f"{stem}.png")
    assert hashlib.sha256(expected.tobytes()).hexdigest() == GOLDEN[stem][1]  # the PNG is the recorded one
    if (torch.__version__, platform.machine()) == RECORDED:
        assert hashlib.sha256(sheet.tobytes()).hexdigest() == GOLDEN[stem][1]
    else:
        assert np.abs(sheet.astype(int) - expected.astype(int)).max() <= 1


def test_same_archive_whatever_the_thread_count(one_thread):
    """A rate-controlled encode (fit, sensitivities, bisection, fine-tuning, greedy rounding) gives the
    same bytes with 1 and 2 torch threads: fits of up to codec.SMALL_FIT_WORK pixels x width run on one
    thread whatever torch's setting (larger ones use torch's thread count: docs/format.md)."""
    images = [smooth_image(12, 12, s) for s in range(3)]
    cfg = EncodeConfig(bpp=4.0, epochs=40, qat_epochs=20, progress=False, device="cpu")
    archives = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        archives.append(encode(images, ["a.png", "b.png", "c.png"], cfg).data)
    assert archives[0] == archives[1]
