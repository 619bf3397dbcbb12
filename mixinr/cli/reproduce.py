"""`mixinr reproduce kodak|cifar10|imagenet`: the seed's experiment sweeps, resumable."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mixinr.cli import add_json_flag, emit, positive_int
from mixinr.errors import MixinrError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="rerun the paper's Kodak, CIFAR-10 or ImageNet experiments",
        description="Rerun the seed's experiment sweeps with its defaults (epochs, T_0, nets, group sizes). "
        "Rows go to OUT/results.json after every group; rerunning skips finished groups.",
    )
    p.add_argument("dataset", choices=["kodak", "cifar10", "imagenet"],
                   help="which experiment: kodak, cifar10 or imagenet")
    p.add_argument("--data", required=True, type=Path, help="dataset folder (see docs/reproduce.md for layouts)")
    p.add_argument("--out", type=Path, help="output folder (default: reproduce-<dataset>[-quick])")
    p.add_argument("--quick", action="store_true",
                   help="reduced profile for a CPU in minutes (NOT the paper's setting; marked in every output)")
    p.add_argument("--grid", action="store_true",
                   help="kodak only: the seed's 24-image experiment (groups of 6, full size) with the grid "
                        "representation at the seed's claimed rate (0.6 real bpp), its claim printed beside ours")
    p.add_argument("--effort", type=int, default=5, help="with --grid: the encoder's effort 1..9")
    p.add_argument("--download", action="store_true", help="fetch Kodak or CIFAR-10 into --data first")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where to fit: auto (default: CUDA when present, else the CPU), cpu, cuda or mps")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="torch CPU threads while fitting (default: 1 for CIFAR-10, torch's default otherwise)")
    p.add_argument("--classes", help="comma-separated classes to run (CIFAR-10 indices, ImageNet folder names)")
    p.add_argument("--n", help="comma-separated group sizes to run (a subset of the sweep's)")
    p.add_argument("--net", help="comma-separated nets DEPTHxWIDTH to run (a subset of the sweep's)")
    add_json_flag(p)
    p.set_defaults(run=run)


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise MixinrError(f"{flag} {text!r}: expected comma-separated integers") from None


def _nets(text: str) -> list[tuple[int, int]]:
    nets = []
    for item in text.split(","):
        m = re.fullmatch(r"\s*(\d+)x(\d+)\s*", item)
        if not m:
            raise MixinrError(f"--net {item!r}: expected DEPTHxWIDTH, e.g. 5x16")
        nets.append((int(m.group(1)), int(m.group(2))))
    return nets


def _grid_kodak(args, experiments) -> int:
    if args.dataset != "kodak":
        raise MixinrError("--grid is a Kodak profile: use it with `reproduce kodak`")
    out = args.out or Path("reproduce-kodak-grid")
    console = _stderr_console()
    report = experiments.grid_kodak(args.data, out, effort=args.effort, log=console.print if console else None)

    def human(r):
        seed, ours = r["seed_claim"], r["mixinr"]
        print(f"seed (its paper): {seed['psnr']} dB at {seed['bpp']} bpp ({seed['per_sample_bpp']} per colour sample)")
        print(f"mixinr grid:      {ours['psnr']:.2f} dB at {ours['bpp']:.3f} bpp on {ours['images']} images "
              f"({r['results']})")

    emit(args, report, human)
    return 0


def run(args) -> int:
    from mixinr import data, experiments

    if args.download:
        if args.dataset == "kodak":
            data.download_kodak(args.data)
        elif args.dataset == "cifar10":
            data.download_cifar10(args.data)
        else:
            raise MixinrError("--download: ImageNet cannot be downloaded freely; place class folders in --data")
    if args.grid:
        return _grid_kodak(args, experiments)
    make = experiments.quick_config if args.quick else experiments.paper_config
    cfg = make(args.dataset, device=args.device)
    if args.threads is not None:
        cfg.threads = args.threads
    if args.classes:
        classes = _ints(args.classes, "--classes") if args.dataset == "cifar10" else args.classes.split(",")
        cfg.classes = classes
    if args.n or args.net:
        cfg = experiments.restrict(cfg, _ints(args.n, "--n") if args.n else None, _nets(args.net) if args.net else None)
    out = args.out or Path(f"reproduce-{args.dataset}" + ("-quick" if args.quick else ""))
    console = _stderr_console()
    report = experiments.run_experiment(cfg, args.data, out, log=console.print if console else None)
    payload = {
        "dataset": args.dataset, "profile": cfg.profile, "out": str(out), "results": str(report.results_path),
        "resumed_groups": report.resumed, "skipped": report.skipped, "rows": report.rows,
        "summary": report.summaries,
    }  # fmt: skip

    def human(_):
        from rich.console import Console

        stdout = Console(width=None if sys.stdout.isatty() else 120)  # files get the whole table
        for name, summary in report.summaries.items():
            stdout.print(experiments.table(cfg, name, summary, report.skipped))
        stdout.print(f"{len(report.rows)} groups ({report.resumed} from an earlier run); rows in {report.results_path}")

    emit(args, payload, human)
    return 0


def _stderr_console():
    if not sys.stderr.isatty():
        return None
    from rich.console import Console

    return Console(stderr=True)
