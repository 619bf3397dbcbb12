"""`mixinr compare`: mixinr against classical codecs on the user's images, from real bytes.

Writes OUT/results.json (CompressAI-like curves, per-image points, BD figures), OUT/results.csv
and an RD plot (PNG + SVG). docs/compare.md says what is measured and how.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mixinr import jsonout
from mixinr.cli import add_json_flag, add_threads_flag, emit, times
from mixinr.errors import MixinrError
from mixinr.settings import FitSchedule

ALL_CODECS = ("mixinr", "jpeg", "webp", "avif", "heic", "jpegxl", "jpeg2000")
DEFAULT_BPPS = (0.5, 1.0, 2.0, 4.0)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="rate-distortion comparison of mixinr with JPEG, WebP, AVIF, HEIC, JPEG XL, JPEG 2000",
        description=(
            "Code INPUT images with mixinr (one archive per group, at each --bpp budget) and with "
            "classical codecs (a sweep of quality settings each), measure PSNR / MS-SSIM against "
            "real file sizes, and write OUT/results.json, OUT/results.csv and an RD plot. "
            "Codecs whose library is missing are skipped with a notice. See docs/compare.md."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("--bpp", type=float, nargs="+", default=list(DEFAULT_BPPS), metavar="B",
                   help=f"mixinr bpp budgets, one RD point each (default {' '.join(map(str, DEFAULT_BPPS))})")
    p.add_argument("--codecs", default=",".join(ALL_CODECS),
                   help=f"comma-separated subset of {','.join(ALL_CODECS)} (default: all)")
    p.add_argument("--out", "-o", default="compare-out", metavar="DIR", help="output folder (default compare-out)")
    p.add_argument("--plot", metavar="PNG", help="RD plot path (default OUT/rd.png); an SVG is written beside it")
    p.add_argument("--epochs", type=int,
                   help=f"mixinr: Adam epochs of each fit, then {times(FitSchedule().lbfgs_share)} as many L-BFGS "
                        f"steps (default: the codec's {FitSchedule().epochs})")
    p.add_argument("--group-size", type=int, metavar="N",
                   help="mixinr: split the sorted images into groups of at most N (default: no limit)")
    p.add_argument("--group-by", choices=("all", "folder"), default="all",
                   help="mixinr: all: the images form one group (default); folder: one group per folder "
                        "(e.g. a CIFAR-10 tree with one folder per class)")
    p.add_argument("--seed", type=int, default=0, help="mixinr seed (default 0)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where mixinr fits: auto (default: CUDA when present), cpu or cuda")
    add_threads_flag(p)
    add_json_flag(p)
    p.set_defaults(run=run_compare)


def _parse_codecs(text: str) -> list[str]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise MixinrError("--codecs: no codec named")
    for n in names:
        if n not in ALL_CODECS:
            raise MixinrError(f"--codecs: unknown codec {n!r} (known: {','.join(ALL_CODECS)})")
    return list(dict.fromkeys(names))


def _load(inputs):
    """Image paths sorted by (folder, name), their folders, and the decoded images. A folder given
    as INPUT is searched recursively, so a tree of class folders works; each image's folder is
    kept for --group-by folder."""
    from mixinr.images import IMAGE_SUFFIXES, expand_inputs, read_image

    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = [p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            if not found:
                raise MixinrError(f"{item}: folder holds no images (subfolders included)")
            paths.extend(found)
        else:
            paths.extend(expand_inputs([item]))  # its one-line errors for a missing file
    paths = sorted(dict.fromkeys(paths), key=lambda p: (str(p.parent), p.name))
    return unique_names(paths), [str(p.parent) for p in paths], [read_image(p) for p in paths]


def unique_names(paths) -> list[str]:
    """One plain file name per path (mixinr stores names in its archives, so never a '/'). A name that
    two folders share becomes the path below their common folder with '/' as '__' (as encode-collection
    stores names), and a name that still repeats gets -1, -2, ... before its suffix."""
    import os

    from mixinr.bitstream import check_name
    from mixinr.collection import stored_name

    paths = [Path(p) for p in paths]
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.name] = counts.get(p.name, 0) + 1
    root = Path(os.path.commonpath([str(p.resolve().parent) for p in paths])) if paths else Path(".")
    names, used = [], set()
    for p in paths:
        name = p.name if counts[p.name] == 1 else stored_name(p.resolve().relative_to(root).as_posix())
        if check_name(name):
            name = p.name
        base, k = name, 1
        while name in used:
            name, k = f"{Path(base).stem}-{k}{Path(base).suffix}", k + 1
        used.add(name)
        names.append(name)
    return names


def run_compare(args) -> int:
    from rich.console import Console

    from mixinr import baselines
    from mixinr.compare import ALLOCATED, allocated_curve, groups_of, measure_codec, measure_mixinr, results, results_csv
    from mixinr.images import atomic_write
    from mixinr.plot import plot_rd

    codec_names = _parse_codecs(args.codecs)
    from mixinr.validate import check_output_dir, check_positive

    for b in args.bpp:
        check_positive("--bpp", b)
    if args.group_size is not None and args.group_size < 1:
        raise MixinrError(f"--group-size must be at least 1, got {args.group_size}")
    if args.epochs is not None and args.epochs < 1:
        raise MixinrError(f"--epochs must be at least 1, got {args.epochs}")
    out = Path(args.out)
    check_output_dir(out)
    plot_path = Path(args.plot) if args.plot else out / "rd.png"
    names, folders, images = _load(args.inputs)
    groups = groups_of(len(images), args.group_size, folders if args.group_by == "folder" else None)

    console = Console(stderr=True)
    live = console.is_terminal and not args.quiet

    def notice(line: str) -> None:
        if not args.quiet:
            print(f"mixinr: notice: {line}", file=sys.stderr)

    classical, skipped = baselines.available([n for n in codec_names if n != "mixinr"])
    curves, notices = [], []
    for line in skipped:
        notice(line)

    if "mixinr" in codec_names:
        try:
            import mixinr.codec  # noqa: F401
        except ImportError as e:
            skipped.append(f"mixinr: skipped, codec not importable ({e})")
            notice(skipped[-1])
        else:
            def status(budget, g, n):
                if live:
                    console.print(f"mixinr: {budget:g} bpp, group {g + 1}/{n}")

            curve, extra = measure_mixinr(images, names, args.bpp, groups=groups,
                                          epochs=args.epochs, seed=args.seed, device=args.device, on_group=status)
            for line in extra:
                notice(line)
            notices += extra
            if curve.settings:
                curves.append(curve)
            else:
                skipped.append("mixinr: skipped, no bpp budget could be encoded")
                notice(skipped[-1])

    if classical:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, disable=not live, transient=True) as bar:
            for codec in classical:
                task = bar.add_task(codec.name, total=len(codec.settings) * len(images))
                try:
                    curves.append(measure_codec(codec, images, names,
                                                             on_step=lambda: bar.advance(task)))
                except Exception as e:  # noqa: BLE001 - one failing library must not stop the rest
                    line = f"{codec.name}: skipped, failed during the sweep ({type(e).__name__}: {e})"
                    skipped.append(line)
                    notice(line)

    if not curves:
        raise MixinrError("no codec could run (see the notices above)")
    # each classical codec also given mixinr's freedom: per-image quality within each group's bytes
    group_names = [[names[i] for i in g] for g in groups]
    fixed = [c for c in curves if c.name != "mixinr"]
    curves += [allocated_curve(c, group_names) for c in fixed]
    if all(p.ms_ssim is not None for c in fixed for p in c.points):
        curves += [allocated_curve(c, group_names, "ms-ssim") for c in fixed]
    order = {n: i for i, n in enumerate(codec_names)}
    curves.sort(key=lambda c: (order.get(c.name.split(ALLOCATED)[0], len(order)), c.name))
    images_meta = [{"name": n, "width": im.shape[1], "height": im.shape[0]} for n, im in zip(names, images)]
    config = {"codecs": codec_names, "bpp": args.bpp, "epochs": args.epochs, "group_size": args.group_size,
              "group_by": args.group_by, "groups": [[names[i] for i in g] for g in groups],
              "seed": args.seed, "settings": {c.name: c.settings for c in classical}}
    res = results(curves, images_meta, skipped, notices, config)
    atomic_write(out / "results.json", (jsonout.dumps(res, indent=1) + "\n").encode())
    sizes = {n: im.shape[:2] for n, im in zip(names, images)}
    atomic_write(out / "results.csv", results_csv(curves, sizes).encode())
    png, svg = plot_rd(res, plot_path)

    payload = {"json": str(out / "results.json"), "csv": str(out / "results.csv"), "plot": [str(png), str(svg)],
               **res}
    emit(args, payload, lambda p: _human(p, console))
    return 0


def _human(p: dict, console) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    for c in p["codecs"]:
        if c["name"] != "mixinr":
            continue
        t = Table(title="mixinr (mean over images; bpp = archive bits / pixels)")
        for col in ("budget", "bpp", "PSNR dB", "MS-SSIM", "SSIM", "seconds"):
            t.add_column(col, justify="right")
        r = c["results"]
        for row in zip(c["settings"], r["bpp"], r["psnr-rgb"], r["ms-ssim"], r["ssim"], r["seconds"]):
            t.add_row(*("-" if v is None else f"{v:.4g}" for v in row))
        out.print(t)
    t = Table(title="classical codecs: measured range (mean points)")
    for col in ("codec", "points", "bpp", "PSNR dB"):
        t.add_column(col)
    for c in p["codecs"]:
        r = c["results"]
        if c["name"] != "mixinr" and r["bpp"]:
            t.add_row(c["name"], str(len(r["bpp"])), f"{min(r['bpp']):.3f} - {max(r['bpp']):.3f}",
                      f"{min(r['psnr-rgb']):.2f} - {max(r['psnr-rgb']):.2f}")
    out.print(t)
    if p["bd"]:
        t = Table(title="mixinr against each codec (negative BD-rate / positive BD-PSNR: mixinr better)")
        for col in ("codec", "metric", "BD-rate %", "BD-PSNR dB / BD-MS-SSIM", "notes"):
            t.add_column(col)
        for b in p["bd"]:
            t.add_row(b["anchor"], b["metric"], "-" if b["bd-rate"] is None else f"{b['bd-rate']:+.1f}",
                      "-" if b["bd-quality"] is None else f"{b['bd-quality']:+.3g}", "; ".join(b["notes"]))
        out.print(t)
    if p["at_bpp"]:
        names = [c["name"] for c in p["codecs"]]
        t = Table(title="PSNR at mixinr's rates (interpolated, '-' = outside the codec's measured range)")
        t.add_column("bpp")
        for n in names:
            t.add_column(n, justify="right")
        for row in p["at_bpp"]:
            t.add_row(f"{row['bpp']:.3f}", *("-" if row["psnr-rgb"][n] is None else f"{row['psnr-rgb'][n]:.2f}"
                                             for n in names))
        out.print(t)
    for line in p["skipped"]:
        out.print(f"skipped: {line}")
    out.print(f"wrote {p['json']}, {p['csv']}, {p['plot'][0]}, {p['plot'][1]}")
