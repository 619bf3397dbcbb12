"""What the codec needs from a representation of a group of images, written once for all of them.

A representation (the mixture SIREN today, `mixinr/siren/`) gives the codec three things, collected in
a `Representation` entry of the registry in `mixinr/codec.py`:

- `plan(images, names, cfg)`: a `Plan`, the group ready to fit, with the choices the caller left open
  made (depth, coefficients, ...). Rate control (`mixinr/ratecontrol.py`) sizes it by one integer
  capacity (the SIREN's width): it asks the plan which capacity a byte budget allows at a number of
  bits per coded value, fits it, and gets a `Candidate`.
- A `Candidate`: one fitted network that packs to archive bytes at a setting, reports each image's
  PSNR decoded from those bytes, predicts what a setting costs, and can be fine-tuned to a setting's
  quantisation grid. A setting is a float alpha (one number scaling every tensor's quantisation step)
  or a fixed precision string ("fp16", "q<bits>"). `finest_under` below finds the finest alpha under
  a byte budget for any candidate, within the range of alphas it names.
- `read(data, source)`: a `Decoder` from archive bytes, which renders image i at any size and
  describes itself (`info()`, what `mixinr info` prints).

Each representation owns one format version byte (`version`; the SIREN's archives are version 1);
`codec.archive_from_bytes` picks the reader by that byte. By the same byte, `mixinr.formats.HEADERS` holds
its header reader: torch-free, the names, sizes, render cost and `info()` a `Decoder` reports, from the
header alone (what `mixinr info` and `mixinr decode`'s planning read). See docs/codec.md, "Representations".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mixinr import bitstream
from mixinr.errors import MixinrError
from mixinr.progress import Bar

Setting = float | str  # alpha (steps scaled by one number) or a fixed precision: "fp16", "q<bits>"

# Alphas worth storing for candidates whose steps follow sensitivities (noise_alpha_range): from a
# quantisation predicted to cost FINEST_LOSS_DB (finer gains nothing measurable) to COARSEST_LOSS_DB
# (nothing worth storing). BISECTION_STEPS halvings of that range of log alpha (about 11.6) end within
# 1e-6 of the budget's edge, each step a real pack.
FINEST_LOSS_DB, COARSEST_LOSS_DB = 0.001, 40.0
BISECTION_STEPS = 24
MSE_FLOOR = 1e-10  # a float fit this good (PSNR ~106 dB) counts as this, so predicted losses stay finite


@runtime_checkable
class Candidate(Protocol):
    """One fitted representation of a group, packed on demand at a setting (results cached)."""

    arch: Any  # its network shape, reported in EncodeResult.arch
    coeffs: str  # its coefficient scheme, reported in EncodeResult.coeffs
    float_mse: float  # the float fit's objective as an MSE: predicted losses are relative to it
    n_values: int  # coded values: predicted losses and measured bits per value count these
    qat_seconds: float | None  # set on a candidate made by fine_tuned

    def describe(self) -> dict:
        """The shape fields a trial records first, e.g. {"depth": 5, "width": 12}."""

    def pack(self, setting: Setting) -> bytes:
        """The whole archive at `setting`."""

    def psnrs(self, setting: Setting) -> list[float]:
        """Every image's PSNR as `mixinr decode` gives it: decoded from pack(setting)'s bytes."""

    def precision(self, setting: Setting) -> str:
        """The precision the archive at `setting` stores ("fp16", "q<bits>")."""

    def predicted_loss_db(self, alpha: float) -> float:
        """PSNR the quantisation at `alpha` is predicted to cost against the float fit."""

    def alpha_for_loss(self, db: float) -> float:
        """The alpha whose predicted loss is `db` (inverse of predicted_loss_db)."""

    def alpha_range(self) -> tuple[float, float]:
        """The finest and the coarsest alpha worth storing: what finest_under searches."""

    def fine_tuned(self, alpha: float, epochs: int) -> Candidate | None:
        """A copy fine-tuned onto the quantisation grid of `alpha` for `epochs` (its other settings from
        the EncodeConfig it was fitted with), whose alphas name the same steps as this candidate's;
        None where the representation has no fine-tuning."""


@runtime_checkable
class Plan(Protocol):
    """A group ready to fit, sized by one integer capacity (the SIREN's width)."""

    fixed_capacity: int | None  # the caller's choice (--width), or None: rate control picks

    def fit(self, capacity: int) -> Candidate:
        """Fit the group at `capacity`."""

    def min_bytes(self) -> int:
        """About the smallest archive there is (capacity 1 at one bit per value; 16 for fp16)."""

    def capacity_for(self, budget: int, bits_per_value: float) -> int:
        """The largest capacity whose archive is predicted to fit `budget` bytes at that rate (0: none)."""

    def bits_per_value(self, cand: Candidate, setting: Setting) -> float:
        """Bits per coded value the archive at `setting` measured, outside its fixed overhead."""

    def label(self, capacity: int) -> str:
        """How errors name a network of this capacity, e.g. "5x12"."""


@runtime_checkable
class Decoder(Protocol):
    """A parsed, validated archive: renders its images one at a time, at any size."""

    source: str
    names: list[str]
    sizes: list[tuple[int, int]]  # (height, width) each image was encoded at
    precision: str
    n_bytes: int
    madds_per_pixel: int  # rendering cost of one output pixel: decode refuses pixels x this over the cap

    def __len__(self) -> int: ...

    def decode(self, index: int, size: tuple[int, int] | None = None):
        """(H, W, 3) uint8 of image `index` at its own size or `size` = (height, width)."""

    def info(self) -> dict:
        """What `mixinr info` reports: at least version, bytes, images_count, precision, sections, images."""


@dataclass(frozen=True)
class Representation:
    """One registry entry (codec.REPRESENTATIONS): a representation's name, format version and makers."""

    name: str
    version: int  # the format version byte its archives carry
    plan: Callable[..., Plan]  # (images, names, cfg: EncodeConfig) -> Plan
    read: Callable[[bytes, str], Decoder]  # (archive bytes, source for messages) -> Decoder


def finest_under(cand: Candidate, budget: int, show: bool | None = None) -> float | None:
    """The smallest alpha (best quality) in cand.alpha_range() whose archive fits `budget` bytes, or None.
    `show`: its progress (mixinr.progress), for a large network's packs."""
    lo, hi = (math.log(a) for a in cand.alpha_range())
    if len(cand.pack(math.exp(hi))) > budget:
        return None
    if len(cand.pack(math.exp(lo))) <= budget:
        return math.exp(lo)
    with Bar("choosing steps", BISECTION_STEPS, show) as bar:
        for k in range(BISECTION_STEPS):  # bytes fall as alpha grows: bisect in log alpha
            mid = (lo + hi) / 2
            if len(cand.pack(math.exp(mid))) <= budget:
                hi = mid
            else:
                lo = mid
            bar.update(k + 1, f"{len(cand.pack(math.exp(hi)))} B of {budget}")
    return math.exp(hi)


def noise_loss_db(float_mse: float, n_values: int, alpha: float) -> float:
    """The predicted PSNR loss of steps alpha * sqrt(n_t / g_t): noise adds alpha^2 n / 12 to the MSE."""
    return 10 * math.log10(1 + alpha**2 * n_values / 12 / max(float_mse, MSE_FLOOR))


def alpha_for_noise_loss(float_mse: float, n_values: int, db: float) -> float:
    """The alpha whose predicted loss (noise_loss_db) is `db`."""
    extra = max(float_mse, MSE_FLOOR) * (10 ** (db / 10) - 1)
    return math.sqrt(12 * extra / n_values)


def noise_alpha_range(float_mse: float, n_values: int) -> tuple[float, float]:
    """The alphas predicted to cost FINEST_LOSS_DB and COARSEST_LOSS_DB."""
    return (alpha_for_noise_loss(float_mse, n_values, FINEST_LOSS_DB),
            alpha_for_noise_loss(float_mse, n_values, COARSEST_LOSS_DB))


def output_size(dec: Decoder, index, size, max_pixels: int) -> tuple[int, int]:
    """(height, width) a decoder renders image `index` at (its own size, or `size`), checked first."""
    if not isinstance(index, (int, np.integer)) or not 0 <= index < len(dec.names):
        raise MixinrError(f"{dec.source}: no image {index} (the archive holds {len(dec.names)})")
    h, w = dec.sizes[index] if size is None else size
    if not (1 <= h <= bitstream.MAX_SIDE and 1 <= w <= bitstream.MAX_SIDE and h * w <= max_pixels):
        raise MixinrError(f"{dec.source}: output size {h}x{w} out of range")
    return int(h), int(w)


def time_limit_deadline(cfg) -> float | None:
    """The time.perf_counter() at which a plan made now stops fitting (cfg.time_limit seconds), or None."""
    return None if cfg.time_limit is None else time.perf_counter() + cfg.time_limit
