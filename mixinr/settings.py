"""The encoder's settings: frozen dataclasses with the measured defaults (docs/codec.md, "Settings and
their evidence"). A preset is a value: EncodeConfig(rate=RateControl(target_loss_db=3.5)). Torch-free,
so the command line can build one without importing torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mixinr import bitstream
from mixinr.errors import MixinrError


@dataclass(frozen=True)
class FitSchedule:
    """How each fit runs: Adam with one cosine from lr to lr / 100 over `epochs` full-batch epochs, then
    lbfgs_share x epochs L-BFGS iterations from the kept weights (train.Fitter.polish)."""

    epochs: int = 3000
    lr: float = 2e-3  # beat 1e-3 by 0.4-0.6 dB on CIFAR airplanes; 3e-3 and 4e-3 lost (docs/rd.md)
    lbfgs_share: float = 4.0  # against 2: +0.05 to +0.09 dB at 1 / 2 / 4 bpp on ten classes (seventh session)
    coeff_lr: float = 30.0  # learned coefficients' lr as a multiple of lr: 10x +0.3 dB, 30x +0.5, 100x diverged


@dataclass(frozen=True)
class NetworkRules:
    """Network choices made from the group when the caller leaves them open (docs/codec.md, docs/rd.md)."""

    small_depth: int = 5  # depth when the images average at most large_pixels: on CIFAR-10 5 beat 3, 4 and 6
    large_depth: int = 9  # above: Kodak 128x192 at 0.5 bpp peaked at depth 9 (27.68 dB; 11 and 13 fell back)
    large_pixels: int = 64 * 64  # between CIFAR and quarter Kodak the step is a guess
    coeff_bits: int = 12  # what rate control's steps gave learned coefficients on the airplanes (11-13)
    per_layer_max_share: float = 0.25  # "auto" coefficients: per layer unless predicted above this share of the budget


@dataclass(frozen=True)
class RateControl:
    """Where rate control aims (docs/codec.md, "Rate control"; seventh session in docs/rd.md)."""

    target_loss_db: float = 2.5  # predicted quantisation loss aimed at; fine-tuning wins most of it back
    est_bits_per_param: float = 6.5  # first width's guess: 2 bpp archives spent 6.64-6.66 bits per value
    low_loss_db: float = 1.0  # refit once when the first fit's predicted loss lies outside [low, high]
    high_loss_db: float = 4.0
    no_budget_loss_db: float = 0.05  # precision "auto" without a budget


@dataclass(frozen=True)
class QatConfig:
    """Incremental quantisation-aware fine-tuning (mixinr.quantise; docs/codec.md): epochs / len(stages)
    epochs per stage at lr (one cosine to lr / 100), each stage freezing its share of every tensor."""

    epochs: int = 600  # all stages together; 0 turns fine-tuning off
    stages: tuple[float, ...] = (0.5, 0.75, 0.9)  # 1.0 of 1.16 dB recovered on 14 automobiles at 4 bpp
    lr: float = 1e-4  # 2e-5 until the fourteenth session: +0.1-0.2 dB on wide 4 bpp fits, level elsewhere (docs/rd.md)
    lbfgs_steps: int = 0  # per stage; 200 gained 0.07 dB on class 1 at 4 bpp for 8 s more: off
    margin_bytes: int = 4  # aim one range-coder word under the budget: else half came out 3-4 bytes over


@dataclass(frozen=True)
class PsnrSearch:
    """The search for a PSNR target (`--psnr`, mixinr.target; docs/codec.md, "Quality target")."""

    start_bpp: float = 2.0  # the first probe; CIFAR-10 groups reach 30 dB about there (docs/rd.md)
    max_bpp: float = 24.0  # 8-bit RGB's raw rate: a budget above it is never needed
    db_per_doubling: float = 5.0  # the bracket's steps: CIFAR-10 groups gained 4.5 / 5.1 dB from 1 to 2 / 2 to 4 bpp
    rel_tol: float = 0.05  # the bracket's ends this close: the answer at most 5% above the smallest budget
    max_probes: int = 10  # a hard stop; 4-7 encodes on the tests' curves and groups
    # A probe whose archive uses less than this share of its budget had nothing to spend more on (a fixed
    # network at its finest steps): a larger budget gives the same archive.
    saturated_share: float = 0.75


@dataclass(frozen=True)
class GridConfig:
    """The grid representation's shape and schedule (mixinr/grid/; defaults measured in docs/photo.md)."""

    levels: int = 7  # latent grids, 1:1 .. 1:64
    widths: tuple[int, ...] = (16, 16)  # synthesis hidden layers
    sets: int = 2  # K shared synthesis weight sets (capped at the group size)
    steps: int = 1200  # Adam steps over the whole group: 33.86 against 32.63 dB at 600 (kodim03, 0.5 bpp; docs/photo.md)
    lr: float = 2e-2  # the synthesis' Adam step; one cosine decay to lr / 100 (as every lr here)
    latent_lr: float = 0.25  # the latents' (symbol units): 0.04 / 0.1 / 0.25 gave 29.1 / 30.3 / 31.2 dB (docs/photo.md)
    level_lr: float = 1.25  # each coarser level's latent lr over the next finer one's: +0.2 dB half-size tuning, +0.09 full-size report (docs/photo.md)
    hard_share: float = 0.1  # final share of steps with rounded latents (straight-through)
    betas: tuple[float, float] = (0.8, 0.99)  # Adam's: +0.07 / +0.36 dB over (0.9, 0.999) on the tuning images (docs/photo.md)
    # Adam's eps for the loss summed over the pixels: the loss is per pixel, so Adam gets eps / pixels and a
    # latent's steps do not depend on the image's size. +0.42 / +0.27 dB over 1e-8 at half size (docs/photo.md)
    eps: float = 1e-2
    lam: float = 1e-3  # first rate weight: MSE per bit per pixel
    lam_rate: float = 0.05  # lambda's multiplicative adaptation per step toward the target rate
    hard_lam_rate: float = 1.5  # the same in the rounded phase, whose rate drifts up (6% at 0.05; docs/photo.md)
    lam_max: float = 3e-2  # lambda's ceiling: a group's early rate drove it 200x up and its latents collapsed (docs/photo.md)
    context: int = 16  # hidden width of the latents' context MLP (grid/context.py); 0: the factorized Laplace
    residual: bool = True  # with the context: latents = context means + whole steps; +0.68 dB mean on 4 full-size Kodak images at 0.5 bpp (docs/photo.md)
    objective: str = "mse"  # "mse" or "psnr" (the images' mean PSNR, as the SIREN's: train.OBJECTIVES); the codec passes its own
    start: bool = True  # begin from the learned start (grid/start.py): +0.90 / +0.92 dB, full-size kodim03 / kodim15, 0.5 bpp (docs/photo.md)
    seed: int = 0


# The encoder's omega: 15 (with lr 2e-3) beat the seed's 30, which the format implies for archives
# without stored omegas (bitstream.IMPLICIT_OMEGA).
ENCODER_OMEGA = 15.0
PRECISIONS = ("auto", "fp16") + tuple(f"q{b}" for b in range(bitstream.MIN_BITS, bitstream.MAX_BITS + 1))


def precision_bits(precision: str) -> int:
    """The bit depth of a fixed quantised precision "q<bits>"."""
    if precision not in PRECISIONS or precision in ("auto", "fp16"):
        raise MixinrError(f"precision must be fp16 or q{bitstream.MIN_BITS}..q{bitstream.MAX_BITS}, got {precision!r}")
    return int(precision[1:])


_NESTED = {"schedule": FitSchedule, "rules": NetworkRules, "rate": RateControl, "qat": QatConfig,
           "psnr_search": PsnrSearch, "grid": GridConfig}

# "auto" representation: the grid once the images average more than GRID_PIXELS pixels. Measured: at
# 128x192 the SIREN is 3 dB ahead (Kodak six at 0.5 bpp: 28.46 against 25.40 dB) but takes 40 min
# against 5; at 512x768 its encode takes 15 hours or more. Between the two the step is a guess
# (docs/photo.md).
GRID_PIXELS = 256 * 256
# --effort: one number for the whole schedule, as cjxl -e / avifenc --speed. Each level multiplies the
# default's fitting (SIREN epochs and L-BFGS, grid steps) and fine-tuning epochs; 5 is the measured
# defaults (docs/photo.md has seconds and PSNR per effort).
EFFORT_SCALE = {1: 0.125, 2: 0.25, 3: 0.4, 4: 0.6, 5: 1.0, 6: 1.5, 7: 2.0, 8: 3.0, 9: 4.0}
DEFAULT_EFFORT = 5


@dataclass(frozen=True)
class EncodeConfig:
    """What encode does. The flat fields are the command line's; None takes the nested settings' value
    (epochs -> schedule.epochs, ...). Nested settings given as dicts (JSON) become their classes."""

    bpp: float | None = None  # hard cap on archive bits / total pixels; None -> psnr, or explicit depth/width
    psnr: float | None = None  # instead of bpp: the smallest archive whose mean PSNR reaches this (mixinr.target)
    depth: int | None = None  # None -> by image size (rules)
    width: int | None = None
    sets: int = 3  # K: 3 with learned coefficients and omega 20 gave +1.1 to +1.9 dB over the seed's 2
    coeffs: str = "auto"  # "auto" (rules), "per-layer", "learned" or "linear" (the seed's)
    omega: float = ENCODER_OMEGA  # first and hidden layers' omega
    objective: str = "psnr"  # "mse" (all pixels alike) or "psnr" (mean PSNR: gained at every budget, ninth session)
    precision: str = "auto"  # "fp16" (seed storage) or "q<bits>" quantised + entropy coded; auto picks
    epochs: int | None = None  # Adam's epochs; None -> schedule.epochs
    lr: float | None = None  # Adam's first learning rate (one cosine decay to lr/100); None -> schedule.lr
    lbfgs_steps: int | None = None  # L-BFGS iterations after Adam; None -> schedule.lbfgs_share x epochs, 0 -> off
    qat_epochs: int | None = None  # quantisation-aware fine-tuning; None -> qat.epochs, 0 -> off
    seed: int = 0
    device: str = "auto"
    progress: bool | None = None
    representation: str = "auto"  # what is fitted: a key of codec.REPRESENTATIONS, or "auto" (by GRID_PIXELS)
    effort: int = DEFAULT_EFFORT  # 1..9: scales the whole schedule (EFFORT_SCALE)
    time_limit: float | None = None  # seconds: the fit stops there and the best archive so far is kept
    schedule: FitSchedule = FitSchedule()
    rules: NetworkRules = NetworkRules()
    rate: RateControl = RateControl()
    qat: QatConfig = QatConfig()
    psnr_search: PsnrSearch = PsnrSearch()
    grid: GridConfig = GridConfig()

    def resolved(self, pixels_per_image: float) -> "EncodeConfig":
        """This config with "auto" representation decided and the effort applied to the schedule
        (flat fields the caller gave, such as epochs, still win)."""
        rep = self.representation
        if rep == "auto":
            rep = "grid" if pixels_per_image > GRID_PIXELS else "siren"
        k = EFFORT_SCALE[self.effort]
        scaled = lambda n: max(1, round(n * k))  # noqa: E731
        return dataclasses.replace(
            self, representation=rep, effort=DEFAULT_EFFORT,
            schedule=dataclasses.replace(self.schedule, epochs=scaled(self.schedule.epochs)),
            qat=dataclasses.replace(self.qat, epochs=scaled(self.qat.epochs) if self.qat.epochs else 0),
            grid=dataclasses.replace(self.grid, steps=scaled(self.grid.steps)))

    def __post_init__(self):
        for name, cls in _NESTED.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                try:
                    value = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
                except TypeError as e:
                    raise MixinrError(f"EncodeConfig.{name}: {e}") from None
                object.__setattr__(self, name, value)
            elif not isinstance(value, cls):
                raise MixinrError(f"EncodeConfig.{name} must be a {cls.__name__}, got {type(value).__name__}")
