"""Where a fit runs: --device auto|cpu|cuda, shared by every representation's trainer."""

from __future__ import annotations

import torch

from mixinr.errors import MixinrError


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise MixinrError("--device cuda: no CUDA device is available")
    return torch.device(device)
