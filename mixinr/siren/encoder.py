"""The mixture SIREN's side of encoding: the group's plan (network choices left open, fitting at a
width) and the fitted candidate (sensitivity-weighted steps, packing at a setting, fine-tuning), the
representation.Plan and representation.Candidate that rate control works with (docs/codec.md)."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch

from mixinr import bitstream, entropy, quantise
from mixinr.errors import MixinrError
from mixinr.metrics import psnr, psnr_from_mse
from mixinr.model import Arch, MixtureSiren, grid
from mixinr.progress import Bar, log
from mixinr.representation import alpha_for_noise_loss, noise_alpha_range, noise_loss_db, time_limit_deadline
from mixinr.settings import EncodeConfig, NetworkRules
from mixinr.siren.archive import Archive, coded_tensors, overhead, pack_tensors
from mixinr.train import FitConfig, fit, psnr_weights
from mixinr.validate import check_budget, check_network

SMALL_FIT_WORK = 1 << 22  # pixels x width up to which fitting runs on one thread (fit_threads)
# Sensitivity (docs/codec.md, "Quantisation"): noise of std max|w| / NOISE_DIVISOR, far below any step
# rate control picks, so the error grows in its quadratic regime; NOISE_DRAWS seeded draws average it;
# groups larger than SENSITIVITY_SIDE^2 pixels are sampled on a grid of that side (the same average).
NOISE_DIVISOR = 300
NOISE_DRAWS = 2
SENSITIVITY_SIDE = 64
WIDTH_VARINT_SLACK = 2  # bytes: the width's varint in the header may grow from width 1's


# ------------------------------------------------------------------------------ choices for the group


def coeff_scheme(cfg: EncodeConfig, n_images: int, pixels: int) -> str:
    """The coefficient scheme "auto" stands for (cfg.rules.per_layer_max_share); others unchanged."""
    if cfg.coeffs != "auto":
        return cfg.coeffs
    if cfg.bpp is None:
        return "per-layer"
    bits = 16 if cfg.precision == "fp16" else cfg.rules.coeff_bits
    depth = cfg.depth or default_depth(pixels / n_images, cfg.rules)
    cost = math.prod(bitstream.coeff_shape("per-layer", depth, n_images, cfg.sets)) * bits
    return "per-layer" if cost <= cfg.rules.per_layer_max_share * cfg.bpp * pixels else "learned"


def default_depth(pixels_per_image: float, rules: NetworkRules = NetworkRules()) -> int:
    """The depth rate control uses when none is given, by the images' mean pixel count."""
    return rules.large_depth if pixels_per_image > rules.large_pixels else rules.small_depth


def fit_config(cfg: EncodeConfig, description: str = "fitting", threads: int | None = None,
               deadline: float | None = None) -> FitConfig:
    """train.FitConfig of an encode: cfg's flat fields where given, else its schedule."""
    sched = cfg.schedule
    epochs, lr = cfg.epochs or sched.epochs, cfg.lr or sched.lr
    lbfgs = round(sched.lbfgs_share * epochs) if cfg.lbfgs_steps is None else cfg.lbfgs_steps
    return FitConfig(epochs=epochs, lr=lr, t0=epochs, eta_min=lr / 100, coeffs=cfg.coeffs, coeff_lr=sched.coeff_lr,
                     lbfgs_steps=lbfgs, objective=cfg.objective,
                     seed=cfg.seed, device=cfg.device, progress=cfg.progress, description=description,
                     threads=threads, deadline=deadline)


def fit_threads(work: int) -> int:
    """CPU threads for a fit, fixed by the problem alone: the thread count can change float rounding,
    and the same input and seed must give the same archive whatever the machine's load. Small fits
    (pixels x width up to SMALL_FIT_WORK) gain nothing from a second thread."""
    return 1 if work <= SMALL_FIT_WORK else torch.get_num_threads()


def width_for(budget: int, depth: int, sets: int, fixed_bytes: int, bits_per_param: float, coded: int = 0) -> int:
    """Widest width whose weights (and `coded` other values in the stream) are predicted to fit in
    `budget` bytes besides `fixed_bytes` (0 if none)."""
    room = (budget - fixed_bytes) * 8 / bits_per_param - coded
    best = 0
    for w in range(1, bitstream.MAX_WIDTH + 1):
        if bitstream.params_for(depth, w, sets) > room:
            break
        best = w
    return best


def check(cfg: EncodeConfig) -> None:
    """The SIREN's network settings within the format's caps (MixinrError naming the option)."""
    if cfg.bpp is None and cfg.psnr is None and (cfg.depth is None or cfg.width is None):
        raise MixinrError("give --bpp or --psnr, or both --depth and --width")
    check_network(cfg.bpp or cfg.psnr, cfg.depth, cfg.width, cfg.sets, cfg.omega)  # a --psnr search sets bpp later
    if cfg.coeffs not in ("auto",) + bitstream.SCHEMES:
        raise MixinrError(f"--coeffs must be auto, {', '.join(bitstream.SCHEMES)}, got {cfg.coeffs!r}")


class SirenPlan:
    """A group ready to fit (representation.Plan): the depth, K and coefficient scheme the caller left
    open chosen for it; its capacity is the width."""

    def __init__(self, images: list[np.ndarray], names: list[str], cfg: EncodeConfig):
        check(cfg)
        sizes = [im.shape[:2] for im in images]
        pixels = sum(h * w for h, w in sizes)
        # More weight sets than images only adds weights (with linear coefficients a set would go unused).
        cfg = dataclasses.replace(cfg, sets=min(cfg.sets, len(images)))
        cfg = dataclasses.replace(cfg, depth=cfg.depth or default_depth(pixels / len(images), cfg.rules))
        self.cfg = dataclasses.replace(cfg, coeffs=coeff_scheme(cfg, len(images), pixels))
        if cfg.bpp is not None and cfg.width is not None:  # a fixed network that cannot fit: before fitting
            check_budget(cfg.bpp, pixels, len(images), cfg.depth, cfg.width, cfg.sets, cfg.precision)
        self.images, self.names, self.sizes, self.pixels = images, names, sizes, pixels
        self.fixed_capacity = cfg.width
        self.deadline = time_limit_deadline(cfg)
        self.quantised = cfg.precision != "fp16"
        self._fixed_bytes = None

    def fit(self, width: int) -> SirenCandidate:
        cfg, depth = self.cfg, self.cfg.depth
        arch = Arch(depth, width, cfg.sets, omega=cfg.omega, omega_first=cfg.omega)
        res = fit(self.images, arch, fit_config(cfg, f"fitting {depth}x{width}", fit_threads(self.pixels * width),
                                                self.deadline))
        log.info(f"fitted {depth}x{width} in {res.seconds:.1f} s: {psnr_from_mse(res.best_score):.2f} dB before "
                 "quantisation")
        weights = None if cfg.objective == "mse" else psnr_weights(torch.tensor(res.best_mses))[1].numpy()
        return SirenCandidate(res.model, res.best_score, self.images, self.names, self.sizes, cfg,
                              image_weights=weights)

    def fit_key(self, width: int) -> tuple:
        """What decides the fit at `width` besides the budget (codec keeps fits across --psnr's encodes):
        the coefficient scheme "auto" picks depends on the budget, so it is part of the key."""
        return self.cfg.depth, width, self.cfg.sets, self.cfg.coeffs

    def _overhead(self) -> int:
        """Bytes of a width-1 archive besides its weights stream (header, names, coefficients, checksum)."""
        cfg = self.cfg
        arch = Arch(cfg.depth, 1, cfg.sets, omega=cfg.omega, omega_first=cfg.omega)
        return overhead(arch, self.names, self.sizes, cfg.coeffs, self.quantised)

    def min_bytes(self) -> int:
        # The smallest network's weights at the fewest bits: ~1 bit per parameter at best (float16: 16).
        values = bitstream.params_for(self.cfg.depth, 1, self.cfg.sets)
        return self._overhead() + math.ceil(values * (1 if self.quantised else 16) / 8)

    def fixed_bytes(self) -> int:
        """The bytes a wider archive spends besides its weights (the width's varint may grow)."""
        if self._fixed_bytes is None:
            self._fixed_bytes = self._overhead() + WIDTH_VARINT_SLACK
        return self._fixed_bytes

    def capacity_for(self, budget: int, bits_per_value: float) -> int:
        cfg = self.cfg
        # Quantised learned coefficients are coded with the weights: they take room like weights do.
        shape = bitstream.coeff_shape(cfg.coeffs, cfg.depth, len(self.names), cfg.sets)
        coded = math.prod(shape) if self.quantised and shape else 0
        return width_for(budget, cfg.depth, cfg.sets, self.fixed_bytes(), bits_per_value, coded)

    def bits_per_value(self, cand: SirenCandidate, setting) -> float:
        return (len(cand.pack(setting)) - self.fixed_bytes()) * 8 / cand.n_values

    def label(self, width: int) -> str:
        return f"{self.cfg.depth}x{width}"


# ------------------------------------------------------------------------------ the fitted network


def sensitivity(model: MixtureSiren, sizes, seed: int = 0, image_weights=None, show: bool | None = None) -> np.ndarray:
    """Per coded tensor (file order, learned coefficients last): growth of the decoded images' mean
    squared error ([-1, 1] scale; image i's weighted by image_weights[i], default 1) per unit of
    variance of independent noise added to each of its elements, the model of quantisation noise
    (variance step^2 / 12). NOISE_DRAWS seeded noise draws, evaluated on the images' own grid when all
    share one of at most SENSITIVITY_SIDE^2 pixels, else on a grid of that side."""
    heights, widths = zip(*sizes)
    side = SENSITIVITY_SIDE
    if len(set(sizes)) == 1 and heights[0] * widths[0] <= side * side:
        coords = grid(heights[0], widths[0])
    else:
        coords = grid(min(side, max(heights)), min(side, max(widths)))
    m = copy.deepcopy(model).cpu().eval()
    params = m.coded_params()
    gen = torch.Generator().manual_seed(seed)
    w = torch.ones(m.n_images) if image_weights is None else torch.as_tensor(image_weights, dtype=torch.float32)
    out = []
    with torch.no_grad(), Bar("measuring sensitivities", len(params), show) as bar:
        base = m(coords)
        for k, p in enumerate(params, 1):
            orig = p.data.clone()
            std = max(orig.abs().max().item() / NOISE_DIVISOR, 1e-8)  # 1e-8: an all-zero tensor still gets noise
            acc = 0.0
            for _ in range(NOISE_DRAWS):
                p.data = orig + torch.randn(orig.shape, generator=gen) * std
                acc += float((m(coords) - base).square().mean(dim=(1, 2)) @ w) / m.n_images
            p.data = orig
            out.append(max(acc / NOISE_DRAWS / std**2, 1e-12))  # 1e-12: no tensor gets an infinite step
            bar.update(k, f"{k}/{len(params)} tensors")
    return np.array(out)


class SirenCandidate:
    """One fitted network (representation.Candidate), packed on demand at a setting: "fp16", "q<b>"
    (every tensor uses the whole b-bit alphabet), or a float alpha: tensor t gets step
    alpha * sqrt(n_t / g_t) (g: sensitivity), the steps minimising the predicted error
    sum_t g_t step_t^2 / 12 for a given rate sum_t n_t log2(1 / step_t); the predicted error is then
    alpha^2 * (number of coded values) / 12."""

    def __init__(self, model: MixtureSiren, float_mse: float, images, names, sizes, cfg: EncodeConfig, g=None,
                 image_weights=None):
        # With the "psnr" objective float_mse is the images' geometric mean MSE and image_weights geo / MSE_i:
        # predicted losses are then in mean PSNR and the steps spare the images where noise costs most dB.
        self.model, self.float_mse, self.images, self.names, self.sizes = model, float_mse, images, names, sizes
        self.cfg, self.image_weights = cfg, image_weights
        self.tensors = coded_tensors(model)
        self.n_values = sum(t.size for t in self.tensors)
        self._packed: dict = {}
        self._psnrs: dict = {}
        self._g = g  # sensitivities; a fine-tuned candidate keeps its parent's, so alpha means the same steps
        self.qat_seconds = None  # set on a candidate made by fine-tuning

    @property
    def arch(self) -> Arch:
        return self.model.arch

    @property
    def coeffs(self) -> str:
        return self.model.scheme

    def describe(self) -> dict:
        return {"depth": self.arch.depth, "width": self.arch.width}

    def steps(self, alpha: float) -> list[float]:
        if self._g is None:
            self._g = sensitivity(self.model, self.sizes, self.cfg.seed, self.image_weights, self.cfg.progress)
        return [alpha * math.sqrt(t.size / g) for t, g in zip(self.tensors, self._g)]

    def stored_steps(self, alpha: float) -> list[float]:
        """The steps the archive at `alpha` really uses (float16, raised where a tensor needs it)."""
        steps = self.steps(alpha)
        bits = entropy.bits_for(self.tensors, steps)
        return [entropy.quantise(t, bits, s)[1] for t, s in zip(self.tensors, steps)]

    def predicted_loss_db(self, alpha: float) -> float:
        return noise_loss_db(self.float_mse, self.n_values, alpha)

    def alpha_for_loss(self, db: float) -> float:
        return alpha_for_noise_loss(self.float_mse, self.n_values, db)

    def alpha_range(self) -> tuple[float, float]:
        return noise_alpha_range(self.float_mse, self.n_values)

    def pack(self, setting) -> bytes:
        key = setting if isinstance(setting, str) else float(setting)
        if key not in self._packed:
            steps = None if isinstance(setting, str) else self.steps(setting)
            self._packed[key] = pack_tensors(self.arch, self.tensors, self.model.scheme, self.names, self.sizes,
                                             setting if steps is None else None, steps)
        return self._packed[key]

    def precision(self, setting) -> str:
        return setting if isinstance(setting, str) else bitstream.read(self.pack(setting)).header.precision

    def psnrs(self, setting) -> list[float]:
        """PSNR of every image as `mixinr decode` will give it: through Archive on the packed bytes."""
        key = setting if isinstance(setting, str) else float(setting)
        if key not in self._psnrs:
            archive = Archive.from_bytes(self.pack(setting))
            self._psnrs[key] = [psnr(archive.decode(i), im) for i, im in enumerate(self.images)]
        return self._psnrs[key]

    def fine_tuned(self, alpha: float, epochs: int) -> SirenCandidate:
        """A copy quantised incrementally to the steps `alpha` gives (quantise.fine_tune, cfg.qat.stages),
        its weights on that grid; the copy keeps these sensitivities so its alphas name the same steps."""
        arch, qat = self.arch, self.cfg.qat
        per_stage = max(1, epochs // len(qat.stages))
        threads = fit_threads(sum(h * w for h, w in self.sizes) * arch.width)
        # The encode's own fit settings, on the fine-tuning's schedule.
        fcfg = dataclasses.replace(fit_config(self.cfg, f"quantising {arch.depth}x{arch.width}", threads),
                                   epochs=per_stage, lr=qat.lr, t0=per_stage, eta_min=qat.lr / 100,
                                   coeffs=self.model.scheme, lbfgs_steps=qat.lbfgs_steps)
        model, seconds = quantise.fine_tune(self.model, self.images, self.stored_steps(alpha), fcfg, qat.stages,
                                            self.image_weights)
        tuned = SirenCandidate(model, self.float_mse, self.images, self.names, self.sizes, self.cfg, g=self._g,
                               image_weights=self.image_weights)
        tuned.qat_seconds = seconds
        return tuned
