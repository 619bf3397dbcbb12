"""`mixinr encode`, `mixinr decode`, `mixinr info`: the codec on the command line."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

from mixinr.bitstream import SCHEMES
from mixinr.cli import add_json_flag, add_threads_flag, emit, plural, times
from mixinr.errors import MixinrError
from mixinr.settings import FitSchedule, QatConfig


ENCODE_USAGE = "%(prog)s INPUT... -o OUT.mixinr (--bpp B | --psnr DB | --depth D --width W) [options]"


def register(sub) -> None:
    p = sub.add_parser("encode", help="compress images into one .mixinr archive", usage=ENCODE_USAGE,
                       description="Fit one mixture SIREN to all INPUT images and write it as an archive. Give "
                                   "a budget (--bpp), a quality target (--psnr), or a fixed network without a "
                                   "budget (--depth and --width).")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders (their images, sorted by name)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mixinr", help="the archive to write")
    add_encode_flags(p)
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    add_threads_flag(p)
    add_json_flag(p)
    p.set_defaults(run=run_encode)

    p = sub.add_parser("decode", help="decode images from an archive (or a collection manifest) to PNG",
                       usage="%(prog)s ARCHIVE (-o OUTDIR | -o FILE.png | -o - | --grid SHEET.png) [options]",
                       description="Decode the images of ARCHIVE (all, or those --index / --name select) to PNG: "
                                   "into a folder as <stem>.png, into one FILE.png, or on stdout (-o -); "
                                   "--grid also draws them on one contact sheet.")
    p.add_argument("archive", metavar="ARCHIVE", help=".mixinr archive, or a collection's manifest.json")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="a folder for <stem>.png files; a FILE.png for one image; - for one image's PNG on stdout")
    p.add_argument("--index", type=int, nargs="+", action="extend", metavar="I", help="only these images (0-based)")
    p.add_argument("--name", nargs="+", action="extend", metavar="NAME", help="only the images with these names")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", metavar="HxW", help="decode at this height x width (any resolution)")
    size.add_argument("--scale", type=float, metavar="S", help="decode at S times the original size")
    p.add_argument("--grid", metavar="SHEET.png",
                   help="write one contact sheet: each decode (beside its original with --originals), with "
                        "PSNR and the archive's bpp")
    p.add_argument("--originals", metavar="DIR",
                   help="folder of the original images (found by their stored names): shown on the --grid "
                        "sheet and measured (PSNR)")
    p.add_argument("--force", action="store_true", help="overwrite existing PNG files")
    add_threads_flag(p)
    add_json_flag(p)
    p.set_defaults(run=run_decode)

    p = sub.add_parser("info", help="describe an archive: version, network, images, bytes per section")
    p.add_argument("archive", metavar="ARCHIVE", help=".mixinr archive to describe (read only)")
    add_json_flag(p)
    p.set_defaults(run=run_info)


def add_encode_flags(p, per: str = "") -> None:
    """What `encode` and `encode-collection` share: budget or target, network, precision, schedule, seed,
    device (one definition; `per` says what a budget applies to, e.g. " per group")."""
    target = p.add_mutually_exclusive_group()
    target.add_argument("--bpp", type=float, metavar="B",
                        help=f"bits per pixel the archive must not exceed{per} (rate control)")
    target.add_argument("--psnr", type=float, metavar="DB",
                        help=f"instead of --bpp: the smallest archive{per} whose mean PSNR reaches DB dB "
                             "(bisection over the budget: several encodes, fits reused)")
    p.add_argument("--depth", type=int, metavar="D",
                   help="sine layers (default with --bpp/--psnr: by image size, 5 up to 64x64 pixels, deeper above)")
    p.add_argument("--width", type=int, metavar="W",
                   help="units per layer (with --bpp/--psnr: fixed, else chosen by rate control; with --depth "
                        "and no budget: the network, stored at fine steps)")
    add_network_flags(p)
    p.add_argument("--precision", default="auto", metavar="P",
                   help="auto (default), fp16, or q2..q16 (quantised, entropy coded)")
    add_schedule_flags(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the network's initial weights (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to fit: auto (default: CUDA when present, else the CPU), cpu or cuda")


def add_schedule_flags(p) -> None:
    """--epochs, --lbfgs-steps, --qat-epochs, their defaults quoted from the settings (FitSchedule, QatConfig)."""
    sched = FitSchedule()
    p.add_argument("--epochs", type=int, metavar="E", help=f"Adam's full-batch epochs (default {sched.epochs})")
    p.add_argument("--lbfgs-steps", type=int, metavar="S",
                   help=f"L-BFGS iterations after the epochs (default: {times(sched.lbfgs_share)} the epochs, "
                        f"{round(sched.lbfgs_share * sched.epochs)}; 0: off)")
    p.add_argument("--qat-epochs", type=int, metavar="E",
                   help="epochs of quantisation-aware fine-tuning (incremental, all stages together) after the steps "
                        f"are chosen (default {QatConfig().epochs}; 0: off)")


def encode_config(args, **extra):
    """The EncodeConfig of add_encode_flags' arguments; unset ones keep EncodeConfig's defaults."""
    from mixinr.settings import EncodeConfig

    return EncodeConfig(bpp=args.bpp, psnr=args.psnr, depth=args.depth, width=args.width, **network_settings(args),
                        precision=args.precision, epochs=args.epochs, lbfgs_steps=args.lbfgs_steps,
                        qat_epochs=args.qat_epochs, seed=args.seed, device=args.device, **extra)


def check_target(args) -> None:
    """A budget (--bpp), a target (--psnr), or a fixed network (--depth and --width): one is needed."""
    if args.bpp is None and args.psnr is None and (args.depth is None or args.width is None):
        raise MixinrError("give --bpp B or --psnr DB (or, for a fixed network without a budget, --depth and --width)")


def add_network_flags(p) -> None:
    """--sets, --coeffs, --omega, --objective, --model, --effort, --time-limit; unset ones keep EncodeConfig's
    defaults (kept out of here so that
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
    p.add_argument("--model", choices=("auto", "siren", "grid"),
                   help="representation: auto (default: the grid for images over 256x256 pixels, else the SIREN), "
                        "siren (one small network per group), grid (latent grids for photos; docs/photo.md)")
    p.add_argument("--effort", type=int, choices=range(1, 10), metavar="1..9",
                   help="the whole schedule at once, as cjxl -e: 1 fastest, 5 the default, 9 four times its fitting")
    p.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="stop fitting after this many seconds and keep the best archive found, within the budget")


# EncodeConfig field of each network flag (the others are named alike).
_FIELDS = {"sets": "sets", "coeffs": "coeffs", "omega": "omega", "objective": "objective", "model": "representation",
           "effort": "effort", "time_limit": "time_limit"}


def network_settings(args) -> dict:
    """The network flags the user gave, as EncodeConfig keyword arguments."""
    return {field: getattr(args, k) for k, field in _FIELDS.items() if getattr(args, k) is not None}


def _console():
    from rich.console import Console

    return Console()


# ---------------------------------------------------------------------------------------- encode


def run_encode(args) -> int:
    from mixinr.images import atomic_write, expand_inputs, read_image
    from mixinr.progress import note
    from mixinr.validate import check_budget, check_config, check_output_file

    # Every argument is checked before torch is imported or an image read (a bad flag answers at once).
    check_target(args)
    cfg = encode_config(args)
    check_config(cfg)
    out = Path(args.output)
    check_output_file(out, args.force)
    paths = expand_inputs(args.inputs)
    images = [read_image(p) for p in paths]
    if cfg.bpp is not None and cfg.width is not None:  # (the depth by image size, if not given, is more)
        check_budget(cfg.bpp, sum(im.shape[0] * im.shape[1] for im in images), len(images), cfg.depth or 1,
                     cfg.width, min(cfg.sets, len(images)), cfg.precision)
    # A line before torch loads: on a busy machine the import alone took half a minute (docs/codec.md).
    note(f"encoding {plural(len(images), 'image')}, {sum(im.shape[0] * im.shape[1] for im in images)} pixels")
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
        **_arch_fields(result.arch),
        "coeffs": result.coeffs,
        "precision": result.precision,
        "images": [{"name": im.name, "width": im.width, "height": im.height, "psnr": im.psnr}
                   for im in result.images],
        "probes": [{"budget": b, "bpp": r, "psnr": p} for b, r, p in result.probes],  # --psnr's encodes
        "threads": _torch_threads(),
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _arch_fields(arch) -> dict:
    """The network keys of encode's JSON: depth, width and sets of a SIREN; a grid's own description."""
    if isinstance(arch, dict):
        return {"representation": "grid", **arch}
    return {"representation": "siren", "depth": arch.depth, "width": arch.width, "sets": arch.sets}


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
    net = f"{p['depth']}x{p['width']}" if p["representation"] == "siren" else f"grid {'x'.join(map(str, p['synthesis']))}"
    title = f"{p['archive']}: {net}, K={p['sets']}, {p['coeffs']}, {p['precision']}"
    console = _console()
    console.print(images_table(title, p, "archive", f"{p['bytes']} B, {p['bpp']:.3f} bpp"))
    searched = f" ({plural(len(p['probes']), 'encode')} to reach the PSNR target)" if p["probes"] else ""
    console.print(f"{plural(len(p['images']), 'image')} in {p['seconds']:.1f} s{searched}")


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
    if args.size:
        _parse_size(args.size)
    if args.scale is not None:
        scaled_size((1, 1), args.scale)  # a bad --scale is refused before reading anything
    if args.output not in (None, "-") and Path(args.output).suffix.lower() != ".png":
        check_output_dir(Path(args.output))  # an existing file in the way, or no write permission

    def manifest_or_archive(head: bytes) -> None:
        if head.lstrip()[:1] != b"{":
            bitstream.check_start(head, str(src))

    raw = read_archive_bytes(src, manifest_or_archive)
    headers: dict[Path, tuple] = {}  # path -> (formats.ArchiveHeader, SHA-256 of its bytes): pass 1's
    kept: dict[Path, bytes] = {}  # a lone archive's bytes (a pipe cannot be read twice; one is no growth)
    if raw.lstrip()[:1] == b"{":
        from mixinr.collection import manifest_images, read_manifest

        entries = manifest_images(src, read_manifest(src, raw))
        if args.index:
            raise MixinrError("--index selects images of an archive; use --name with a manifest")
    else:
        headers[src], kept[src] = _checked(raw, str(src)), raw
        entries = [{"name": n, "archive": src, "index": i} for i, n in enumerate(headers[src][0].names)]
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

    # Pass 1: plan every output (archive, index, size, file) and check each size against the decoder's
    # caps before writing any. Every archive named is read whole and validated here (checksum, header,
    # section lengths; no decoder built, no torch), so a missing or corrupt one leaves nothing behind.
    mode = _output_mode(args, len(entries), src)
    plan, used = [], set()
    for e in entries:
        if e["archive"] not in headers:
            headers[e["archive"]] = _checked(read_archive_bytes(e["archive"]), str(e["archive"]))
        header = headers[e["archive"]][0]
        names, sizes = header.names, header.sizes
        if e["index"] >= len(names):
            raise MixinrError(f"{e['archive']}: no image {e['index']} (manifest entry {e['name']!r})")
        target = None
        if mode == "file":
            target = Path(args.output)
        elif mode == "dir":
            stem = Path(names[e["index"]]).stem
            name, k = f"{stem}.png", 1
            while name in used:  # same stem from different folders: keep both
                name, k = f"{stem}-{k}.png", k + 1
            used.add(name)
            target = Path(args.output) / name
        if target is not None and target.exists() and not args.force:
            raise MixinrError(f"{target}: already exists (use --force to overwrite)")
        size = _target_size(args, sizes[e["index"]])
        check_output_size(f"{e['archive']}: image {e['index']} ({names[e['index']]})", *size,
                          header.madds_per_pixel)
        original = _original(args.originals, names[e["index"]], sizes[e["index"]]) if args.originals else None
        plan.append((e["archive"], e["index"], size, target, original))
    grid = Path(args.grid) if args.grid else None
    if grid is not None and grid.exists() and not args.force:
        raise MixinrError(f"{grid}: already exists (use --force to overwrite)")

    # Pass 2 (torch): one archive's decoder at a time, built from the very bytes pass 1 validated, so
    # memory does not grow with the number of archives. Only what pass 1 cannot see stops it here (weights
    # or latents that fail to decode behind a valid checksum, a file replaced since): what is written stays.
    rendered = []
    for path, items in _by_archive(plan).items():
        try:
            data = kept.pop(path) if path in kept else _read_again(path, headers[path][1])
            rendered += _render_archive(path, data, items, mode, grid is not None)
            del data  # not held beside the next archive's
        except MixinrError as e:
            raise _stopped(e, sum(1 for _, d, _ in rendered if d["file"])) from None
    rendered.sort(key=lambda r: r[0])  # the report and the sheet in the order planned
    done = [d for _, d, _ in rendered]
    if grid is not None:
        from mixinr.sheet import contact_sheet

        write_png(grid, contact_sheet([entry for _, _, entry in rendered]), force=True)
    payload = {"archive": str(src), "output": args.output, "outdir": args.output if mode == "dir" else None,
               "grid": args.grid, "images": done}
    emit(args, payload, lambda p: _human_decode(p, stderr=mode == "stdout"))
    return 0


def _output_mode(args, n: int, src: Path) -> str | None:
    """Where decoded images go: "dir" (OUTDIR/<stem>.png), "file" (one FILE.png), "stdout" (-o -), or None
    (only the --grid sheet). One image for "file" and "stdout"."""
    out = args.output
    if out is None:
        if not args.grid:
            raise MixinrError("say where the images go: -o OUTDIR, -o FILE.png, -o - (stdout) or --grid SHEET.png")
        return None
    if out == "-":
        mode = "stdout"
        if args.json:
            raise MixinrError("-o - writes the PNG on stdout: --json cannot share it")
    elif Path(out).suffix.lower() == ".png" and not Path(out).is_dir():
        mode = "file"
    else:
        if Path(out).exists() and not Path(out).is_dir():
            raise MixinrError(f"{out}: exists and is not a directory")
        return "dir"
    if n != 1:
        raise MixinrError(f"-o {out} takes one image and {src} has {n} selected: choose one with --index or --name")
    return mode


def _original(folder: str, name: str, size):
    """The original of stored image `name` in `folder` (by its stored path, else its file name), checked
    against the stored size."""
    from mixinr.images import read_image

    root = Path(folder)
    if not root.is_dir():
        raise MixinrError(f"{root}: --originals needs a folder")
    for path in (root / name, root / Path(name).name):
        if path.is_file():
            img = read_image(path)
            if img.shape[:2] != tuple(size):
                raise MixinrError(f"{path}: {img.shape[0]}x{img.shape[1]} pixels, the archive's {name!r} is "
                                  f"{size[0]}x{size[1]}: not its original")
            return img
    raise MixinrError(f"{root}: no original for {name!r}")


def _checked(data: bytes, source: str) -> tuple:
    """(formats.ArchiveHeader, SHA-256 of the bytes) of an archive: names, sizes and render cost from its
    header alone, whatever its version, once its checksum and section lengths hold (no torch, nothing
    decoded); the decoder is built in decode's pass 2, from bytes the digest says are these."""
    from mixinr.formats import read_header

    return read_header(data, source), hashlib.sha256(data).digest()


def _read_again(path: Path, digest: bytes) -> bytes:
    """A manifest's archive read again for pass 2 (pass 1 keeps no archive's bytes), refused unless it
    is still the file pass 1 validated and planned with."""
    from mixinr.images import read_archive_bytes

    data = read_archive_bytes(path)
    if hashlib.sha256(data).digest() != digest:
        raise MixinrError(f"{path}: changed on disk while decoding (run decode again)")
    return data


def _by_archive(plan: list) -> dict[Path, list]:
    """The plan's outputs grouped by archive, in order of first appearance: [(position in plan, output)]."""
    groups: dict[Path, list] = {}
    for k, out in enumerate(plan):
        groups.setdefault(out[0], []).append((k, out))
    return groups


def _render_archive(path: Path, data: bytes, items: list, mode: str | None, sheet: bool) -> list:
    """Build `path`'s decoder and render its planned outputs, writing each PNG (a file, or stdout):
    [(position, report entry, sheet entry or None)]. The decoder lives only as long as this call."""
    from mixinr.codec import archive_from_bytes
    from mixinr.images import png_bytes, write_png
    from mixinr.metrics import psnr
    from mixinr.sheet import Entry

    a = archive_from_bytes(data, str(path))
    bpp = a.n_bytes * 8 / sum(h * w for h, w in a.sizes)
    out = []
    for k, (_, index, size, target, original) in items:
        img = a.decode(index, size)
        if mode == "stdout":
            sys.stdout.buffer.write(png_bytes(img))
            sys.stdout.buffer.flush()
        elif target is not None:
            write_png(target, img, force=True)
        quality = psnr(img, original) if original is not None and img.shape == original.shape else None
        done = {"index": index, "name": a.names[index], "archive": a.source,
                "file": None if target is None else str(target), "height": int(img.shape[0]),
                "width": int(img.shape[1]), "bpp": bpp, "psnr": quality}
        out.append((k, done, Entry(a.names[index], img, bpp, original, quality) if sheet else None))
    return out


def _stopped(error: MixinrError, written: int) -> MixinrError:
    """A pass-2 failure, saying what stays on disk: the PNGs written before it, each complete."""
    if not written:
        return error
    return MixinrError(f"{error} (decode stopped there; {plural(written, 'image')} already written)")


def _human_decode(p: dict, stderr: bool = False) -> None:
    from rich.console import Console

    console = Console(stderr=stderr)
    for d in p["images"]:
        where = d["file"] or ("stdout" if p["output"] == "-" else "the sheet")
        quality = "" if d["psnr"] is None else f", {d['psnr']:.2f} dB"
        console.print(f"{where}  {d['width']}x{d['height']}{quality}  (image {d['index']} of {d['archive']})",
                      markup=False, highlight=False)
    if p["grid"]:
        console.print(f"contact sheet: {p['grid']}", markup=False, highlight=False)


# ---------------------------------------------------------------------------------------- info


def run_info(args) -> int:
    from mixinr.formats import read_header
    from mixinr.images import read_archive_bytes

    # The header alone, whatever the version: no torch, no weights or latents decoded (the reader still
    # checks the whole file: checksum, section lengths).
    info = read_header(read_archive_bytes(args.archive), str(args.archive)).info()
    emit(args, {"archive": str(args.archive), **info}, _human_info)
    return 0


def _human_info(p: dict) -> None:
    from rich.table import Table

    console = _console()
    console.print(f"[bold]{p['archive']}[/bold]: mixinr format version {p['version']}, {p['bytes']} bytes")
    console.print(f"{p['network']}, N={p['images_count']} images, precision {p['precision']}", markup=False)
    console.print("sections: " + ", ".join(f"{k} {v} B" for k, v in p["sections"].items()))
    t = Table()
    t.add_column("#", justify="right")
    t.add_column("name")
    t.add_column("size (WxH)", justify="right")
    for im in p["images"]:
        t.add_row(str(im["index"]), im["name"], f"{im['width']}x{im['height']}")
    console.print(t)
