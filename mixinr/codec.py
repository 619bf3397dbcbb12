"""The codec: images -> fitted mixture SIREN -> .mixinr bytes (encode, pack) and back (Archive).

Rate control (docs/codec.md): the budget in bytes is floor(bpp * pixels / 8). The network is fitted
at the widest width predicted to fit; each tensor's quantisation step follows its measured
sensitivity, scaled by one number that a bisection pushes to the finest setting within the budget.
If that setting is far from the intended quantisation loss (or nothing fits) the width is corrected
from the measured bits per weight and the network refitted once. Each fit is then quantised
incrementally, one range-coder word under the budget (mixinr.quantise: a growing share of its weights
rounded and frozen, the rest retrained, the last rounded greedily), the result kept where it decodes
better within the budget, and the best PSNR of these is stored.
The PSNR reported for each image is computed from the archive's own bytes through Archive.decode,
the same path `mixinr decode` takes."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from mixinr import bitstream, entropy, quantise
from mixinr.bitstream import Header, TensorCode
from mixinr.errors import MixinrError
from mixinr.images import read_bytes
from mixinr.metrics import psnr, psnr_from_mse
from mixinr.model import (COEFF_SCHEMES, Arch, MixtureSiren, grid, image_layers, layer_coeffs, linear_coefficients,
                          render, to_uint8)
from mixinr.train import OBJECTIVES, FitConfig, fit, psnr_weights

# Every setting below is a measured default; the measurements behind each are in docs/rd.md (the study
# per session) and docs/codec.md (rate control and fine-tuning). A preset is a value of these classes.


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
    lr: float = 2e-5  # 1e-4 did as well but coded 4 bytes longer
    lbfgs_steps: int = 0  # per stage; 200 gained 0.07 dB on class 1 at 4 bpp for 8 s more: off
    margin_bytes: int = 4  # aim one range-coder word under the budget: else half came out 3-4 bytes over


# The encoder's omega: 15 (with lr 2e-3) beat the seed's 30, which the format implies for archives
# without stored omegas (bitstream.IMPLICIT_OMEGA).
ENCODER_OMEGA = 15.0
MAX_DECODE_PIXELS = 1 << 26  # 8192 x 8192: the render buffer stays under 1 GB
SMALL_FIT_WORK = 1 << 22  # pixels x width below which fitting runs on one thread

# Sensitivity (docs/codec.md, "Quantisation"): noise of std = max|w| / NOISE_DIVISOR, far below any step
# rate control picks, so the MSE grows in its quadratic regime; NOISE_DRAWS seeded draws average it; on
# groups larger than SENSITIVITY_SIDE^2 pixels a grid of that side samples the same average.
NOISE_DIVISOR = 300
NOISE_DRAWS = 2
SENSITIVITY_SIDE = 64
# The bisection over alpha: from a quantisation predicted to cost FINEST_LOSS_DB (finer gains nothing
# measurable) to COARSEST_LOSS_DB (nothing worth storing); BISECTION_STEPS halvings of log alpha leave
# the final alpha within 1e-6 of the budget's edge in log terms, each step a real pack.
FINEST_LOSS_DB, COARSEST_LOSS_DB = 0.001, 40.0
BISECTION_STEPS = 24
MSE_FLOOR = 1e-10  # a float fit this good (PSNR ~106 dB) is treated as this: predicted losses stay finite
# Width choice: bits per coded value guessed for fixed precisions (fp16 stores 16; entropy coding saves
# about ENTROPY_SAVING_BITS over a fixed-length q<b>), and the lowest measured value believed (a nearly
# empty stream would otherwise ask for an absurd width).
FP16_BITS = 16.0
ENTROPY_SAVING_BITS = 0.9
MIN_MEASURED_BITS = 0.25
WIDTH_VARINT_SLACK = 2  # bytes: the width's varint in the header may grow from width 1's
PRECISIONS = ("auto", "fp16") + tuple(f"q{b}" for b in range(bitstream.MIN_BITS, bitstream.MAX_BITS + 1))


_NESTED = {"schedule": FitSchedule, "rules": NetworkRules, "rate": RateControl, "qat": QatConfig}


@dataclass(frozen=True)
class EncodeConfig:
    """What encode does. The flat fields are the command line's; None takes the nested settings' value
    (epochs -> schedule.epochs, ...). Nested settings given as dicts (JSON) become their classes."""

    bpp: float | None = None  # hard cap on archive bits / total pixels; None -> explicit depth/width
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
    schedule: FitSchedule = FitSchedule()
    rules: NetworkRules = NetworkRules()
    rate: RateControl = RateControl()
    qat: QatConfig = QatConfig()

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
    arch: Arch
    precision: str
    coeffs: str  # the coefficient scheme stored ("auto" resolved)
    trials: list[dict] = field(default_factory=list)  # what rate control tried: width, precision, bytes, psnr

    @property
    def bpp(self) -> float:
        return len(self.data) * 8 / sum(im.width * im.height for im in self.images)

    @property
    def psnr_mean(self) -> float:
        return float(np.mean([im.psnr for im in self.images]))


# ------------------------------------------------------------------------------------- packing


def _tensors(model: MixtureSiren) -> list[np.ndarray]:
    return [t.detach().cpu().float().numpy() for t in model.coded_params()]


def _header(arch: Arch, names, sizes, scheme: str, precision: str, codes=()) -> Header:
    return Header(arch.depth, arch.width, arch.sets, float(arch.omega_first), float(arch.omega), scheme,
                  precision, [tuple(map(int, s)) for s in sizes], list(names), list(codes))


def _write(header: Header, coeffs, weights: bytes) -> bytes:
    try:
        return bitstream.write(header, coeffs, weights)
    except ValueError as e:
        raise MixinrError(f"cannot store this archive: {e}") from None


def _pack_tensors(arch, tensors, scheme, names, sizes, precision, steps=None) -> bytes:
    """fp16: weights and (as their own section) coefficients as float16. Quantised (precision "q<b>",
    or steps given: the bits the steps need): every tensor, coefficients last, range coded."""
    if precision == "fp16":
        n = 2 * (arch.depth + 1)
        coeffs = tensors[n] if scheme != "linear" else None
        return _write(_header(arch, names, sizes, scheme, "fp16"), coeffs, entropy.fp16_bytes(tensors[:n]))
    bits = _bits(precision) if steps is None else entropy.bits_for(tensors, steps)
    codes, payload = entropy.encode_tensors(tensors, bits, steps)
    return _write(_header(arch, names, sizes, scheme, f"q{bits}", codes), None, payload)


def _bits(precision: str) -> int:
    if precision not in PRECISIONS or precision in ("auto", "fp16"):
        raise MixinrError(f"precision must be fp16 or q{bitstream.MIN_BITS}..q{bitstream.MAX_BITS}, got {precision!r}")
    return int(precision[1:])


def pack(model: MixtureSiren, names: list[str], sizes: list[tuple[int, int]], precision: str = "fp16") -> bytes:
    """Archive bytes of an already-fitted model; sizes are (height, width) per image."""
    if len(names) != model.n_images or len(sizes) != model.n_images:
        raise MixinrError(f"pack: {model.n_images} images in the model, {len(names)} names, {len(sizes)} sizes")
    return _pack_tensors(model.arch, _tensors(model), model.scheme, names, sizes, precision)


def _overhead(arch: Arch, names, sizes, scheme: str, quantised: bool) -> int:
    """Bytes of an archive whose weights section is empty (magic, header, coefficients, checksum)."""
    codes = [TensorCode(0, 1.0, 1.0)] * (2 * (arch.depth + 1) + (scheme != "linear")) if quantised else []
    h = _header(arch, names, sizes, scheme, "q8" if quantised else "fp16", codes)
    coeffs = np.zeros(h.coeff_shape(), np.float32) if scheme != "linear" and not quantised else None
    return len(_write(h, coeffs, b""))


# ------------------------------------------------------------------------------------- decoding


class Archive:
    """A parsed, validated archive: the K weight sets are decoded once, images one at a time."""

    def __init__(self, parsed: bitstream.Parsed, source: str, n_bytes: int):
        h = parsed.header
        self.source, self.n_bytes, self.sections = source, n_bytes, parsed.sections
        self.version = bitstream.VERSION
        self.names, self.sizes, self.precision, self.scheme = h.names, h.sizes, h.precision, h.coeffs
        self.arch = Arch(h.depth, h.width, h.sets, h.omega, h.omega_first)
        shapes = h.tensor_shapes()
        try:
            if h.precision == "fp16":
                tensors = entropy.fp16_tensors(parsed.weights, shapes)
            else:
                tensors = entropy.decode_tensors(parsed.weights, shapes, h.codes, h.bits)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - constriction raises AssertionError, or a Rust panic
            # (pyo3's PanicException derives from BaseException), on data its model cannot have produced.
            raise MixinrError(f"{source}: corrupt weights section ({type(e).__name__})") from None
        if not all(np.all(np.isfinite(t)) for t in tensors):
            raise MixinrError(f"{source}: weights section holds non-finite values")
        t = [torch.from_numpy(np.ascontiguousarray(x)) for x in tensors]
        n = 2 * (h.depth + 1)
        self._weights, self._biases = t[0:n:2], t[1:n:2]
        if h.coeffs_coded:
            self.coeffs = t[n]
        elif parsed.coeffs is not None:
            self.coeffs = torch.from_numpy(parsed.coeffs.copy())
        else:
            self.coeffs = linear_coefficients(h.n, h.sets)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "archive") -> "Archive":
        return cls(bitstream.read(data, source), source, len(data))

    def __len__(self) -> int:
        return len(self.names)

    def layers(self, index: int):
        """Image `index`'s own SIREN [(W, b)], theta_i = sum_k C[i, k] theta_k."""
        return image_layers(layer_coeffs(self.coeffs, self.arch.depth + 1)[:, index], self._weights, self._biases)

    def decode(self, index: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W, 3) uint8 of image `index` only, at its own size or `size` = (height, width)."""
        if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self.names):
            raise MixinrError(f"{self.source}: no image {index} (the archive holds {len(self.names)})")
        h, w = self.sizes[index] if size is None else size
        if not (1 <= h <= bitstream.MAX_SIDE and 1 <= w <= bitstream.MAX_SIDE and h * w <= MAX_DECODE_PIXELS):
            raise MixinrError(f"{self.source}: output size {h}x{w} out of range")
        rgb = render(self.layers(index), self.arch, int(h), int(w))
        return to_uint8(rgb).numpy()

    def info(self) -> dict:
        return {
            "version": self.version,
            "bytes": self.n_bytes,
            "arch": {"depth": self.arch.depth, "width": self.arch.width,
                     "omega_first": self.arch.omega_first, "omega": self.arch.omega},
            "sets": self.arch.sets,
            "images_count": len(self.names),
            "coeffs": self.scheme,
            "precision": self.precision,
            "params_per_set": self.arch.params_per_set(),
            "sections": dict(self.sections),
            "images": [{"index": i, "name": n, "height": s[0], "width": s[1]}
                       for i, (n, s) in enumerate(zip(self.names, self.sizes))],
        }


def read_archive(path) -> Archive:
    """Read and validate an archive file; errors are MixinrError "<path>: <problem>"."""
    return Archive.from_bytes(read_bytes(path, "an archive"), str(path))


# ------------------------------------------------------------------------------------- encoding


def _check_inputs(images, names, cfg: EncodeConfig) -> None:
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
    if cfg.bpp is None and (cfg.depth is None or cfg.width is None):
        raise MixinrError("give --bpp, or both --depth and --width")
    for what, v, cap in (("--depth", cfg.depth, bitstream.MAX_DEPTH), ("--width", cfg.width, bitstream.MAX_WIDTH),
                         ("--sets", cfg.sets, bitstream.MAX_SETS)):
        if v is not None and not 1 <= v <= cap:
            raise MixinrError(f"{what} must be between 1 and {cap}, got {v}")
    if cfg.objective not in OBJECTIVES:
        raise MixinrError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {cfg.objective!r}")
    if cfg.coeffs not in ("auto",) + COEFF_SCHEMES:
        raise MixinrError(f"--coeffs must be auto, {', '.join(COEFF_SCHEMES)}, got {cfg.coeffs!r}")
    if cfg.precision not in PRECISIONS:
        raise MixinrError(f"precision must be auto, fp16 or q{bitstream.MIN_BITS}..q{bitstream.MAX_BITS}")
    if cfg.lr is not None and not (isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr) and cfg.lr > 0):
        raise MixinrError(f"learning rate must be a positive number, got {cfg.lr}")
    if cfg.epochs is not None and cfg.epochs < 1:
        raise MixinrError(f"--epochs must be at least 1, got {cfg.epochs}")
    if cfg.lbfgs_steps is not None and cfg.lbfgs_steps < 0:
        raise MixinrError(f"--lbfgs-steps must be 0 or more, got {cfg.lbfgs_steps}")
    if cfg.qat_epochs is not None and cfg.qat_epochs < 0:
        raise MixinrError(f"--qat-epochs must be 0 or more, got {cfg.qat_epochs}")


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


def fit_config(cfg: EncodeConfig, description: str = "fitting", threads: int | None = None) -> FitConfig:
    sched = cfg.schedule
    epochs, lr = cfg.epochs or sched.epochs, cfg.lr or sched.lr
    lbfgs = round(sched.lbfgs_share * epochs) if cfg.lbfgs_steps is None else cfg.lbfgs_steps
    return FitConfig(epochs=epochs, lr=lr, t0=epochs, eta_min=lr / 100, coeffs=cfg.coeffs, coeff_lr=sched.coeff_lr,
                     lbfgs_steps=lbfgs, objective=cfg.objective,
                     seed=cfg.seed, device=cfg.device, progress=cfg.progress, description=description,
                     threads=threads)


def fit_threads(work: int) -> int:
    """CPU threads for a fit, fixed by the problem alone: the thread count can change float rounding,
    and the same input and seed must give the same archive whatever the machine's load. Small fits
    (pixels x width up to SMALL_FIT_WORK) gain nothing from a second thread."""
    return 1 if work <= SMALL_FIT_WORK else torch.get_num_threads()


def sensitivity(model: MixtureSiren, sizes, seed: int = 0, image_weights=None) -> np.ndarray:
    """Per coded tensor (file order, learned coefficients last): growth of the decoded images' mean
    squared error ([-1, 1] scale; image i's weighted by image_weights[i], default 1) per unit of
    variance of independent noise added to each of its elements, the model of quantisation noise
    (variance step^2 / 12). NOISE_DRAWS seeded noise draws, evaluated on the images' own grid when all
    share one of at most SENSITIVITY_SIDE^2 pixels, else on a grid of that side (a sample of the same average)."""
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
    with torch.no_grad():
        base = m(coords)
        for p in params:
            orig = p.data.clone()
            std = max(orig.abs().max().item() / NOISE_DIVISOR, 1e-8)  # 1e-8: an all-zero tensor still gets noise
            acc = 0.0
            for _ in range(NOISE_DRAWS):
                p.data = orig + torch.randn(orig.shape, generator=gen) * std
                acc += float((m(coords) - base).square().mean(dim=(1, 2)) @ w) / m.n_images
            p.data = orig
            out.append(max(acc / NOISE_DRAWS / std**2, 1e-12))  # 1e-12: no tensor gets an infinite step
    return np.array(out)


class _Candidate:
    """One fitted network, packed on demand at a setting: "fp16", "q<b>" (every tensor uses the whole
    b-bit alphabet), or a float alpha: tensor t gets step alpha * sqrt(n_t / g_t) (g: sensitivity),
    the steps minimising the predicted error sum_t g_t step_t^2 / 12 for a given rate
    sum_t n_t log2(1 / step_t); the predicted error is then alpha^2 * (number of weights) / 12."""

    def __init__(self, model: MixtureSiren, float_mse: float, images, names, sizes, seed: int, g=None,
                 image_weights=None):
        # With the "psnr" objective float_mse is the images' geometric mean MSE and image_weights geo / MSE_i:
        # predicted losses are then in mean PSNR and the steps spare the images where noise costs most dB.
        self.model, self.float_mse, self.images, self.names, self.sizes = model, float_mse, images, names, sizes
        self.seed, self.image_weights = seed, image_weights
        self.tensors = _tensors(model)
        self.n_weights = sum(t.size for t in self.tensors)
        self._packed: dict = {}
        self._psnrs: dict = {}
        self._g = g  # sensitivities; a fine-tuned candidate keeps its parent's, so alpha means the same steps
        self.qat_seconds = None  # set on a candidate made by fine-tuning

    def stored_steps(self, alpha: float) -> list[float]:
        """The steps the archive at `alpha` really uses (float16, raised where a tensor needs it)."""
        steps = self.steps(alpha)
        bits = entropy.bits_for(self.tensors, steps)
        return [entropy.quantise(t, bits, s)[1] for t, s in zip(self.tensors, steps)]

    @property
    def arch(self) -> Arch:
        return self.model.arch

    def steps(self, alpha: float) -> list[float]:
        if self._g is None:
            self._g = sensitivity(self.model, self.sizes, self.seed, self.image_weights)
        return [alpha * math.sqrt(t.size / g) for t, g in zip(self.tensors, self._g)]

    def predicted_loss_db(self, alpha: float) -> float:
        """PSNR the quantisation at `alpha` is predicted to cost against the float network."""
        return 10 * math.log10(1 + alpha**2 * self.n_weights / 12 / max(self.float_mse, MSE_FLOOR))

    def alpha_for_loss(self, db: float) -> float:
        """The alpha whose predicted PSNR loss (vs the float network) is `db`."""
        extra = max(self.float_mse, MSE_FLOOR) * (10 ** (db / 10) - 1)
        return math.sqrt(12 * extra / self.n_weights)

    def pack(self, setting) -> bytes:
        key = setting if isinstance(setting, str) else float(setting)
        if key not in self._packed:
            steps = None if isinstance(setting, str) else self.steps(setting)
            self._packed[key] = _pack_tensors(self.arch, self.tensors, self.model.scheme, self.names, self.sizes,
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

    def finest_under(self, budget: int):
        """The smallest alpha (best quality) whose archive fits `budget` bytes, or None."""
        lo, hi = math.log(self.alpha_for_loss(FINEST_LOSS_DB)), math.log(self.alpha_for_loss(COARSEST_LOSS_DB))
        if len(self.pack(math.exp(hi))) > budget:
            return None
        if len(self.pack(math.exp(lo))) <= budget:
            return math.exp(lo)
        for _ in range(BISECTION_STEPS):  # bytes fall as alpha grows: bisect in log alpha
            mid = (lo + hi) / 2
            if len(self.pack(math.exp(mid))) <= budget:
                hi = mid
            else:
                lo = mid
        return math.exp(hi)


def _width_for(budget: int, depth: int, sets: int, overhead: int, bits_per_param: float, coded: int = 0) -> int:
    """Widest width whose weights (and `coded` other values in the stream) are predicted to fit in
    `budget` bytes (0 if none)."""
    room = (budget - overhead) * 8 / bits_per_param - coded
    best = 0
    for w in range(1, bitstream.MAX_WIDTH + 1):
        if bitstream.params_for(depth, w, sets) > room:
            break
        best = w
    return best


def encode(images: list[np.ndarray], names: list[str], cfg: EncodeConfig) -> EncodeResult:
    """Fit, quantise and pack `images` into one archive (under cfg.bpp when given)."""
    _check_inputs(images, names, cfg)
    # More weight sets than images only adds weights (with linear coefficients a set would go unused).
    cfg = dataclasses.replace(cfg, sets=min(cfg.sets, len(images)))
    start = time.perf_counter()
    images = [np.ascontiguousarray(im) for im in images]
    sizes = [im.shape[:2] for im in images]
    pixels = sum(h * w for h, w in sizes)
    cfg = dataclasses.replace(cfg, depth=cfg.depth or default_depth(pixels / len(images), cfg.rules))
    cfg = dataclasses.replace(cfg, coeffs=coeff_scheme(cfg, len(images), pixels))
    trials: list[dict] = []

    def fitted(depth: int, width: int) -> _Candidate:
        arch = Arch(depth, width, cfg.sets, omega=cfg.omega, omega_first=cfg.omega)
        res = fit(images, arch, fit_config(cfg, f"fitting {depth}x{width}", fit_threads(pixels * width)))
        weights = None if cfg.objective == "mse" else psnr_weights(torch.tensor(res.best_mses))[1].numpy()
        return _Candidate(res.model, res.best_score, images, names, sizes, cfg.seed, image_weights=weights)

    def evaluate(cand: _Candidate, setting) -> float:
        p = float(np.mean(cand.psnrs(setting)))
        trials.append({"depth": cand.arch.depth, "width": cand.arch.width, "precision": cand.precision(setting),
                       "alpha": None if isinstance(setting, str) else setting,
                       "predicted_loss_db": None if isinstance(setting, str) else cand.predicted_loss_db(setting),
                       "float_psnr": psnr_from_mse(cand.float_mse),
                       "bytes": len(cand.pack(setting)), "psnr": p})
        return p

    qat_epochs = cfg.qat.epochs if cfg.qat_epochs is None else cfg.qat_epochs

    def finished(cand: _Candidate, setting):
        """(candidate, setting) after incremental quantisation where that decodes better within the budget
        (without a budget: the bytes already chosen, so fine-tuning never costs bytes)."""
        before = evaluate(cand, setting)
        if not qat_epochs or isinstance(setting, str):
            return cand, setting
        budget = math.floor(cfg.bpp * pixels / 8) if cfg.bpp else len(cand.pack(setting))
        # Retraining and the greedy rounding move the coded size by a few bytes: aim cfg.qat.margin_bytes under
        # the budget so the result fits at the steps it was tuned to. Else the finest steps that fit, which
        # round every weight again and lose most of what fine-tuning won (docs/codec.md).
        aim = cand.finest_under(budget - cfg.qat.margin_bytes) or setting
        tuned = _fine_tune(cand, aim, qat_epochs, cfg)
        requantised = len(tuned.pack(aim)) > budget
        tuned_setting = tuned.finest_under(budget) if requantised else aim
        if tuned_setting is None:
            return cand, setting
        after = evaluate(tuned, tuned_setting)
        trials[-1].update(qat_epochs=qat_epochs, qat_seconds=tuned.qat_seconds, requantised=requantised)
        return (tuned, tuned_setting) if after > before else (cand, setting)

    if cfg.bpp is None:
        cand = fitted(cfg.depth, cfg.width)
        setting = cfg.precision if cfg.precision != "auto" else cand.alpha_for_loss(cfg.rate.no_budget_loss_db)
        cand, setting = finished(cand, setting)
    else:
        setting, cand = _rate_control(names, sizes, cfg, fitted, finished)
    data = cand.pack(setting)
    encoded = [EncodedImage(n, s[1], s[0], p) for n, s, p in zip(names, sizes, cand.psnrs(setting))]
    return EncodeResult(data, encoded, time.perf_counter() - start, cand.arch, cand.precision(setting), cfg.coeffs,
                        trials)


def _fine_tune(cand: _Candidate, alpha: float, epochs: int, cfg: EncodeConfig) -> _Candidate:
    """A copy of `cand` quantised incrementally to the steps `alpha` gives (quantise.fine_tune, cfg.qat.stages),
    its weights on that grid; the copy keeps `cand`'s sensitivities so its alphas name the same steps."""
    arch, sizes = cand.arch, cand.sizes
    qat = cfg.qat
    per_stage = max(1, epochs // len(qat.stages))
    threads = fit_threads(sum(h * w for h, w in sizes) * arch.width)
    # The encode's own fit settings, on the fine-tuning's schedule.
    fcfg = dataclasses.replace(fit_config(cfg, f"quantising {arch.depth}x{arch.width}", threads),
                               epochs=per_stage, lr=qat.lr, t0=per_stage, eta_min=qat.lr / 100, coeffs=cand.model.scheme,
                               lbfgs_steps=qat.lbfgs_steps)
    model, seconds = quantise.fine_tune(cand.model, cand.images, cand.stored_steps(alpha), fcfg, qat.stages,
                                        cand.image_weights)
    tuned = _Candidate(model, cand.float_mse, cand.images, cand.names, cand.sizes, cand.seed, g=cand._g,
                       image_weights=cand.image_weights)
    tuned.qat_seconds = seconds
    return tuned


def _rate_control(names, sizes, cfg: EncodeConfig, fitted, finished):
    """(setting, candidate) with the best PSNR among the fits' archives within the budget, each as
    `finished` leaves it (fine-tuned where that helped); see docs/codec.md."""
    total_px = sum(h * w for h, w in sizes)
    budget = math.floor(cfg.bpp * total_px / 8)
    depth = cfg.depth
    quantised = cfg.precision != "fp16"
    overhead = _overhead(Arch(depth, 1, cfg.sets, omega=cfg.omega, omega_first=cfg.omega), names, sizes, cfg.coeffs, quantised)
    # The smallest network's weights at the fewest bits: ~1 bit per parameter at best.
    min_bytes = overhead + math.ceil(bitstream.params_for(depth, 1, cfg.sets) * (1 if quantised else FP16_BITS) / 8)
    if min_bytes > budget:
        raise MixinrError(f"budget too small: {cfg.bpp} bpp is {budget} bytes for {total_px} pixels, "
                          f"even a {depth}x1 network needs about {min_bytes}")
    overhead += WIDTH_VARINT_SLACK

    def best_setting(cand):
        if cfg.precision == "auto":
            return cand.finest_under(budget)
        return cfg.precision if len(cand.pack(cfg.precision)) <= budget else None

    def bits_per_param(cand) -> float:
        """Measured bits per weight at the operating point rate control aims for."""
        setting = cand.alpha_for_loss(cfg.rate.target_loss_db) if cfg.precision == "auto" else cfg.precision
        return max((len(cand.pack(setting)) - overhead) * 8 / cand.n_weights, MIN_MEASURED_BITS)

    est = FP16_BITS if cfg.precision == "fp16" else (
        cfg.rate.est_bits_per_param if cfg.precision == "auto" else max(1.0, _bits(cfg.precision) - ENTROPY_SAVING_BITS))
    # Quantised learned coefficients are coded with the weights: they take room like weights do.
    shape = bitstream.coeff_shape(cfg.coeffs, depth, len(names), cfg.sets)
    coded = math.prod(shape) if quantised and shape else 0
    width = cfg.width or _width_for(budget, depth, cfg.sets, overhead, est, coded)
    tried: dict[int, tuple] = {}
    while width >= 1 and width not in tried:
        cand = fitted(depth, width)
        setting = best_setting(cand)
        tried[width] = (cand, setting)
        if cfg.width:
            break
        loss = None if setting is None or isinstance(setting, str) else cand.predicted_loss_db(setting)
        if setting is not None and (loss is None or cfg.rate.low_loss_db <= loss <= cfg.rate.high_loss_db or len(tried) > 1):
            break
        # Quantisation far from the intended operating point (or nothing fits): one refit at the width
        # the measured bits per weight says fits the budget there.
        nxt = _width_for(budget, depth, cfg.sets, overhead, bits_per_param(cand), coded)
        if setting is None:
            nxt = min(nxt, width - 1)
        width = nxt
    fits = [(c, s) for c, s in tried.values() if s is not None]
    if not fits:
        if cfg.width:
            raise MixinrError(f"budget too small: {cfg.bpp} bpp is {budget} bytes; a {depth}x{cfg.width} network "
                              f"does not fit at {'any precision' if cfg.precision == 'auto' else cfg.precision}")
        raise MixinrError(f"budget too small: {cfg.bpp} bpp is {budget} bytes, not enough for a {depth}x1 network")
    # Each fit as it will be stored (fine-tuned where that helped): fine-tuning recovers most where rounding
    # cost most, so a wider fit that rounds badly can still end best.
    fits = [finished(c, s) for c, s in fits]
    scored = [(float(np.mean(c.psnrs(s))), -len(c.pack(s)), i) for i, (c, s) in enumerate(fits)]
    cand, setting = fits[max(scored)[2]]
    return setting, cand
