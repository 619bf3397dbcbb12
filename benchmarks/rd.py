"""Rate-distortion benchmark: mean PSNR at fixed bits per pixel, from real archive / file bytes.

    python benchmarks/rd.py --json --classes 0 1                 # CIFAR-10 groups, 1 / 2 / 4 bpp
    python benchmarks/rd.py --json --classes 0 --methods mixinr-default webp webp-allocated jpegxl
    python benchmarks/rd.py --json --data ../shared/data/cifar10-val --methods webp webp-allocated
    python benchmarks/rd.py --json --kodak --epochs 1000          # Kodak 128x192 at 0.5 bpp

Methods (docs/rd.md has the measurements and the reasons):
- seed-fp16: the seed's configuration: K = 2 linear coefficients, fp16 weights, Adam lr 2e-4 with
  CosineAnnealingWarmRestarts(T_0=1000, eta_min=5e-6), 10000 epochs (`--seed-epochs`). The seed has
  fixed nets of ~1.14k parameters per set; we use its 5x16 (the net METHOD.md measured). At a budget
  it can only shrink: the widest width <= 16 at depth 5 whose fp16 archive fits. Above the budget
  5x16 needs (about 2.4 bpp for 16 CIFAR images) the seed has no wider net, so its point sits below
  the target: its real bpp is reported.
- mixinr-default: `codec.encode` with `EncodeConfig(bpp=B)`: the codec's defaults, which the study in
  docs/rd.md chose. `--settings '{"omega": 20, "coeffs": "learned"}'` adds EncodeConfig fields (the
  study's rows); the rows then carry those settings.
- webp, jpegxl, avif, ... (any name of mixinr.baselines), **fixed quality**: every image of a group
  at every quality of the codec's sweep, one quality for all; the group's mean PSNR against its total
  bytes * 8 / total pixels is interpolated at the target (mixinr.compare.bracket: linear in log bpp on
  the envelope, never extrapolated: a target outside the measured range gives no value for that group).
- webp-allocated, jpegxl-allocated, ...: **allocated**, the same sweep, but each image's quality chosen
  so that the group's mean PSNR is highest with the group's total bytes within the target's budget
  (mixinr.allocate): the freedom mixinr's archive has. Its bpp is the real one, at or under the target.

Groups: per class folder, the first `--group-size` files sorted by name (`--data` picks the split:
../shared/data/cifar10 by default, or ../shared/data/cifar10-val). Each figure is the mean over groups
of the group's mean PSNR (bpp likewise); `min` is the hardest image of all groups and `std` the mean of
each group's std over its images; `encode_s_per_image` / `decode_s_per_image` the mean seconds per image
(mixinr: the group's encode split over its images). The last JSON line describes the machine. Runs of
separate classes merge with `--from-json a.jsonl b.jsonl` (add `--json` for rows, `--plot` for a plot).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mixinr import codec  # noqa: E402
from mixinr.allocate import allocate  # noqa: E402
from mixinr.baselines import CODECS, round_trip  # noqa: E402
from mixinr.compare import OutOfRange, bracket, spread  # noqa: E402
from mixinr.images import read_image  # noqa: E402
from mixinr.metrics import psnr  # noqa: E402
from mixinr.model import Arch, MixtureSiren  # noqa: E402
from mixinr.train import FitConfig, fit  # noqa: E402

CIFAR = ROOT.parent / "shared" / "data" / "cifar10"
KODAK = ROOT.parent / "shared" / "data" / "kodak"
CIFAR_TARGETS = (1.0, 2.0, 4.0)
KODAK_TARGETS = (0.5,)
KODAK_SIZE = (128, 192)  # (height, width): quarter size
# --kodak-full: the photo benchmark of issue 20 (docs/photo.md): full-size Kodak, the six images as one
# group and the first alone, at the photo budgets, beside the classical codecs on the same images.
KODAK_FULL_TARGETS = (0.25, 0.5, 1.0)
KODAK_FULL_METHODS = ("mixinr-default", "webp", "webp-allocated", "avif", "avif-allocated", "jpegxl",
                      "jpegxl-allocated")

# The seed's configuration (METHOD.md): net, schedule.
SEED_DEPTH, SEED_WIDTH = 5, 16
SEED_LR, SEED_T0, SEED_ETA_MIN, SEED_EPOCHS = 2e-4, 1000, 5e-6, 10000
ALLOCATED = "-allocated"  # a classical codec's name + this: per-image quality under the group's bytes
CIFAR_METHODS = ("seed-fp16", "mixinr-default", "webp", "webp-allocated", "jpegxl", "jpegxl-allocated")
KODAK_METHODS = ("mixinr-default", "jpegxl", "jpegxl-allocated", "avif", "avif-allocated")


@dataclass
class Group:
    label: str
    images: list[np.ndarray]
    names: list[str]

    @property
    def pixels(self) -> int:
        return sum(im.shape[0] * im.shape[1] for im in self.images)


def load_cifar_groups(data: Path, classes, group_size: int) -> list[Group]:
    """One group per class folder: its first `group_size` PNG files sorted by name."""
    groups = []
    for c in classes:
        folder = Path(data) / str(c)
        files = sorted(folder.glob("*.png"), key=lambda p: p.name)[:group_size]
        if not files:
            raise SystemExit(f"{folder}: no PNG files")
        groups.append(Group(f"class{c}", [read_image(f) for f in files], [f.name for f in files]))
    return groups


def load_kodak_group(data: Path, size=KODAK_SIZE) -> Group:
    """All PNGs of `data`, resized to `size` (height, width) with Pillow's Lanczos (None: full size)."""
    from mixinr.data import resize

    files = sorted(Path(data).glob("*.png"), key=lambda p: p.name)
    if not files:
        raise SystemExit(f"{data}: no PNG files")
    images = [read_image(f) for f in files]
    if size is not None:
        images = [resize(im, size) for im in images]
    return Group("kodak", images, [f.name for f in files])


def kodak_full_groups(data: Path, which: str) -> list[Group]:
    """Full-size Kodak: the folder's images as one group ("group"), the first alone ("alone"), or both."""
    every = load_kodak_group(data, None)
    alone = Group(f"kodak-{every.names[0]}", every.images[:1], every.names[:1])
    every = Group(f"kodak-{len(every.images)}", every.images, every.names)
    return {"alone": [alone], "group": [every], "both": [alone, every]}[which]


def budget_bytes(bpp: float, pixels: int) -> int:
    return math.floor(bpp * pixels / 8)


def _archive_point(data: bytes, group: Group, budget: int | None) -> dict:
    """bpp, mean and per-image PSNR of an archive, decoded from its bytes (what `mixinr decode` does),
    and the seconds each image's decode took (its share of parsing the archive included)."""
    if budget is not None and len(data) > budget:
        raise RuntimeError(f"{group.label}: archive of {len(data)} bytes exceeds the budget of {budget}")
    t = time.perf_counter()
    archive = codec.archive_from_bytes(data)  # parsing (the grid's latents' range decoding) counts too
    parse_s = (time.perf_counter() - t) / len(group.images)
    info = archive.info()
    psnrs, decode_s = [], []
    for i, im in enumerate(group.images):
        t = time.perf_counter()
        decoded = archive.decode(i)
        decode_s.append(time.perf_counter() - t + parse_s)
        psnrs.append(psnr(decoded, im))
    return {"bytes": len(data), "bpp": len(data) * 8 / group.pixels, "psnr": float(np.mean(psnrs)),
            "psnrs": psnrs, "decode_s": decode_s, "label": group.label, "arch": _net_label(info),
            "sets": info["sets"], "coeffs": info.get("coeffs", "per-layer"), "precision": archive.precision,
            "decode_mpx_per_s": group.pixels / 1e6 / sum(decode_s)}


def _net_label(info: dict) -> str:
    """"5x12" for a SIREN archive, "grid 7L 16x16" for a grid archive (from `mixinr info`'s fields)."""
    if info.get("representation") == "grid":
        return f"grid {info['levels']}L {'x'.join(map(str, info['synthesis']))}"
    return f"{info['arch']['depth']}x{info['arch']['width']}"


def mixinr_point(group: Group, bpp: float, **settings) -> dict:
    """codec.encode under the budget; the PSNR is re-measured from the archive bytes."""
    t = time.perf_counter()
    res = codec.encode(group.images, group.names, codec.EncodeConfig(bpp=bpp, progress=False, **settings))
    out = _archive_point(res.data, group, budget_bytes(bpp, group.pixels))
    out["seconds"] = time.perf_counter() - t
    return out


def seed_width(group: Group, bpp: float, depth: int = SEED_DEPTH, max_width: int = SEED_WIDTH) -> int | None:
    """Widest width <= max_width whose K=2 linear fp16 archive fits the budget (archive size does not
    depend on the weights' values, so an unfitted model measures it). None when not even width 1 fits."""
    budget = budget_bytes(bpp, group.pixels)
    sizes = [im.shape[:2] for im in group.images]
    for w in range(max_width, 0, -1):
        model = MixtureSiren(Arch(depth, w, 2), len(group.images))
        if len(codec.pack(model, group.names, sizes, "fp16")) <= budget:
            return w
    return None


def seed_point(group: Group, bpp: float, epochs: int = SEED_EPOCHS) -> dict | None:
    """The seed's method at this budget (module docstring): fit with its schedule, store fp16."""
    width = seed_width(group, bpp)
    if width is None:
        return None
    t = time.perf_counter()
    cfg = FitConfig(epochs=epochs, lr=SEED_LR, t0=SEED_T0, eta_min=SEED_ETA_MIN, coeffs="linear", seed=0,
                    progress=False, threads=1)
    res = fit(group.images, Arch(SEED_DEPTH, width, 2), cfg)
    data = codec.pack(res.model, group.names, [im.shape[:2] for im in group.images], "fp16")
    out = _archive_point(data, group, budget_bytes(bpp, group.pixels))
    out["seconds"] = time.perf_counter() - t
    return out


@dataclass
class Sweep:
    """One classical codec on one group: every image at every setting of its sweep (rows: settings)."""

    group: Group
    settings: list[float]
    bytes: np.ndarray  # (settings, images) file bytes
    psnrs: np.ndarray
    encode_s: np.ndarray
    decode_s: np.ndarray

    @property
    def bpp(self) -> list[float]:
        """The group's rate at each setting: total bytes * 8 / total pixels."""
        return list(self.bytes.sum(1) * 8 / self.group.pixels)

    @property
    def psnr(self) -> list[float]:
        return list(self.psnrs.mean(1))


def classical_sweep(name: str, group: Group) -> Sweep:
    """Every image of the group at every setting of the codec's sweep: bytes, PSNR, seconds."""
    c = CODECS[name]
    c.probe()
    rows = [[round_trip(c, im, s) for im in group.images] for s in c.settings]
    psnrs = [[psnr(coded.decoded, im) for coded, im in zip(row, group.images)] for row in rows]
    return Sweep(group, list(c.settings), np.array([[x.n_bytes for x in r] for r in rows]), np.array(psnrs),
                 np.array([[x.encode_s for x in r] for r in rows]), np.array([[x.decode_s for x in r] for r in rows]))


def classical_point(sweep: Sweep, target: float) -> dict | None:
    """Fixed quality: one setting for every image, the group's mean PSNR interpolated at `target` bpp
    (None outside the measured range: no extrapolation). Each image's PSNR and seconds are interpolated
    with the same weights, which gives the point's spread."""
    try:
        i, j, w = bracket(sweep.bpp, sweep.psnr, target)
    except OutOfRange:
        return None

    def mix(a):
        return (1 - w) * a[i] + w * a[j]

    psnrs = mix(sweep.psnrs)
    return {"label": sweep.group.label, "bpp": target, "psnr": float(psnrs.mean()), "psnrs": list(psnrs),
            "encode_s": list(mix(sweep.encode_s)), "decode_s": list(mix(sweep.decode_s)),
            "settings": [sweep.settings[i], sweep.settings[j]]}


def allocated_point(sweep: Sweep, target: float) -> dict | None:
    """Allocated: each image's setting chosen so that the group's mean PSNR is highest with its total
    bytes within the budget of `target` bpp (mixinr.allocate); the real bpp may fall a little short.
    None when even the lowest setting of every image exceeds the budget."""
    n, m = len(sweep.group.images), len(sweep.settings)
    options = [[(int(sweep.bytes[s, k]), float(sweep.psnrs[s, k])) for s in range(m)] for k in range(n)]
    picks = allocate(options, budget_bytes(target, sweep.group.pixels))
    if picks is None:
        return None

    def at(a):
        return [float(a[s, k]) for k, s in enumerate(picks)]

    psnrs = at(sweep.psnrs)
    return {"label": sweep.group.label, "bpp": sum(at(sweep.bytes)) * 8 / sweep.group.pixels,
            "psnr": float(np.mean(psnrs)), "psnrs": psnrs, "encode_s": at(sweep.encode_s),
            "decode_s": at(sweep.decode_s), "qualities": [sweep.settings[s] for s in picks]}


def _per_image_seconds(p: dict, key: str) -> list[float]:
    """Per-image seconds of a point; mixinr's encode is one fit for the group, split evenly."""
    if key in p:
        return list(p[key])
    if key == "encode_s" and "seconds" in p:
        return [p["seconds"] / len(p["psnrs"])] * len(p["psnrs"])
    return []


def summarise(method: str, target: float, points: list[dict | None], n_groups: int) -> dict:
    """Mean over the groups that have a value; `groups` says how many did. With each image's PSNR
    (`psnrs`), the spread too: `min` the hardest image of all groups, `std` the mean over groups of
    the std over the group's images, and the mean encode / decode seconds per image."""
    pts = [p for p in points if p is not None]
    row = {"method": method, "bpp_target": target, "bpp": None, "psnr": None, "groups": len(pts)}
    if pts:
        row["bpp"] = round(float(np.mean([p["bpp"] for p in pts])), 4)
        row["psnr"] = round(float(np.mean([p["psnr"] for p in pts])), 3)
        row["per_group_psnr"] = [None if p is None else round(p["psnr"], 3) for p in points]
        if all("psnrs" in p for p in pts):
            spreads = [spread(p["psnrs"]) for p in pts]
            row["min"] = round(min(sp["min"] for sp in spreads), 2)
            row["std"] = round(float(np.mean([sp["std"] for sp in spreads])), 2)
            for key in ("encode_s", "decode_s"):
                secs = [v for p in pts for v in _per_image_seconds(p, key)]
                if secs:
                    row[f"{key}_per_image"] = round(float(np.mean(secs)), 5)
            row["per_group"] = [None if p is None else _group_record(p) for p in points]
    if len(pts) < n_groups:
        row["missing_groups"] = n_groups - len(pts)
    archs = sorted({p["arch"] for p in pts if "arch" in p})
    if archs:
        row["nets"] = archs
        speeds = [p["decode_mpx_per_s"] for p in pts if "decode_mpx_per_s" in p]
        if speeds:
            row["decode_mpx_per_s"] = round(float(np.mean(speeds)), 3)
        row["seconds"] = round(float(sum(p["seconds"] for p in pts)), 1)
    return row


def _group_record(p: dict) -> dict:
    """What a row keeps of one group's point: enough to recombine rows of separate runs (`combine`)."""
    rec = {k: (round(p[k], 4) if isinstance(p[k], float) else p[k])
           for k in ("label", "bpp", "psnr", "seconds", "arch", "qualities", "settings") if k in p}
    rec["psnrs"] = [round(float(v), 3) for v in p["psnrs"]]
    for key in ("encode_s", "decode_s"):
        if key in p:
            rec[key] = [round(float(v), 5) for v in p[key]]
    return rec


def combine(rows: list[dict]) -> list[dict]:
    """Rows of separate runs (e.g. one class each) merged per (method, target, settings): the groups'
    records are put together and summarised again, as one run over all of them would be (a row of one
    run too, so older rows gain the spread). Rows without records are kept as they are."""
    merged: dict[tuple, list[dict]] = {}
    for r in rows:
        merged.setdefault((r["method"], r["bpp_target"], json.dumps(r.get("settings"), sort_keys=True)), []).append(r)
    out = []
    for (method, target, settings), rs in merged.items():
        if not all("per_group" in r for r in rs):
            out.extend(rs)
            continue
        records = [g for r in rs for g in r["per_group"]]
        row = summarise(method, target, records, sum(r["groups"] + r.get("missing_groups", 0) for r in rs))
        if json.loads(settings) is not None:
            row["settings"] = json.loads(settings)
        out.append(row)
    return out


def run(groups: list[Group], targets, methods, settings=None, seed_epochs=SEED_EPOCHS, on_row=None) -> list[dict]:
    """Every method at every target over the groups; one summary row per (method, target).
    `settings`: EncodeConfig fields for the mixinr method beyond the codec's defaults. A classical
    codec's sweep is measured once per group and serves both its fixed and its allocated method."""
    rows = []
    sweeps: dict[str, list[Sweep]] = {}

    def emit(row):
        rows.append(row)
        if on_row:
            on_row(row)

    settings = settings or {}
    for m in methods:
        base = m.removesuffix(ALLOCATED)
        if base in CODECS:
            if base not in sweeps:
                sweeps[base] = [classical_sweep(base, g) for g in groups]
            point = allocated_point if m.endswith(ALLOCATED) else classical_point
            for t in targets:
                emit(summarise(m, t, [point(sw, t) for sw in sweeps[base]], len(groups)))
            continue
        for t in targets:
            if m == "seed-fp16":
                pts = [seed_point(g, t, seed_epochs) for g in groups]
            elif m == "mixinr-default":
                pts = [mixinr_point(g, t, **settings) for g in groups]
            else:
                raise SystemExit(f"unknown method {m!r}")
            row = summarise(m, t, pts, len(groups))
            if m != "seed-fp16" and settings:
                row["settings"] = settings
            emit(row)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    """PSNR against real bpp, one line per method (matplotlib, Agg), written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixinr.images import atomic_write

    fig, ax = plt.subplots(figsize=(4.2, 3.2), dpi=100)
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["bpp"], r["psnr"]) for r in rows if r["method"] == method and r["psnr"] is not None)
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, lw=1.2, ls="--" if method.endswith(ALLOCATED) else "-",
                    label=method)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per pixel (real bytes)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def machine(seconds: float) -> dict:
    """train_speed's machine description, plus this run's duration."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_speed import machine as describe

    m = describe()
    m["machine"]["seconds"] = round(seconds, 1)
    return m


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--data", type=Path, default=None,
                   help="CIFAR-10 class folders: ../shared/data/cifar10 (default, the split settings were chosen "
                        "on) or ../shared/data/cifar10-val (validation); Kodak PNGs with --kodak")
    p.add_argument("--classes", nargs="+", default=list(range(10)), help="class folders to use (default 0-9)")
    p.add_argument("--group-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=None, help="mixinr epochs (default: the codec's)")
    p.add_argument("--settings", type=json.loads, default=None,
                   help='mixinr EncodeConfig fields as JSON, e.g. \'{"omega": 20, "coeffs": "learned"}\'')
    p.add_argument("--seed-epochs", type=int, default=SEED_EPOCHS, help="epochs of the seed's schedule")
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--targets", nargs="+", type=float, default=None, help="bpp targets")
    p.add_argument("--kodak", action="store_true", help="Kodak 128x192 at 0.5 bpp instead of CIFAR-10")
    p.add_argument("--kodak-full", choices=("alone", "group", "both"), default=None,
                   help="full-size Kodak at 0.25 / 0.5 / 1 bpp: the first image alone, the folder as one group, or both")
    p.add_argument("--plot", type=Path, default=None, help="write an RD plot (PNG) of the rows")
    p.add_argument("--from-json", nargs="+", type=Path, default=None,
                   help="rows saved from earlier --json runs instead of measuring: merged per (method, "
                        "target, settings) over their groups, then printed (or plotted with --plot)")
    p.add_argument("--title", default="CIFAR-10 groups of 16: PSNR vs bpp")
    args = p.parse_args(argv)
    if args.from_json:
        rows = combine([json.loads(line) for f in args.from_json for line in f.read_text().splitlines()
                        if line.strip().startswith("{") and '"method"' in line])
        if args.plot:
            plot(rows, args.plot, args.title)
        report(rows, args.json, "merged rows")
        return 0
    start = time.perf_counter()
    if args.kodak_full:
        groups = kodak_full_groups(args.data or KODAK, args.kodak_full)
        targets, methods = args.targets or KODAK_FULL_TARGETS, args.methods or KODAK_FULL_METHODS
    elif args.kodak:
        groups = [load_kodak_group(args.data or KODAK)]
        targets, methods = args.targets or KODAK_TARGETS, args.methods or KODAK_METHODS
    else:
        groups = load_cifar_groups(args.data or CIFAR, args.classes, args.group_size)
        targets, methods = args.targets or CIFAR_TARGETS, args.methods or CIFAR_METHODS
    on_row = (lambda r: print(json.dumps(r), flush=True)) if args.json else None
    settings = dict(args.settings or {}, **({"epochs": args.epochs} if args.epochs else {}))
    unknown = set(settings) - {f.name for f in dataclasses.fields(codec.EncodeConfig)}
    if unknown:
        raise SystemExit(f"--settings: not EncodeConfig fields: {', '.join(sorted(unknown))}")
    rows = run(groups, targets, methods, settings, args.seed_epochs, on_row)
    if args.plot:
        plot(rows, args.plot, args.title)
    if args.json:
        print(json.dumps(machine(time.perf_counter() - start)), flush=True)
    else:
        report(rows, False, f"{len(groups)} group(s): {', '.join(g.label for g in groups)}")
        from rich.console import Console

        Console().print(machine(time.perf_counter() - start)["machine"])
    return 0


def report(rows: list[dict], as_json: bool, title: str) -> None:
    """The rows as JSON lines, or as a table: mean PSNR, hardest image, std, seconds per image."""
    if as_json:
        for r in rows:
            print(json.dumps(r), flush=True)
        return
    from rich.console import Console
    from rich.table import Table

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    table = Table(title=f"PSNR (dB) at target bpp, {title}")
    for col in ("method", "target bpp", "bpp", "PSNR dB", "hardest", "std", "enc s/img", "dec s/img", "groups", "nets"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["method"], f"{r['bpp_target']:g}", f(r["bpp"], ".3f"), f(r["psnr"], ".2f"), f(r.get("min"), ".2f"),
                      f(r.get("std"), ".2f"), f(r.get("encode_s_per_image"), ".4g"), f(r.get("decode_s_per_image"), ".4g"),
                      str(r["groups"]), " ".join(r.get("nets", [])))
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
