"""`mixinr encode`, `mixinr decode`, `mixinr info`: the codec on the command line."""

from __future__ import annotations

import re
from pathlib import Path

from mixinr.bitstream import SCHEMES
from mixinr.cli import add_json_flag, emit
from mixinr.errors import MixinrError


def register(sub) -> None:
    p = sub.add_parser("encode", help="compress images into one .mixinr archive",
                       description="Fit one mixture SIREN to all INPUT images and write it as an archive.")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders (their images, sorted by name)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mixinr")
    p.add_argument("--bpp", type=float, help="bits per pixel the archive must not exceed (rate control)")
    p.add_argument("--depth", type=int,
                   help="sine layers (default with --bpp: by image size, 5 up to 64x64 pixels, deeper above)")
    p.add_argument("--width", type=int, help="units per layer (with --bpp: fixed, else chosen by rate control)")
    add_network_flags(p)
    p.add_argument("--precision", default="auto", metavar="P",
                   help="auto (default), fp16, or q2..q16 (quantised, entropy coded)")
    p.add_argument("--epochs", type=int, help="Adam's full-batch epochs (default 3000)")
    p.add_argument("--lbfgs-steps", type=int, metavar="S",
                   help="L-BFGS iterations after the epochs (default: four times the epochs, 12000; 0: off)")
    p.add_argument("--qat-epochs", type=int, metavar="E",
                   help="epochs of quantisation-aware fine-tuning (incremental, all stages together) after the steps "
                        "are chosen (default 600; 0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    add_json_flag(p)
    p.set_defaults(run=run_encode)

    p = sub.add_parser("decode", help="decode images from an archive (or a collection manifest) to PNG")
    p.add_argument("archive", metavar="ARCHIVE", help=".mixinr archive, or a collection's manifest.json")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    p.add_argument("--index", type=int, nargs="+", action="extend", metavar="I", help="only these images (0-based)")
    p.add_argument("--name", nargs="+", action="extend", metavar="NAME", help="only the images with these names")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", metavar="HxW", help="decode at this height x width (any resolution)")
    size.add_argument("--scale", type=float, metavar="S", help="decode at S times the original size")
    p.add_argument("--force", action="store_true", help="overwrite existing PNG files")
    add_json_flag(p)
    p.set_defaults(run=run_decode)

    p = sub.add_parser("info", help="describe an archive: version, network, images, bytes per section")
    p.add_argument("archive", metavar="ARCHIVE")
    add_json_flag(p)
    p.set_defaults(run=run_info)


def add_network_flags(p) -> None:
    """--sets, --coeffs, --omega, --objective; unset ones keep EncodeConfig's defaults (kept out of here so that
    the command starts without importing torch)."""
    p.add_argument("--sets", type=int, metavar="K", help="weight sets mixed per image (default: EncodeConfig's, 3)")
    p.add_argument("--coeffs", choices=("auto",) + SCHEMES,
                   help="mixing coefficients: auto (default: per-layer unless the budget is small, then learned), "
                        "per-layer, learned, linear")
    p.add_argument("--omega", type=float, help="SIREN frequency of every sine layer (default: 15)")
    p.add_argument("--objective", choices=("mse", "psnr"),
                   help="what fitting minimises: psnr (default: the images' mean PSNR, spending bits where dB "
                        "come cheap, so quality varies more between images) or mse (every pixel alike: "
                        "more even quality, the seed's loss); see docs/rd.md")


def network_settings(args) -> dict:
    """The network flags the user gave, as EncodeConfig keyword arguments."""
    return {k: getattr(args, k) for k in ("sets", "coeffs", "omega", "objective") if getattr(args, k) is not None}


def _console():
    from rich.console import Console

    return Console()


# ---------------------------------------------------------------------------------------- encode


def run_encode(args) -> int:
    from mixinr.images import atomic_write, expand_inputs, read_image
    from mixinr.settings import EncodeConfig
    from mixinr.validate import check_budget, check_config, check_output_file

    # Every argument is checked before torch is imported or an image read (a bad flag answers at once).
    cfg = EncodeConfig(bpp=args.bpp, depth=args.depth, width=args.width, **network_settings(args),
                       precision=args.precision, epochs=args.epochs, lbfgs_steps=args.lbfgs_steps,
                       qat_epochs=args.qat_epochs, seed=args.seed, device=args.device)
    check_config(cfg)
    out = Path(args.output)
    check_output_file(out, args.force)
    paths = expand_inputs(args.inputs)
    images = [read_image(p) for p in paths]
    if cfg.bpp is not None and cfg.width is not None:  # (the depth by image size, if not given, is more)
        check_budget(cfg.bpp, sum(im.shape[0] * im.shape[1] for im in images), len(images), cfg.depth or 1,
                     cfg.width, min(cfg.sets, len(images)), cfg.precision)
    from mixinr.codec import encode

    result = encode(images, [p.name for p in paths], cfg)
    atomic_write(out, result.data, force=args.force)
    payload = {"archive": str(out), **encode_summary(result)}
    emit(args, payload, _human_encode)
    return 0


def encode_summary(result) -> dict:
    """What `encode` (and `demo`) report of an EncodeResult: the JSON contract's archive and image keys."""
    return {
        "bytes": len(result.data),
        "bpp": result.bpp,
        "psnr_mean": result.psnr_mean,
        "seconds": result.seconds,
        "depth": result.arch.depth,
        "width": result.arch.width,
        "sets": result.arch.sets,
        "coeffs": result.coeffs,
        "precision": result.precision,
        "images": [{"name": im.name, "width": im.width, "height": im.height, "psnr": im.psnr}
                   for im in result.images],
    }


def images_table(title: str, p: dict, archive_label: str, archive_rate: str):
    """A rich table of per-image sizes and PSNR, with the archive's line under it."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column("image")
    t.add_column("size", justify="right")
    t.add_column("PSNR dB", justify="right")
    for im in p["images"]:
        t.add_row(im["name"], f"{im['width']}x{im['height']}", f"{im['psnr']:.2f}")
    t.add_section()
    t.add_row(archive_label, archive_rate, f"{p['psnr_mean']:.2f}")
    return t


def _human_encode(p: dict) -> None:
    title = f"{p['archive']}: {p['depth']}x{p['width']}, K={p['sets']}, {p['coeffs']}, {p['precision']}"
    console = _console()
    console.print(images_table(title, p, "archive", f"{p['bytes']} B, {p['bpp']:.3f} bpp"))
    console.print(f"{len(p['images'])} images in {p['seconds']:.1f} s")


# ---------------------------------------------------------------------------------------- decode


def _parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise MixinrError(f"--size {text!r}: expected HxW, e.g. 64x96")
    h, w = int(m.group(1)), int(m.group(2))
    if h < 1 or w < 1:
        raise MixinrError(f"--size {text!r}: height and width must be at least 1")
    return h, w


def _target_size(args, original: tuple[int, int]) -> tuple[int, int]:
    from mixinr.validate import scaled_size

    if args.size:
        return _parse_size(args.size)
    if args.scale is not None:
        return scaled_size(original, args.scale)
    return original


def run_decode(args) -> int:
    from mixinr import bitstream
    from mixinr.images import read_archive_bytes, write_png
    from mixinr.validate import check_output_dir, check_output_size, scaled_size

    src = Path(args.archive)
    outdir = Path(args.output)
    if args.size:
        _parse_size(args.size)
    if args.scale is not None:
        scaled_size((1, 1), args.scale)  # a bad --scale is refused before reading anything
    check_output_dir(outdir)

    def manifest_or_archive(head: bytes) -> None:
        if head.lstrip()[:1] != b"{":
            bitstream.check_start(head, str(src))

    raw = read_archive_bytes(src, manifest_or_archive)
    headers: dict[Path, tuple] = {}  # path -> (names, sizes, multiply-adds per pixel, bytes, decoder or None)
    if raw.lstrip()[:1] == b"{":
        from mixinr.collection import manifest_images, read_manifest

        entries = manifest_images(src, read_manifest(src, raw))
        if args.index:
            raise MixinrError("--index selects images of an archive; use --name with a manifest")
    else:
        headers[src] = _header(raw, str(src))
        entries = [{"name": n, "archive": src, "index": i} for i, n in enumerate(headers[src][0])]
        if args.index:
            for i in args.index:
                if not 0 <= i < len(entries):
                    raise MixinrError(f"{src}: no image {i} (the archive holds {len(entries)}, indices 0-{len(entries) - 1})")
            entries = [entries[i] for i in dict.fromkeys(args.index)]
    del raw
    if args.name:
        by_name = {}
        for e in entries:
            by_name.setdefault(e["name"], e)
            by_name.setdefault(Path(e["name"]).stem, e)
        missing = [n for n in args.name if n not in by_name]
        if missing:
            raise MixinrError(f"{src}: no image named {missing[0]!r}")
        entries = list({id(by_name[n]): by_name[n] for n in args.name}.values())

    # Plan every output (archive, index, size, file) and check each size against the decoder's caps
    # before writing any, so errors leave nothing behind.
    plan, used = [], set()
    for e in entries:
        if e["archive"] not in headers:
            headers[e["archive"]] = _header(read_archive_bytes(e["archive"]), str(e["archive"]))
        names, sizes, madds, _, _ = headers[e["archive"]]
        if e["index"] >= len(names):
            raise MixinrError(f"{e['archive']}: no image {e['index']} (manifest entry {e['name']!r})")
        stem = Path(names[e["index"]]).stem
        name, k = f"{stem}.png", 1
        while name in used:  # same stem from different folders: keep both
            name, k = f"{stem}-{k}.png", k + 1
        used.add(name)
        target = outdir / name
        if target.exists() and not args.force:
            raise MixinrError(f"{target}: already exists (use --force to overwrite)")
        size = _target_size(args, sizes[e["index"]])
        check_output_size(f"{e['archive']}: image {e['index']} ({names[e['index']]})", *size, madds)
        plan.append((e["archive"], e["index"], size, target))

    from mixinr.codec import archive_from_bytes

    archives: dict = {}  # Path -> its decoder
    done = []
    for path, index, size, target in plan:
        if path not in archives:
            _, _, _, data, decoder = headers.pop(path)
            archives[path] = decoder or archive_from_bytes(data, str(path))
        a = archives[path]
        img = a.decode(index, size)
        write_png(target, img, force=True)
        done.append({"index": index, "name": a.names[index], "archive": a.source, "file": str(target),
                     "height": int(img.shape[0]), "width": int(img.shape[1])})
    emit(args, {"archive": str(src), "outdir": str(outdir), "images": done}, _human_decode)
    return 0


def _header(data: bytes, source: str) -> tuple:
    """(names, sizes, multiply-adds per pixel, the bytes, decoder or None) of an archive: version 1 from its
    header alone (bitstream, no torch, nothing decoded yet); other versions through their decoder."""
    from mixinr import bitstream

    if bitstream.format_version(data, source) == bitstream.VERSION:
        h = bitstream.read(data, source).header
        return h.names, h.sizes, h.madds_per_pixel(), data, None
    from mixinr.codec import archive_from_bytes

    decoder = archive_from_bytes(data, source)
    return decoder.names, decoder.sizes, decoder.madds_per_pixel, None, decoder


def _human_decode(p: dict) -> None:
    console = _console()
    for d in p["images"]:
        console.print(f"{d['file']}  {d['width']}x{d['height']}  (image {d['index']} of {d['archive']})")


# ---------------------------------------------------------------------------------------- info


def run_info(args) -> int:
    from mixinr import bitstream
    from mixinr.images import read_archive_bytes

    # Version 1: the header alone, no torch, no weights decoded (bitstream.read still checks the whole
    # file); another version: its decoder's info.
    data, source = read_archive_bytes(args.archive), str(args.archive)
    if bitstream.format_version(data, source) == bitstream.VERSION:
        parsed = bitstream.read(data, source)
        info = bitstream.describe(parsed.header, parsed.sections, len(data))
    else:
        from mixinr.codec import archive_from_bytes

        info = archive_from_bytes(data, source).info()
    emit(args, {"archive": str(args.archive), **info}, _human_info)
    return 0


def _human_info(p: dict) -> None:
    from rich.table import Table

    a = p["arch"]
    console = _console()
    console.print(f"[bold]{p['archive']}[/bold]: mixinr format version {p['version']}, {p['bytes']} bytes")
    console.print(f"network {a['depth']}x{a['width']} (omega first {a['omega_first']:g}, hidden {a['omega']:g}), "
                  f"K={p['sets']} sets of {p['params_per_set']} parameters, N={p['images_count']} images")
    console.print(f"coefficients {p['coeffs']}, precision {p['precision']}")
    console.print("sections: " + ", ".join(f"{k} {v} B" for k, v in p["sections"].items()))
    t = Table()
    t.add_column("#", justify="right")
    t.add_column("name")
    t.add_column("size (WxH)", justify="right")
    for im in p["images"]:
        t.add_row(str(im["index"]), im["name"], f"{im['width']}x{im['height']}")
    console.print(t)
