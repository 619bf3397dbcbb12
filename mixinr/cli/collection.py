"""`mixinr encode-collection`: a folder of images -> one archive per group + manifest.json."""

from __future__ import annotations

import sys

from mixinr.cli import add_json_flag, emit
from mixinr.cli.codec import add_network_flags, network_settings
from mixinr.collection import EXECUTORS, GROUPINGS, MANIFEST, CollectionConfig, encode_collection


DESCRIPTION = ("Split INPUT_DIR (recursively) into groups of at most --group-size images, encode each "
               f"group into OUT_DIR/group-NNNN.mixinr and write OUT_DIR/{MANIFEST}. Rerunning resumes: "
               "valid archives are kept, missing or broken ones are encoded. See docs/scaling.md.")


def register(subparsers) -> None:
    p = subparsers.add_parser("encode-collection", description=DESCRIPTION,
                              help="compress a folder of images as independent groups (locally or on Ray)")
    p.add_argument("input_dir", metavar="INPUT_DIR", help="folder of images (subfolders included)")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder for archives and manifest")
    p.add_argument("--group-size", type=int, required=True, metavar="N", help="images per group (at most)")
    p.add_argument("--grouping", choices=GROUPINGS, default="folder",
                   help="folder: consecutive sorted names within each folder (default); "
                        "stride: group i of G takes sorted images[i::G], across folders; "
                        "detail: the same striding over images sorted smooth to detailed (the seed's)")
    enc = p.add_argument_group("encoding (per group, see `mixinr encode`)")
    enc.add_argument("--bpp", type=float, help="cap on archive bits per pixel")
    enc.add_argument("--depth", type=int, help="sine layers (instead of --bpp)")
    enc.add_argument("--width", type=int, help="units per layer (instead of --bpp)")
    add_network_flags(enc)
    enc.add_argument("--precision", default="auto", help="fp16, q<bits> or auto (default)")
    enc.add_argument("--epochs", type=int,
                     help="Adam epochs of each fit, then twice as many L-BFGS steps (default: the codec's 3000)")
    enc.add_argument("--seed", type=int, default=0)
    enc.add_argument("--device", default="auto", help="auto, cpu or cuda (inside each task)")
    run = p.add_argument_group("execution")
    run.add_argument("--executor", choices=EXECUTORS, default="local",
                     help="local: this machine (default); ray: one Ray task per group")
    run.add_argument("--workers", type=int, default=1,
                     help="local: groups encoded at once, each in its own process (default 1: in-process)")
    run.add_argument("--threads", type=int, default=1,
                     help="torch threads per group, and Ray CPUs per task (default 1; results are "
                          "reproducible for a given value)")
    run.add_argument("--ray-address", metavar="ADDR",
                     help="Ray cluster to join (e.g. auto, ray://head:10001); default: a local Ray for the run")
    run.add_argument("--gpus-per-group", type=float, default=0.0, metavar="G",
                     help="Ray: GPUs per task (0.5 puts two groups on one GPU)")
    run.add_argument("--retries", type=int, default=2, help="extra attempts for a failing group (default 2)")
    add_json_flag(p)
    p.set_defaults(run=run_encode_collection)


def run_encode_collection(args) -> int:
    from mixinr.settings import EncodeConfig

    encode = EncodeConfig(
        bpp=args.bpp, depth=args.depth, width=args.width, **network_settings(args),
        precision=args.precision, epochs=args.epochs, seed=args.seed, device=args.device, progress=False,
    )
    cfg = CollectionConfig(
        group_size=args.group_size, grouping=args.grouping, encode=encode, executor=args.executor,
        workers=args.workers, ray_address=args.ray_address, gpus_per_group=args.gpus_per_group,
        threads=args.threads, retries=args.retries,
    )
    result = encode_collection(args.input_dir, args.output, cfg)
    payload = result.summary()
    payload["executor"] = args.executor
    payload["failures"] = [
        {"archive": g["archive"], "error": g["error"]} for g in result.manifest["groups"] if g["status"] == "failed"
    ]
    emit(args, payload, _human)
    if result.failed:
        print(f"mixinr: error: {result.failed} of {result.groups} groups failed (see {result.manifest_path}); "
              "rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


def _human(s: dict) -> None:
    quality = (f"{s['bpp']:.4f} bpp, {s['psnr_mean']:.2f} dB mean PSNR"
               if s["bpp"] is not None else "nothing encoded")
    rate = f", {s['groups_per_minute']:.2f} groups/min" if s["groups_per_minute"] else ""
    print(f"{s['groups']} groups of {s['images']} images -> {s['manifest']}")
    print(f"  encoded {s['encoded']}, kept {s['reused']} from an earlier run, failed {s['failed']}"
          f" ({s['seconds']:.1f} s{rate}, {s['executor']})")
    print(f"  {quality}")
    for f in s["failures"]:
        print(f"  {f['archive']}: {f['error']}")
