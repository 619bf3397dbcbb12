"""Rate-distortion comparison: measured RD points, BD-rate / BD-PSNR, interpolation to a common bpp.

What a point is:
- per image: the bytes of the file that holds it, bpp = bytes * 8 / pixels, PSNR (RGB, 8-bit, peak
  255), MS-SSIM (pytorch-msssim, data range 255; None when the image's smaller side is under 161 px,
  which MS-SSIM's five scales need) and single-scale SSIM (always, labelled "ssim").
- mean, classical codecs: at one setting, the mean of the per-image PSNR (and SSIMs) over the images,
  and bpp = total bytes * 8 / total pixels (so large images weigh more in the rate, as in a folder of
  files).
- mixinr: the bytes are the archive's, shared by all images of its group, so an image's bpp is its
  group's (archive bits / the group's pixels). The mean point at a bpp budget is the mean PSNR over
  all images and total archive bits / total pixels.

Allocated curves (`allocated_curve`): a classical codec given mixinr's freedom, each image's setting
chosen so that its group's mean PSNR (or MS-SSIM) is highest within the group's bytes at each fixed
setting (mixinr.allocate). Named `<codec>-allocated` (`-allocated-ms-ssim`); the plain name is fixed
quality, one setting for every image. Every curve carries its spread per setting (the hardest image,
the std over the images) and encode / decode seconds.

BD-rate and BD-PSNR come from the `bjontegaard` package (pchip interpolation, integration over the
overlap of the two curves only). Curves are first reduced to their RD envelope (sorted by bpp,
keeping only points that raise the quality), since a quality sweep may hold dominated or duplicate
points (a format's header floor) and the interpolators need strictly increasing values.
"""

from __future__ import annotations

import csv
import io
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mixinr.baselines import Codec, round_trip
from mixinr.jsonout import finite
from mixinr.metrics import bpp as bits_per_pixel
from mixinr.metrics import psnr

MS_SSIM_MIN_SIDE = 161  # pytorch-msssim: smaller side must exceed (win_size - 1) * 2**4 = 160
BD_METHOD = "pchip"
FORMAT, VERSION = "mixinr-compare", 1


# ---------------------------------------------------------------------------------------------
# quality of one decoded image


def _tensor(img: np.ndarray, dtype):
    import torch

    return torch.from_numpy(np.asarray(img)).to(dtype).permute(2, 0, 1)[None]


def _ssim_call(fn, ref: np.ndarray, dec: np.ndarray) -> float:
    """Run a pytorch-msssim function. Small images run in float64 on one thread: there the
    per-call thread start-up costs far more than the convolution (100 ms vs 2 ms on a busy CPU)."""
    import torch

    if ref.shape[0] * ref.shape[1] >= 1 << 16:
        with torch.no_grad():
            return float(fn(_tensor(ref, torch.float32), _tensor(dec, torch.float32), data_range=255.0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            return float(fn(_tensor(ref, torch.float64), _tensor(dec, torch.float64), data_range=255.0))
    finally:
        torch.set_num_threads(threads)


def ms_ssim(ref: np.ndarray, dec: np.ndarray) -> float | None:
    """MS-SSIM of two (H, W, 3) uint8 images; None when the image is too small for five scales."""
    if min(ref.shape[:2]) < MS_SSIM_MIN_SIDE:
        return None
    from pytorch_msssim import ms_ssim as _ms_ssim

    return _ssim_call(_ms_ssim, ref, dec)


def ssim(ref: np.ndarray, dec: np.ndarray) -> float | None:
    """Single-scale SSIM (11x11 Gaussian window); None when a side is under 11 px."""
    if min(ref.shape[:2]) < 11:
        return None
    from pytorch_msssim import ssim as _ssim

    return _ssim_call(_ssim, ref, dec)


# ---------------------------------------------------------------------------------------------
# RD points and curves


@dataclass
class Point:
    """One image coded at one setting."""

    image: str
    setting: float
    bytes: int  # the file's bytes (mixinr: the whole archive, shared by its group)
    bpp: float  # bytes * 8 / pixels (mixinr: archive bits / the group's pixels)
    psnr: float
    ms_ssim: float | None
    ssim: float | None
    group: int | None = None  # mixinr: which archive holds the image
    encode_s: float | None = None  # seconds to encode this image (mixinr: its group's fit split evenly)
    decode_s: float | None = None  # seconds to decode it from the bytes
    quality: float | None = None  # allocated curves: the setting chosen for this image


@dataclass
class Curve:
    """A codec's RD points: per image, and the mean point of every setting."""

    name: str
    description: str
    setting_name: str
    settings: list[float] = field(default_factory=list)
    bpp: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    ms_ssim: list[float | None] = field(default_factory=list)
    ssim: list[float | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # encoding time of all images at the setting
    decode_seconds: list[float] = field(default_factory=list)  # decoding time of all images at the setting
    psnr_min: list[float] = field(default_factory=list)  # spread: the hardest image at the setting
    psnr_std: list[float] = field(default_factory=list)  # and the std over the images
    points: list[Point] = field(default_factory=list)
    allocated: str | None = None  # allocated curves: the metric whose mean the allocation maximised
    pixels: int = 0  # of all images (the rate's denominator)

    def add_setting(self, setting: float, points: list[Point], total_bytes: int, total_pixels: int, seconds: float):
        """Append one setting: its per-image points and the mean point (total bits / total pixels)."""
        self.settings.append(setting)
        self.pixels = total_pixels
        self.bpp.append(bits_per_pixel(total_bytes, total_pixels))
        self.psnr.append(float(np.mean([p.psnr for p in points])))
        sp = spread([p.psnr for p in points])
        self.psnr_min.append(sp["min"])
        self.psnr_std.append(sp["std"])
        self.decode_seconds.append(float(sum(p.decode_s or 0.0 for p in points)))
        self.ms_ssim.append(_mean_or_none([p.ms_ssim for p in points]))
        self.ssim.append(_mean_or_none([p.ssim for p in points]))
        self.seconds.append(seconds)
        self.points.extend(points)

    def to_json(self) -> dict:
        """CompressAI's layout ({name, description, results: {bpp, psnr-rgb, ms-ssim}}) plus ours."""
        out = {
            "name": self.name,
            "description": self.description,
            "setting": self.setting_name,
            "settings": self.settings,
            "results": {
                "bpp": self.bpp,
                "psnr-rgb": self.psnr,
                "ms-ssim": self.ms_ssim,
                "ssim": self.ssim,
                "psnr-rgb-min": self.psnr_min,
                "psnr-rgb-std": self.psnr_std,
                "seconds": self.seconds,
                "decode-seconds": self.decode_seconds,
            },
            "per_image": [
                {"image": p.image, "setting": p.setting, "group": p.group, "bytes": p.bytes, "bpp": p.bpp,
                 "psnr-rgb": p.psnr, "ms-ssim": p.ms_ssim, "ssim": p.ssim, "encode_s": p.encode_s,
                 "decode_s": p.decode_s, **({} if p.quality is None else {"quality": p.quality})}
                for p in self.points
            ],
        }
        if self.allocated:
            out["allocated"] = self.allocated
        return out


def _mean_or_none(values):
    """Mean, or None when any value is missing (a mean over a subset would not be comparable)."""
    return None if not values or any(v is None for v in values) else float(np.mean(values))


def _point(name, setting, ref, dec, n_bytes, pixels, group=None, encode_s=None, decode_s=None) -> Point:
    return Point(name, setting, n_bytes, bits_per_pixel(n_bytes, pixels), psnr(ref, dec), ms_ssim(ref, dec),
                 ssim(ref, dec), group, encode_s, decode_s)


def measure_codec(codec: Codec, images, names, settings=None, on_step: Callable[[], None] | None = None) -> Curve:
    """Sweep a classical codec over the images: every image at every setting, real bytes."""
    curve = Curve(codec.name, codec.description, codec.setting_name)
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    for s in codec.settings if settings is None else settings:
        points, total, seconds = [], 0, 0.0
        for name, img in zip(names, images):
            coded = round_trip(codec, img, s)
            seconds += coded.encode_s
            total += coded.n_bytes
            points.append(_point(name, s, img, coded.decoded, coded.n_bytes, img.shape[0] * img.shape[1],
                                 encode_s=coded.encode_s, decode_s=coded.decode_s))
            if on_step:
                on_step()
        curve.add_setting(s, points, total, pixels, seconds)
    return curve


ALLOCATED = "-allocated"  # an allocated curve's name: its codec's + this (+ "-ms-ssim" for that metric)


def allocated_curve(fixed: Curve, groups: list[list[str]], metric: str = "psnr") -> Curve:
    """The codec's allocated curve: at each setting s of its fixed-quality curve, every group gets the
    bytes its images spend at s, and each image's setting is chosen so that the group's mean `metric`
    is highest within them (mixinr.allocate) -- the freedom mixinr's archive has. One quality for all
    is among the choices, so the allocated point is never worse nor dearer than the fixed one.
    `groups` lists the image names of each group (mixinr's archives)."""
    from mixinr.allocate import allocate

    by_image: dict[str, list[Point]] = {}
    for p in fixed.points:
        by_image.setdefault(p.image, []).append(p)
    value = (lambda p: p.psnr) if metric == "psnr" else (lambda p: p.ms_ssim)
    name = fixed.name + ALLOCATED + ("" if metric == "psnr" else "-ms-ssim")
    label = "PSNR" if metric == "psnr" else "MS-SSIM"
    curve = Curve(name, f"{fixed.description}, allocated: per-image {fixed.setting_name} for the group's best "
                        f"mean {label} within its bytes at each {fixed.setting_name}",
                  f"{fixed.setting_name} whose bytes are the budget", allocated="psnr-rgb" if metric == "psnr" else "ms-ssim")
    for s in fixed.settings:
        points, total = [], 0
        for names in groups:
            options = [by_image[n] for n in names]
            budget = sum(next(p.bytes for p in opts if p.setting == s) for opts in options)
            picks = allocate([[(p.bytes, value(p)) for p in opts] for opts in options], budget)
            for opts, j in zip(options, picks):
                p = opts[j]
                points.append(Point(p.image, s, p.bytes, p.bpp, p.psnr, p.ms_ssim, p.ssim, None, p.encode_s,
                                    p.decode_s, p.setting))
                total += p.bytes
        curve.add_setting(s, points, total, fixed.pixels, float(sum(p.encode_s or 0.0 for p in points)))
    return curve


def groups_of(n: int, group_size: int | None, keys=None) -> list[list[int]]:
    """Consecutive groups of at most `group_size` indices (no limit when None); with `keys` (one per
    image, e.g. its folder), a group never spans two keys."""
    keys = [0] * n if keys is None else list(keys)
    groups: list[list[int]] = []
    for i in range(n):
        if not groups or keys[i] != keys[groups[-1][0]] or (group_size and len(groups[-1]) >= group_size):
            groups.append([])
        groups[-1].append(i)
    return groups


def measure_mixinr(images, names, bpps, groups: list[list[int]] | None = None, epochs=None, seed=0, device="auto",
                   on_group: Callable[[float, int, int], None] | None = None) -> tuple[Curve, list[str]]:
    """Encode each group under each bpp budget, decode every image from the archive bytes, measure.

    A budget the codec refuses (too small for the group) is left out with a notice, as is any
    disagreement between the encoder's reported PSNR and the decoded archive's. `groups` lists the
    image indices of each archive (default: all in one). Returns the curve (possibly without
    settings) and the notices.
    """
    from mixinr.codec import EncodeConfig, archive_from_bytes, encode
    from mixinr.errors import MixinrError

    curve = Curve("mixinr", "mixinr (mixture SIREN, one archive per group)", "bpp budget")
    notices = []
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    groups = groups if groups is not None else groups_of(len(images), None)
    for budget in bpps:
        points, total, seconds = [], 0, 0.0
        try:
            for g, idx in enumerate(groups):
                if on_group:
                    on_group(budget, g, len(groups))
                imgs = [images[i] for i in idx]
                cfg = EncodeConfig(bpp=budget, epochs=epochs, seed=seed, device=device)
                res = encode(imgs, [names[i] for i in idx], cfg)
                seconds += res.seconds
                total += len(res.data)
                group_pixels = sum(im.shape[0] * im.shape[1] for im in imgs)
                archive = archive_from_bytes(res.data)
                for j, i in enumerate(idx):
                    t = time.perf_counter()
                    decoded = archive.decode(j)
                    p = _point(names[i], budget, images[i], decoded, len(res.data), group_pixels, g,
                               res.seconds / len(idx), time.perf_counter() - t)
                    if abs(p.psnr - res.images[j].psnr) > 0.01:
                        notices.append(f"mixinr: {names[i]} at {budget:g} bpp: encoder reported "
                                       f"{res.images[j].psnr:.2f} dB, the decoded archive gives {p.psnr:.2f} dB")
                    points.append(p)
        except MixinrError as e:
            notices.append(f"mixinr: {budget:g} bpp left out ({e})")
            continue
        curve.add_setting(budget, points, total, pixels, seconds)
    return curve, notices


# ---------------------------------------------------------------------------------------------
# envelopes, interpolation, BD figures


class OutOfRange(ValueError):
    """A target outside the measured range: we never extrapolate."""


def _envelope_index(bpp, quality) -> list[int]:
    """Indices of the RD envelope's points (see `envelope`), in order of rising bpp."""
    pts = sorted((float(b), float(q), i) for i, (b, q) in enumerate(zip(bpp, quality))
                 if b is not None and q is not None and math.isfinite(b) and math.isfinite(q) and b > 0)
    keep: list[tuple[float, float, int]] = []
    for b, q, i in pts:
        if keep and q <= keep[-1][1]:
            continue  # dominated: a cheaper point is at least as good
        if keep and b == keep[-1][0]:
            keep[-1] = (b, q, i)  # same rate, better quality (sorted): keep the better
            continue
        keep.append((b, q, i))
    return [i for _, _, i in keep]


def envelope(bpp, quality) -> tuple[np.ndarray, np.ndarray]:
    """The RD envelope: points sorted by bpp, keeping only those that raise quality above all cheaper
    ones. Both outputs are strictly increasing. Missing (None/NaN) values are dropped."""
    idx = _envelope_index(bpp, quality)
    return np.array([float(bpp[i]) for i in idx]), np.array([float(quality[i]) for i in idx])


def bracket(bpp, quality, target: float) -> tuple[int, int, float]:
    """(i, j, w): the envelope points around `target` bpp (indices into the inputs) and the weight of j,
    linear in log(bpp); the quality at `target` is (1 - w) * quality[i] + w * quality[j], and the same
    weights interpolate anything else measured at those two points (each image's PSNR, times).
    Raises OutOfRange outside [lowest, highest] measured bpp."""
    idx = _envelope_index(bpp, quality)
    xs = [float(bpp[i]) for i in idx]
    if not idx or not (xs[0] <= target <= xs[-1]):
        lo, hi = (f"{xs[0]:.4g}", f"{xs[-1]:.4g}") if idx else ("-", "-")
        raise OutOfRange(f"{target:.4g} bpp is outside the measured range [{lo}, {hi}]")
    k = max(1, int(np.searchsorted(xs, target)))
    if len(idx) == 1:
        return idx[0], idx[0], 0.0
    x0, x1 = math.log(xs[k - 1]), math.log(xs[k])
    return idx[k - 1], idx[k], (math.log(target) - x0) / (x1 - x0)


def interpolate_at(bpp, quality, target: float) -> float:
    """Quality at `target` bpp on the envelope, linear in log(bpp) between the two measured points
    around it. Raises OutOfRange outside [lowest, highest] measured bpp."""
    i, j, w = bracket(bpp, quality, target)
    return float((1 - w) * quality[i] + w * quality[j])


def spread(values) -> dict:
    """How even a group's quality is: mean, hardest image (min), best, and std over the images."""
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()), "std": float(v.std())}


def at_bpp(curves: list[Curve], targets) -> list[dict]:
    """For each target bpp, each codec's interpolated PSNR, or None where it was not measured."""
    rows = []
    for t in targets:
        row = {"bpp": float(t), "psnr-rgb": {}}
        for c in curves:
            try:
                row["psnr-rgb"][c.name] = interpolate_at(c.bpp, c.psnr, t)
            except OutOfRange:
                row["psnr-rgb"][c.name] = None
        rows.append(row)
    return rows


def _bd_call(fn, curves, label: str, axis: str, notes: list) -> float:
    """Call a bjontegaard function, turning its overlap warning into one short note."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(fn(*curves, method=BD_METHOD, require_matching_points=False))
    for w in caught:
        m = re.search(r"overlap: '([\d.]+)'", str(w.message))
        notes.append(f"{label} over only {float(m.group(1)):.0f}% of the joint {axis} range (under 75%)"
                     if m else f"{label}: {w.message}")
    return value


def bd(anchor: Curve, test: Curve, metric: str = "psnr") -> dict:
    """BD-rate (% bits `test` needs over `anchor` at equal quality; negative = test better) and
    BD-PSNR (dB `test` gains at equal rate), by `bjontegaard` with pchip over the overlap only.
    A figure that cannot be computed (fewer than 2 envelope points, no overlap) is None with a note."""
    import bjontegaard

    q_anchor = anchor.psnr if metric == "psnr" else anchor.ms_ssim
    q_test = test.psnr if metric == "psnr" else test.ms_ssim
    ra, da = envelope(anchor.bpp, q_anchor)
    rt, dt = envelope(test.bpp, q_test)
    out = {"anchor": anchor.name, "test": test.name, "metric": "psnr-rgb" if metric == "psnr" else "ms-ssim",
           "method": BD_METHOD, "bd-rate": None, "bd-quality": None, "quality_overlap": None,
           "bpp_overlap": None, "notes": []}
    if len(ra) < 2 or len(rt) < 2:
        out["notes"].append(f"needs at least 2 RD points per curve after the envelope "
                            f"({anchor.name}: {len(ra)}, {test.name}: {len(rt)})")
        return out
    q_lo, q_hi = max(da[0], dt[0]), min(da[-1], dt[-1])
    r_lo, r_hi = max(ra[0], rt[0]), min(ra[-1], rt[-1])
    if q_hi > q_lo:
        out["bd-rate"] = _bd_call(bjontegaard.bd_rate, (ra, da, rt, dt), "BD-rate", out["metric"], out["notes"])
        out["quality_overlap"] = [float(q_lo), float(q_hi)]
    else:
        out["notes"].append(f"BD-rate undefined: the curves share no {out['metric']} range")
    if r_hi > r_lo:
        out["bd-quality"] = _bd_call(bjontegaard.bd_psnr, (ra, da, rt, dt), "BD-quality", "bpp", out["notes"])
        out["bpp_overlap"] = [float(r_lo), float(r_hi)]
    else:
        out["notes"].append("BD-quality undefined: the curves share no bpp range")
    for key in ("bd-rate", "bd-quality"):
        if out[key] is not None and not math.isfinite(out[key]):
            out[key] = None
    return out


# ---------------------------------------------------------------------------------------------
# output


def results(curves: list[Curve], images: list[dict], skipped: list[str], notices: list[str],
            config: dict, reference: str = "mixinr", targets=None) -> dict:
    """The whole comparison as one JSON-able dict."""
    ref = next((c for c in curves if c.name == reference), None)
    bds = []
    if ref is not None:
        for c in curves:
            if c is ref:
                continue
            if c.allocated in (None, "psnr-rgb"):
                bds.append(bd(c, ref, "psnr"))
            if c.allocated in (None, "ms-ssim") and all(v is not None for v in c.ms_ssim + ref.ms_ssim):
                bds.append(bd(c, ref, "ms-ssim"))
    if targets is None:
        targets = sorted(set(ref.bpp)) if ref is not None else []
    return finite({
        "format": FORMAT,
        "version": VERSION,
        "images": images,
        "config": config,
        "conventions": {
            "bpp": "real file bytes * 8 / pixels; a codec's mean point = total bytes * 8 / total pixels",
            "psnr-rgb": "dB, 8-bit RGB, peak 255, mean over images",
            "ms-ssim": f"pytorch-msssim, data range 255; null when an image side is under {MS_SSIM_MIN_SIDE} px",
            "ssim": "single-scale SSIM (pytorch-msssim, 11x11 Gaussian window), not MS-SSIM",
            "mixinr": "bytes are the whole archive, shared by the images of its group",
            "allocated": f"<codec>{ALLOCATED}: per-image setting chosen for the group's best mean PSNR within "
                         "the bytes the fixed setting spends on the group (mixinr.allocate); "
                         f"<codec>{ALLOCATED}-ms-ssim likewise for MS-SSIM; the others: one setting for all",
            "spread": "psnr-rgb-min: the hardest image; psnr-rgb-std: std over the images (population)",
            "seconds": "encode (seconds) and decode (decode-seconds) of all images at the setting; "
                       "per image encode_s / decode_s (mixinr: its group's encode split evenly)",
            "bd": f"bjontegaard package, {BD_METHOD}, over the curves' overlap; test = {reference}, "
                  "negative bd-rate / positive bd-quality = test better",
        },
        "codecs": [c.to_json() for c in curves],
        "skipped": skipped,
        "notices": notices,
        "bd": bds,
        "bd_summary": {b["anchor"]: {"bd-rate": b["bd-rate"], "bd-psnr": b["bd-quality"]}
                       for b in bds if b["metric"] == "psnr-rgb"},
        "at_bpp": at_bpp(curves, targets),
    })


CSV_FIELDS = ["codec", "setting", "image", "group", "width", "height", "bytes", "bpp", "psnr_rgb", "ms_ssim", "ssim",
              "quality", "encode_s", "decode_s"]


def results_csv(curves: list[Curve], sizes: dict[str, tuple[int, int]]) -> str:
    """Per-image rows, then one `(mean)` row per codec setting (bytes = total, bpp = total/total)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS, lineterminator="\n")
    w.writeheader()

    def fmt(v):
        return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v

    for c in curves:
        for p in c.points:
            h, wd = sizes[p.image]
            w.writerow({k: fmt(v) for k, v in {
                "codec": c.name, "setting": p.setting, "image": p.image, "group": p.group, "width": wd,
                "height": h, "bytes": p.bytes, "bpp": p.bpp, "psnr_rgb": p.psnr, "ms_ssim": p.ms_ssim,
                "ssim": p.ssim, "quality": p.quality, "encode_s": p.encode_s, "decode_s": p.decode_s}.items()})
    for c in curves:
        for i, s in enumerate(c.settings):
            at = [p for p in c.points if p.setting == s]
            if c.name == "mixinr":  # images of a group share the archive: count its bytes once
                n_bytes = sum(dict((p.group, p.bytes) for p in at).values())
            else:
                n_bytes = sum(p.bytes for p in at)
            w.writerow({k: fmt(v) for k, v in {
                "codec": c.name, "setting": s, "image": "(mean)", "group": None, "width": None, "height": None,
                "bytes": n_bytes, "bpp": c.bpp[i], "psnr_rgb": c.psnr[i], "ms_ssim": c.ms_ssim[i],
                "ssim": c.ssim[i], "encode_s": c.seconds[i], "decode_s": c.decode_seconds[i]}.items()})
    return buf.getvalue()
