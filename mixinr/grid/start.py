"""The learned start: weights a fit of the default shape can begin from, instead of random ones.

At 1200 steps a fit's end depends mostly on where its synthesis and context MLP start: five random
starts gave a spread of 1.0-1.3 dB on one image, three noise paths from one start 0.1-0.3 dB. The
weights of a finished fit are a start that carries to other photos: +1.0 dB on kodim15 and +1.3 dB on
kodim03 (each started from the other's fit) over the mean of random starts (docs/photo.md, "Seeds, and
a learned start"). start.npz is the best of six such starts on the tuning images (kodim03 at 384x256
fitted three times in a row, `benchmarks/grid_start.py --generations 3`: docs/photo.md, "Generations
of the start"). Every weight set of the mixture starts there, apart by a seeded 1% jitter so the sets
of a group can part. On by default (`GridConfig.start`) since rate control ends every fit under its
budget (docs/photo.md, "Ending under the budget")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

PATH = Path(__file__).with_name("start.npz")
JITTER = 0.01  # of a layer's mean |weight|: breaks the sets' symmetry, small against what a fit moves


def shapes(synthesis, context) -> list[tuple[int, ...]]:
    """The shapes a start must have: each synthesis layer's (out, in) and (out,), then the context MLP's."""
    out = [s for w, b in zip(synthesis.weights, synthesis.biases) for s in (tuple(w.shape[1:]), tuple(b.shape[1:]))]
    return out + [tuple(p.shape) for p in context.coded_params()]


def load(path: Path = PATH) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[f"t{i}"] for i in range(len(f.files))]


def save(tensors: list[np.ndarray], path: Path) -> None:
    np.savez(path, **{f"t{i}": np.asarray(t, np.float32) for i, t in enumerate(tensors)})


def apply(synthesis, context, seed: int, tensors: list[np.ndarray] | None = None) -> bool:
    """Set `synthesis` (every set, jittered) and `context` to the learned start when their shapes are the
    start's; False (nothing changed) otherwise, e.g. for other widths or levels."""
    tensors = load() if tensors is None else tensors
    if context is None or [t.shape for t in tensors] != shapes(synthesis, context):
        return False
    gen = torch.Generator().manual_seed(seed + 1000)  # a stream apart from the random init's (as measured)
    layers = [torch.from_numpy(t) for t in tensors]
    with torch.no_grad():
        for j, (pw, pb) in enumerate(zip(synthesis.weights, synthesis.biases)):
            w, b = layers[2 * j], layers[2 * j + 1]
            amp = JITTER * w.abs().mean()
            pw.copy_(w[None] + amp * torch.randn(pw.shape, generator=gen))
            pb.copy_(b[None] + amp * torch.randn(pb.shape, generator=gen))
        for p, t in zip(context.coded_params(), layers[2 * len(synthesis.weights):]):
            p.copy_(t)
    return True


def of_fit(model) -> list[np.ndarray]:
    """A fitted GridModel's start: each layer's weights averaged over its images, and the context MLP's."""
    with torch.no_grad():
        per = [model.synthesis.layers(i) for i in range(len(model.sizes))]
        layers = [torch.stack([p[j][k] for p in per]).mean(0) for j in range(len(per[0])) for k in (0, 1)]
        return [t.numpy().copy() for t in layers] + [p.detach().numpy().copy() for p in model.context.coded_params()]
