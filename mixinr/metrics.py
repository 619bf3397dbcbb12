"""Quality and rate: PSNR on 8-bit images, bits per pixel from real bytes."""

from __future__ import annotations

import math

import numpy as np


def psnr(a, b) -> float:
    """PSNR in dB of two 8-bit images (peak 255, all channels); inf when identical."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    mse = np.mean((a - b) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def psnr_from_mse(mse: float, peak_to_peak: float = 2.0) -> float:
    """PSNR of a float MSE on a scale whose full range is `peak_to_peak` ([-1, 1] -> 2)."""
    return math.inf if mse <= 0 else 10.0 * math.log10(peak_to_peak**2 / mse)


def bpp(n_bytes: int, n_pixels: int) -> float:
    """Bits per pixel: file bits over pixels (all channels together), the usual convention."""
    return 8.0 * n_bytes / n_pixels


def bpp_per_sample(n_bytes: int, n_pixels: int) -> float:
    """The seed's convention: bits over colour samples (pixels x 3); a third of the usual bpp."""
    return 8.0 * n_bytes / (3 * n_pixels)
