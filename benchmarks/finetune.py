"""Fine-tuning variants on one saved fit: rate control's fit of a CIFAR-10 group at one width, then its
quantisation-aware fine-tuning (ratecontrol.finish) under each QatConfig variant, so a fine-tuning
question costs ~75 s per variant instead of a whole encode (docs/rd.md, "The 4 bpp gap").

    python benchmarks/finetune.py --class 9 --bpp 4 --width 27 --save c9w27.pkl --variants '[{}, {"lr": 1e-4}]'
    python benchmarks/finetune.py --load c9w27.pkl --variants '[{"epochs": 1200}]'

One JSON line per variant: the PSNR before fine-tuning (the finest steps within the budget) and after,
the archive's bytes and the seconds. The width rate control picks is in its trials (`EncodeResult.trials`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rd import CIFAR, budget_bytes, load_cifar_groups  # noqa: E402  (puts the package on sys.path)

from mixinr import codec, ratecontrol  # noqa: E402
from mixinr.representation import finest_under  # noqa: E402
from mixinr.settings import QatConfig  # noqa: E402


def saved_fit(data: Path, cls: int, bpp: float, width: int, group_size: int = 16, epochs: int | None = None) -> dict:
    """The encoder's fit of class `cls` at `width` (`epochs`: Adam's, None for the encoder's) and the
    finest setting within the budget."""
    group = load_cifar_groups(data, [cls], group_size)[0]
    images = [np.ascontiguousarray(im) for im in group.images]
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    cfg = codec.EncodeConfig(bpp=bpp, epochs=epochs, progress=False).resolved(pixels / len(images))
    cand = codec.REPRESENTATIONS[cfg.representation].plan(images, group.names, cfg).fit(width)
    budget = budget_bytes(bpp, pixels)
    return {"cand": cand, "setting": finest_under(cand, budget), "budget": budget, "cfg": cfg,
            "what": {"class": cls, "bpp": bpp, "width": width}}


def variant(saved: bytes, qat: dict) -> dict:
    """finish() of a fresh copy of the saved fit with the QatConfig fields `qat` changed."""
    d = pickle.loads(saved)
    # EncodeConfig turns the dict into a QatConfig (lists to tuples), as it does for --settings.
    cfg = dataclasses.replace(d["cfg"], qat={**dataclasses.asdict(d["cfg"].qat), **qat})
    d["cand"].cfg = cfg  # fine_tuned() reads the candidate's own config
    start = time.perf_counter()
    _, _, trials = ratecontrol.finish(d["cand"], d["setting"], d["budget"], cfg)
    return {**d["what"], "variant": qat, "predicted_loss_db": round(trials[0]["predicted_loss_db"], 3),
            "float_psnr": round(trials[0]["float_psnr"], 3), "before": round(trials[0]["psnr"], 3),
            "after": round(trials[-1]["psnr"], 3), "bytes": trials[-1]["bytes"],
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=CIFAR, help="a CIFAR-10 split with class folders")
    p.add_argument("--class", dest="cls", type=int, default=9)
    p.add_argument("--bpp", type=float, default=4.0)
    p.add_argument("--width", type=int, help="the fit's width (the trials of an encode say which rate control fits)")
    p.add_argument("--epochs", type=int, help="the fit's Adam epochs (default: the encoder's)")
    p.add_argument("--group-size", type=int, default=16)
    p.add_argument("--save", type=Path, help="keep the fit here for later --load")
    p.add_argument("--load", type=Path, help="a fit saved by --save instead of fitting")
    p.add_argument("--variants", default="[{}]", help=f"JSON list of {QatConfig.__name__} field changes")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    if args.load:
        saved = args.load.read_bytes()
    else:
        if args.width is None:
            p.error("--width is needed unless --load")
        saved = pickle.dumps(saved_fit(args.data, args.cls, args.bpp, args.width, args.group_size, args.epochs))
        if args.save:
            args.save.write_bytes(saved)
    for qat in json.loads(args.variants):
        print(json.dumps(variant(saved, qat)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
