"""The codec's front door: images -> one archive (encode) and archive bytes -> a decoder
(read_archive, archive_from_bytes), each through the registry of representations.

Where each job lives (docs/codec.md): the settings in mixinr/settings.py, rate control in
mixinr/ratecontrol.py, what a representation provides in mixinr/representation.py, the mixture SIREN's
encoder and archives in mixinr/siren/, quantisation-aware fine-tuning in mixinr/quantise.py. The PSNR
reported for each image is decoded from the archive's own bytes, the path `mixinr decode` takes."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixinr import bitstream, formats, grid, ratecontrol, siren, target
from mixinr.errors import MixinrError
from mixinr.images import read_archive_bytes
from mixinr.representation import Decoder, Representation
from mixinr.settings import (EFFORT_SCALE, ENCODER_OMEGA, PRECISIONS, EncodeConfig, FitSchedule, NetworkRules,  # noqa: F401
                             QatConfig, RateControl)
from mixinr.siren.archive import Archive, pack  # noqa: F401 - the SIREN's archive API, used by name
from mixinr.train import OBJECTIVES
from mixinr.validate import check_encode_settings

# What `EncodeConfig.representation` names, and which reader each format version byte gets. A new
# representation is one entry here plus its own modules, and its header reader in mixinr.formats.HEADERS
# (torch-free: what `mixinr info` and decode's planning read).
REPRESENTATIONS: dict[str, Representation] = {r.name: r for r in (siren.REPRESENTATION, grid.REPRESENTATION)}


@dataclass
class EncodedImage:
    name: str
    width: int
    height: int
    psnr: float  # of what Archive.decode gives


@dataclass
class EncodeResult:
    data: bytes  # the whole .mixinr archive
    images: list[EncodedImage]
    seconds: float
    arch: Any  # the candidate's network shape (the SIREN's: model.Arch)
    precision: str
    coeffs: str  # the coefficient scheme stored ("auto" resolved)
    trials: list[dict] = field(default_factory=list)  # what rate control tried: width, precision, bytes, psnr
    probes: list[tuple] = field(default_factory=list)  # with a psnr target: (budget, bpp, psnr) of each encode

    @property
    def bpp(self) -> float:
        return len(self.data) * 8 / sum(im.width * im.height for im in self.images)

    @property
    def psnr_mean(self) -> float:
        return float(np.mean([im.psnr for im in self.images]))


def encode(images: list[np.ndarray], names: list[str], cfg: EncodeConfig) -> EncodeResult:
    """Fit, quantise and pack `images` into one archive: under cfg.bpp when given; with cfg.psnr, the
    smallest whose mean PSNR reaches it (mixinr.target: encodes at several budgets, fits reused)."""
    _check_inputs(images, names, cfg)
    if cfg.psnr is None:
        return _encode(images, names, cfg)
    fits: dict = {}
    start = time.perf_counter()
    result = target.search(lambda bpp: _encode(images, names, dataclasses.replace(cfg, bpp=bpp, psnr=None), fits),
                           cfg.psnr, cfg.psnr_search, cfg.progress)
    result.seconds = time.perf_counter() - start
    return result


class _ReusedFits:
    """A plan whose fits are kept in `fits` across the encodes of a --psnr search, by the plan's
    fit_key(capacity) (what decides a fit besides the budget); plans without one fit afresh."""

    def __init__(self, plan, fits: dict):
        self._plan, self._fits = plan, fits

    def __getattr__(self, name):
        return getattr(self._plan, name)

    def fit(self, capacity: int):
        key = self._plan.fit_key(capacity)
        if key not in self._fits:
            self._fits[key] = self._plan.fit(capacity)
        return self._fits[key]


def _encode(images, names, cfg: EncodeConfig, fits: dict | None = None) -> EncodeResult:
    """encode at cfg.bpp (or without a budget); `fits`: the fits of earlier encodes of the same images."""
    start = time.perf_counter()
    images = [np.ascontiguousarray(im) for im in images]
    sizes = [im.shape[:2] for im in images]
    pixels = sum(h * w for h, w in sizes)
    cfg = cfg.resolved(pixels / len(images))
    plan = REPRESENTATIONS[cfg.representation].plan(images, names, cfg)
    if fits is not None and hasattr(plan, "fit_key"):
        plan = _ReusedFits(plan, fits)
    if cfg.bpp is None:
        cand, setting, trials = ratecontrol.without_budget(plan, cfg)
    else:
        cand, setting, trials = ratecontrol.within_budget(plan, math.floor(cfg.bpp * pixels / 8), pixels, cfg)
    data = cand.pack(setting)
    encoded = [EncodedImage(n, s[1], s[0], p) for n, s, p in zip(names, sizes, cand.psnrs(setting))]
    return EncodeResult(data, encoded, time.perf_counter() - start, cand.arch, cand.precision(setting), cand.coeffs,
                        trials)


def archive_from_bytes(data: bytes, source: str = "archive") -> Decoder:
    """The decoder of an archive's bytes, by its format version; errors are MixinrError "<source>: ..."."""
    version = bitstream.format_version(data, source)
    for rep in REPRESENTATIONS.values():
        if rep.version == version:
            return rep.read(data, source)
    raise formats.unknown_version(source, version, [r.version for r in REPRESENTATIONS.values()])


def read_archive(path) -> Decoder:
    """Read and validate an archive file; errors are MixinrError "<path>: <problem>"."""
    return archive_from_bytes(read_archive_bytes(path), str(path))


def _check_inputs(images, names, cfg: EncodeConfig) -> None:
    """What every representation needs of the images and the settings; each checks its own network
    settings when it makes its plan."""
    if cfg.representation not in ("auto", *REPRESENTATIONS):
        raise MixinrError(f"unknown representation {cfg.representation!r} (known: {', '.join(REPRESENTATIONS)})")
    if not images:
        raise MixinrError("no input images given")
    if len(images) != len(names):
        raise MixinrError(f"{len(images)} images but {len(names)} names")
    if len(images) > bitstream.MAX_IMAGES:
        raise MixinrError(f"too many images in one archive ({len(images)} > {bitstream.MAX_IMAGES})")
    for im, name in zip(images, names):
        problem = bitstream.check_name(name)
        if problem:
            raise MixinrError(f"{name}: {problem}")
        a = np.asarray(im)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise MixinrError(f"{name}: expected an (H, W, 3) uint8 image, got {a.dtype} {a.shape}")
        if not (1 <= a.shape[0] <= bitstream.MAX_SIDE and 1 <= a.shape[1] <= bitstream.MAX_SIDE):
            raise MixinrError(f"{name}: image size {a.shape[0]}x{a.shape[1]} out of range")
    if cfg.bpp is not None and not (isinstance(cfg.bpp, (int, float)) and math.isfinite(cfg.bpp) and cfg.bpp > 0):
        raise MixinrError(f"--bpp must be a positive number, got {cfg.bpp}")
    if cfg.bpp is not None and cfg.psnr is not None:
        raise MixinrError("give --bpp or --psnr, not both")
    if cfg.psnr is not None and not (isinstance(cfg.psnr, (int, float)) and math.isfinite(cfg.psnr) and cfg.psnr > 0):
        raise MixinrError(f"--psnr must be a positive number of dB, got {cfg.psnr}")
    if cfg.effort not in EFFORT_SCALE:
        raise MixinrError(f"--effort must be one of {min(EFFORT_SCALE)}..{max(EFFORT_SCALE)}, got {cfg.effort}")
    if cfg.time_limit is not None and not (isinstance(cfg.time_limit, (int, float)) and math.isfinite(cfg.time_limit)
                                           and cfg.time_limit > 0):
        raise MixinrError(f"--time-limit must be a positive number of seconds, got {cfg.time_limit}")
    if cfg.objective not in OBJECTIVES:
        raise MixinrError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {cfg.objective!r}")
    check_encode_settings(bpp=cfg.bpp, precision=cfg.precision, epochs=cfg.epochs, lr=cfg.lr,
                          lbfgs_steps=cfg.lbfgs_steps, qat_epochs=cfg.qat_epochs, seed=cfg.seed)
