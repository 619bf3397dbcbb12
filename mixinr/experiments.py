"""The seed's three experiment sweeps (Kodak, CIFAR-10, ImageNet), resumable, with the seed's outputs.

Each sweep is a list of fits. A fit is one group of images and one network (Kodak, ImageNet) or one
group and the seed's four candidate networks of which the best by fp16 ("half") PSNR is kept
(CIFAR-10). After every group the row is added to `<out>/results.json` (written atomically), so an
interrupted sweep resumes at the next unfinished group. Outputs under `out`:

    test_images/<run>/image_{i}.png, image_{i}_half.png   float-weight and fp16-archive reconstructions
    runs/<run>/model.mixinr, runs/<run>/losses.json        the fp16 archive and the loss per epoch
    table_<dataset>_<sweep>.txt                             the rich table of each sweep
    results.json                                            one row per group (all datasets run there)

The default configs are the seed's (METHOD.md); `quick_config` is a reduced profile for a 2-core CPU,
marked as not the paper's setting in every row, run name and table title.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from mixinr import data as datasets
from mixinr import jsonout
from mixinr.errors import MixinrError
from mixinr.images import atomic_write, write_png
from mixinr.metrics import bpp, bpp_per_sample, psnr
from mixinr.model import Arch, render, to_uint8
from mixinr.train import FitConfig, fit

DATASETS = ("kodak", "cifar10", "imagenet")
PAPER = "paper (the seed's setting)"
QUICK = "quick (not the paper's setting)"

CIFAR_NETS = [(3, 22), (4, 18), (5, 16), (6, 14)]  # ~1.14k parameters per set each
CIFAR_N = [2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64, 96, 128]
IMAGENET_N = [2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96]
KODAK_WIDTHS = [158, 136, 112, 96, 78, 56]
KODAK_N = [2, 3, 4, 6, 12]


@dataclass
class Sweep:
    """Networks x group sizes. `best_of` fits every net on each group and keeps the best by half
    PSNR (CIFAR-10); otherwise each net is its own run with its own rows."""

    name: str
    nets: list[tuple[int, int]]
    n_values: list[int]
    best_of: bool = False


@dataclass
class ExperimentConfig:
    """Everything that defines a reproduction run. `paper_config` gives the seed's values."""

    dataset: str
    sweeps: list[Sweep]
    epochs: int
    t0: int
    lr: float = 2e-4
    eta_min: float = 5e-6
    sets: int = 2
    seed: int = 0
    classes: list | None = None  # CIFAR-10: indices (None: 0-9); ImageNet: folder names (None: the slice)
    imagenet_class_slice: tuple[int, int] | None = datasets.IMAGENET_CLASS_SLICE
    kodak_size: tuple[int, int] = datasets.KODAK_SIZE
    imagenet_size: int = datasets.IMAGENET_SIZE
    cifar_split: str = "test"
    max_groups: int | None = None  # per (net, N): at most this many groups (None: all)
    profile: str = PAPER
    device: str = "auto"
    progress: bool | None = None
    save_images: bool = True
    # Torch intra-op threads while fitting (None: torch's default). 32x32 groups are too small for
    # threads to pay: on a shared 2-core CPU one thread was 2.3x faster than two.
    threads: int | None = None


def paper_config(dataset: str, **overrides) -> ExperimentConfig:
    """The seed's experiment for `dataset` (METHOD.md), with any field overridden."""
    if dataset == "kodak":
        cfg = ExperimentConfig(
            dataset, epochs=5000, t0=500,
            sweeps=[Sweep("width", [(8, w) for w in KODAK_WIDTHS], [6]), Sweep("groupsize", [(8, 112)], KODAK_N)],
        )  # fmt: skip
    elif dataset == "cifar10":
        cfg = ExperimentConfig(dataset, epochs=10000, t0=1000, threads=1,
                               sweeps=[Sweep("best-of-four", CIFAR_NETS, CIFAR_N, True)])
    elif dataset == "imagenet":
        cfg = ExperimentConfig(dataset, epochs=5000, t0=500, sweeps=[Sweep("groupsize", [(7, 49)], IMAGENET_N)])
    else:
        raise MixinrError(f"dataset {dataset!r}: must be one of {', '.join(DATASETS)}")
    return replace(cfg, **overrides)


def quick_config(dataset: str, **overrides) -> ExperimentConfig:
    """A reduced profile that runs in minutes on a 2-core CPU; NOT the paper's setting.

    CIFAR-10: classes 0 and 2 (airplane, bird), N in {4, 16}, the four nets, 500 epochs (T_0 = 100).
    Kodak: images at 32 x 48, 8 x {112, 56} at N = 6 and 8 x 112 at N = 3, the first group of each, 120 epochs
    (T_0 = 40).
    ImageNet: images at 64 x 64, the first 2 classes of the slice, N in {2, 4}, 7 x 49, 300 epochs (T_0 = 100).
    """
    if dataset == "kodak":
        cfg = paper_config(dataset, epochs=120, t0=40, kodak_size=(32, 48), max_groups=1,
                           sweeps=[Sweep("width", [(8, 112), (8, 56)], [6]), Sweep("groupsize", [(8, 112)], [3, 6])])
    elif dataset == "cifar10":
        cfg = paper_config(dataset, epochs=500, t0=100, classes=[0, 2],
                           sweeps=[Sweep("best-of-four", CIFAR_NETS, [4, 16], True)])
    elif dataset == "imagenet":
        cfg = paper_config(dataset, epochs=300, t0=100, imagenet_size=64, max_groups=2,
                           sweeps=[Sweep("groupsize", [(7, 49)], [2, 4])])
    else:
        raise MixinrError(f"dataset {dataset!r}: must be one of {', '.join(DATASETS)}")
    return replace(cfg, profile=QUICK, **overrides)


def restrict(cfg: ExperimentConfig, n_values=None, nets=None) -> ExperimentConfig:
    """`cfg` with its sweeps limited to the given group sizes and/or nets (sweeps left empty dropped)."""
    sweeps = []
    for s in cfg.sweeps:
        ns = [n for n in s.n_values if n_values is None or n in n_values]
        ws = [w for w in s.nets if nets is None or tuple(w) in {tuple(x) for x in nets}]
        if ns and ws:
            sweeps.append(replace(s, n_values=ns, nets=ws))
    if not sweeps:
        raise MixinrError(f"no {cfg.dataset} run matches --n {n_values} --net {nets}")
    return replace(cfg, sweeps=sweeps)


# ---------------------------------------------------------------- groups


@dataclass
class _Unit:
    """One group and the nets fitted to it: one row of results.json."""

    sweep: Sweep
    group: datasets.Group
    n: int
    nets: list[tuple[int, int]]


def _units(cfg: ExperimentConfig, data_dir: Path, skipped: list[str]) -> list[_Unit]:
    units = []
    loaders = {"kodak": _kodak_groups, "cifar10": _cifar_groups, "imagenet": _imagenet_groups}
    groups_for = loaders[cfg.dataset](cfg, data_dir, skipped)
    for sweep in cfg.sweeps:
        for n in sweep.n_values:
            groups = groups_for(n)[: cfg.max_groups]
            nets_list = [sweep.nets] if sweep.best_of else [[net] for net in sweep.nets]
            units += [_Unit(sweep, g, n, nets) for nets in nets_list for g in groups]
    return units


def _kodak_groups(cfg, data_dir, skipped):
    images = datasets.load_kodak(data_dir, cfg.kodak_size)
    return lambda n: datasets.kodak_groups(images, n)


def _cifar_groups(cfg, data_dir, skipped):
    n_max = max(n for s in cfg.sweeps for n in s.n_values)
    by_class = datasets.load_cifar10(data_dir, cfg.classes, per_class=n_max, split=cfg.cifar_split)

    def groups(n):
        out = []
        for c, g in by_class.items():
            _append_first_n(out, c, g, n, skipped)
        return out

    return groups


def _append_first_n(out: list, cls, g, n: int, skipped: list) -> None:
    """The seed's class group: the first n images of class `cls`, or a note when it has fewer."""
    if len(g.images) < n:
        skipped.append(f"class {cls}, N={n}: only {len(g.images)} images")
    else:
        out.append(datasets.Group(f"class={cls}/N={n}", g.label, g.names[:n], g.images[:n]))


def _imagenet_groups(cfg, data_dir, skipped):
    classes = cfg.classes or datasets.imagenet_classes(data_dir, cfg.imagenet_class_slice)
    n_max = max(n for s in cfg.sweeps for n in s.n_values)
    cache: dict[str, datasets.Group] = {}

    def groups(n):
        out = []
        for name in classes:
            if len(out) == cfg.max_groups:
                break  # do not read classes that will not be fitted
            if name not in cache:
                cache[name] = datasets.load_imagenet_class(data_dir, name, n_max, cfg.imagenet_size)
            _append_first_n(out, name, cache[name], n, skipped)
        return out

    return groups


def run_name(cfg: ExperimentConfig, label: str, n: int, depth: int, width: int) -> str:
    """The seed's run names; quick runs get a `_quick` suffix so they never pass for paper runs."""
    if cfg.dataset == "kodak":
        name = f"mixture_model_{n}_{cfg.epochs}_{depth}_{width}_kodak_{label}_sine"
    else:
        name = f"{cfg.dataset}_{label}_{n}_{cfg.epochs}_{depth}_{width}"
    return name + ("_quick" if cfg.profile == QUICK else "")


def _key(cfg: ExperimentConfig, unit: _Unit) -> str:
    # Everything that changes a group's result, so a rerun with other settings does not reuse it.
    nets = "+".join(f"{d}x{w}" for d, w in unit.nets)
    h, w = unit.group.size
    return (f"{cfg.dataset}|{unit.group.key}|{unit.group.label}|nets={nets}|{h}x{w}|epochs={cfg.epochs}|t0={cfg.t0}"
            f"|lr={cfg.lr}|sets={cfg.sets}|seed={cfg.seed}|{cfg.profile}")


# ---------------------------------------------------------------- fitting one group


def _fit_net(cfg: ExperimentConfig, unit: _Unit, depth: int, width: int, out: Path) -> dict:
    from mixinr.codec import Archive, pack

    g = unit.group
    name = run_name(cfg, g.label, unit.n, depth, width)  # nominal N: a Kodak group may miss images
    fit_cfg = FitConfig(epochs=cfg.epochs, t0=cfg.t0, lr=cfg.lr, eta_min=cfg.eta_min, seed=cfg.seed,
                        device=cfg.device, progress=cfg.progress, description=name)
    result = fit(g.images, Arch(depth, width, sets=cfg.sets), fit_cfg)
    model = result.model
    sizes = [im.shape[:2] for im in g.images]
    archive = pack(model, g.names, sizes, precision="fp16")
    decoded = Archive.from_bytes(archive, source=name)
    p_float, p_half = [], []
    for i, im in enumerate(g.images):
        rec = to_uint8(render(model.image_layers(i), model.arch, *im.shape[:2])).numpy()
        half = decoded.decode(i)
        p_float.append(psnr(rec, im))
        p_half.append(psnr(half, im))
        if cfg.save_images:
            write_png(out / "test_images" / name / f"image_{i}.png", rec)
            write_png(out / "test_images" / name / f"image_{i}_half.png", half)
    run_dir = out / "runs" / name
    atomic_write(run_dir / "model.mixinr", archive)
    history = {"run": name, "best_epoch": result.best_epoch, "best_loss": result.best_loss,
               "losses": [float(f"{x:.6g}") for x in result.losses]}
    atomic_write(run_dir / "losses.json", jsonout.dumps(history).encode())
    n_pixels = sum(h * w for h, w in sizes)
    return {
        "run": name, "depth": depth, "width": width,
        "psnr_float": float(np.mean(p_float)), "psnr_half": float(np.mean(p_half)),
        "bytes": len(archive), "bpp": bpp(len(archive), n_pixels),
        "bpp_per_sample": bpp_per_sample(len(archive), n_pixels),
        "best_epoch": result.best_epoch, "seconds": result.seconds, "device": result.device,
    }  # fmt: skip


def _run_unit(cfg: ExperimentConfig, unit: _Unit, out: Path) -> dict:
    start = time.perf_counter()
    candidates = [_fit_net(cfg, unit, d, w, out) for d, w in unit.nets]
    best = max(candidates, key=lambda c: c["psnr_half"])  # the seed keeps the best by half PSNR
    g = unit.group
    h, w = g.size
    row = {
        "dataset": cfg.dataset, "sweep": unit.sweep.name, "group": g.key, "group_size": unit.n,
        "n_images": len(g.images),
        "depth": best["depth"], "width": best["width"], "sets": cfg.sets, "epochs": cfg.epochs,
        "t0": cfg.t0, "psnr_float": best["psnr_float"], "psnr_half": best["psnr_half"],
        "bytes": best["bytes"], "bpp": best["bpp"],
        "bpp_per_sample": best["bpp_per_sample"],
        "bpp_per_sample_note": "the seed's convention: bits / (pixels x 3 colour samples)",
        "seconds": time.perf_counter() - start, "device": best["device"], "profile": cfg.profile,
        "run": best["run"], "image_size": [h, w], "images": g.names, "best_epoch": best["best_epoch"],
    }  # fmt: skip
    if len(candidates) > 1:
        row["candidates"] = [{k: c[k] for k in ("depth", "width", "psnr_float", "psnr_half", "bytes", "run")}
                             for c in candidates]
    return row


# ---------------------------------------------------------------- the sweep


@dataclass
class SweepReport:
    """What `run_experiment` returns: rows of this run (new and resumed) and the per-sweep summaries."""

    config: ExperimentConfig
    rows: list[dict]
    summaries: dict[str, list[dict]]
    skipped: list[str] = field(default_factory=list)
    resumed: int = 0
    results_path: Path | None = None


def load_results(path: Path) -> list[dict]:
    """The rows of an existing results.json ([] when there is none)."""
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MixinrError(f"{path}: not a results file ({e}); move it away to start afresh") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise MixinrError(f"{path}: not a results file (expected a list of rows)")
    return rows


def run_experiment(cfg: ExperimentConfig, data_dir, out, log=None) -> SweepReport:
    """Run (or resume) every sweep of `cfg` on the data in `data_dir`, writing under `out`.

    `log(message)` is called before and after each group (progress for a terminal)."""
    data_dir, out = Path(data_dir), Path(out)
    log = log or (lambda msg: None)
    skipped: list[str] = []
    units = _units(cfg, data_dir, skipped)
    if not units:
        raise MixinrError(f"{data_dir}: no {cfg.dataset} group can be formed ({'; '.join(skipped) or 'no images'})")
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_units(cfg, units, out, skipped, log)
    finally:
        torch.set_num_threads(threads)


def _run_units(cfg, units, out, skipped, log) -> SweepReport:
    results_path = out / "results.json"
    all_rows = load_results(results_path)
    done = {r.get("key"): r for r in all_rows}
    rows, resumed, seen = [], 0, set()
    per_sweep: dict[str, list[dict]] = {s.name: [] for s in cfg.sweeps}
    for i, unit in enumerate(units, 1):
        key = _key(cfg, unit)
        if key in done:
            # Kodak's 8x112 N=6 groups belong to both of its sweeps: fitted once, listed in both.
            per_sweep[unit.sweep.name].append(done[key])
            if key not in seen:
                resumed += 1
                rows.append(done[key])
                seen.add(key)
            continue
        nets = ", ".join(f"{d}x{w}" for d, w in unit.nets)
        log(f"[{i}/{len(units)}] {cfg.dataset} {unit.group.key} ({len(unit.group.images)} images) nets {nets}")
        row = {**_run_unit(cfg, unit, out), "key": key}
        all_rows.append(row)
        done[key] = row
        rows.append(row)
        seen.add(key)
        per_sweep[unit.sweep.name].append(row)
        atomic_write(results_path, jsonout.dumps(all_rows, indent=1).encode())
        log(f"    half PSNR {row['psnr_half']:.2f} dB at {row['bpp']:.3f} bpp in {row['seconds']:.1f} s")
    summaries = {s.name: summarize(per_sweep[s.name], s) for s in cfg.sweeps}
    for name, summary in summaries.items():
        atomic_write(out / f"table_{cfg.dataset}_{name}.txt", render_table(cfg, name, summary, skipped).encode())
    return SweepReport(cfg, rows, summaries, sorted(set(skipped)), resumed, results_path)


def summarize(rows: list[dict], sweep: Sweep) -> list[dict]:
    """Mean over groups per (N, net) (per N for best-of sweeps, listing the nets chosen)."""
    buckets: dict[tuple, list[dict]] = {}
    for r in rows:
        n = r["group_size"]  # nominal N (a Kodak group may miss images)
        k = (n,) if sweep.best_of else (n, r["depth"], r["width"])
        buckets.setdefault(k, []).append(r)
    out = []
    order = {tuple(net): i for i, net in enumerate(sweep.nets)}  # the sweep's own order (widest first)
    for k in sorted(buckets, key=lambda k: (order.get(k[1:], -1), k[0])):
        rs = buckets[k]
        chosen = {}
        for r in rs:
            chosen[f"{r['depth']}x{r['width']}"] = chosen.get(f"{r['depth']}x{r['width']}", 0) + 1
        out.append({
            "n": k[0], "nets": chosen, "groups": len(rs),
            "psnr_float": _mean(r["psnr_float"] for r in rs), "psnr_half": _mean(r["psnr_half"] for r in rs),
            "bytes": _mean(r["bytes"] for r in rs), "bpp": _mean(r["bpp"] for r in rs),
            "bpp_per_sample": _mean(r["bpp_per_sample"] for r in rs), "seconds": sum(r["seconds"] for r in rs),
        })  # fmt: skip
    return out


def _mean(values) -> float:
    v = list(values)
    return float(np.mean(v)) if v else math.nan


def table(cfg: ExperimentConfig, sweep: str, summary: list[dict], skipped=()):
    """The rich table of one sweep (title says the profile)."""
    from rich.table import Table

    t = Table(title=f"{cfg.dataset} {sweep}: {cfg.profile}, {cfg.epochs} epochs, T_0={cfg.t0}",
              caption="PSNR: mean over images, then groups. bpp: archive bits / (N*H*W). "
                      "bpp/sample: the seed's convention (bpp / 3)."
                      + (f" Skipped: {'; '.join(sorted(set(skipped)))}." if skipped else ""))
    for col in ("N", "net", "groups", "float dB", "half dB", "bytes", "bpp", "bpp/sample", "seconds"):
        t.add_column(col, justify="left" if col == "net" else "right")
    for s in summary:
        nets = ", ".join(f"{k}" + (f" ({v})" if len(s["nets"]) > 1 else "") for k, v in s["nets"].items())
        t.add_row(str(s["n"]), nets, str(s["groups"]), f"{s['psnr_float']:.2f}", f"{s['psnr_half']:.2f}",
                  f"{s['bytes']:.0f}", f"{s['bpp']:.3f}", f"{s['bpp_per_sample']:.3f}", f"{s['seconds']:.0f}")
    return t


def render_table(cfg, sweep, summary, skipped=()) -> str:
    """The table as plain text (what goes to table_<dataset>_<sweep>.txt)."""
    from rich.console import Console

    console = Console(record=True, width=120, file=io.StringIO())
    console.print(table(cfg, sweep, summary, skipped))
    return console.export_text()


# ---------------------------------------------------------------- Kodak with the grid representation

# The seed's headline: all 24 Kodak images, N = 6 groups of its SORTED_FREQ order, 26.5 dB at its
# "0.2 bpp", which is bits per colour sample (METHOD.md): 0.6 bits per pixel as files are counted.
SEED_KODAK_CLAIM = {"psnr": 26.5, "bpp": 0.6, "per_sample_bpp": 0.2}


def grid_kodak(data_dir, out: Path, n: int = 6, bpp: float = SEED_KODAK_CLAIM["bpp"], effort: int = 5,
               log=None, encode_config=None) -> dict:
    """The seed's Kodak groups (full size, portrait images turned), each one grid archive at `bpp` real
    bits per pixel; rows appended to out/results-grid.jsonl (a finished group is not redone), and the
    seed's claim beside the mean. Hours on a 2-core CPU for all 24 images (docs/reproduce.md).
    `encode_config`: the EncodeConfig to start from (tests pass a tiny grid)."""
    from mixinr.codec import EncodeConfig, encode  # the codec imports experiments' neighbours: here, not at the top

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results-grid.jsonl"
    done = {}
    if path.exists():
        try:
            done = {r["group"]: r for r in map(json.loads, path.read_text().splitlines()) if r}
        except (json.JSONDecodeError, KeyError, TypeError):
            raise MixinrError(f"{path}: not a grid results file; move it away to start afresh") from None
    rows = []
    for group in datasets.kodak_groups(datasets.load_kodak(data_dir), n):
        if group.key in done:
            rows.append(done[group.key])
            continue
        if log:
            log(f"{group.key}: {len(group.images)} images at {bpp} bpp with the grid representation")
        cfg = dataclasses.replace(encode_config or EncodeConfig(), bpp=bpp, representation="grid", effort=effort)
        res = encode(group.images, group.names, cfg)
        row = {"group": group.key, "names": group.names, "bpp": res.bpp, "psnr": res.psnr_mean,
               "psnrs": [im.psnr for im in res.images], "seconds": res.seconds, "effort": effort}
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
        rows.append(row)
    pixels = [len(r["psnrs"]) for r in rows]
    return {"rows": rows, "results": str(path), "seed_claim": SEED_KODAK_CLAIM,
            "mixinr": {"psnr": float(np.average([r["psnr"] for r in rows], weights=pixels)) if rows else None,
                       "bpp": float(np.average([r["bpp"] for r in rows], weights=pixels)) if rows else None,
                       "images": sum(pixels)}}
