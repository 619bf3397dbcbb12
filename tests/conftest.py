"""Small synthetic images: the suite never needs data from outside the repository."""

import numpy as np
import pytest
import torch


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random RGB image (low-frequency cosines), easy enough to fit in a few hundred epochs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(3):
            fy, fx, ph = rng.uniform(0.5, 2.5), rng.uniform(0.5, 2.5), rng.uniform(0, 6.3)
            img[..., c] += np.cos(2 * np.pi * (fy * y + fx * x) + ph)
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).round().astype(np.uint8)


@pytest.fixture
def images():
    """Four 16x16 smooth images."""
    return [smooth_image(16, 16, s) for s in range(4)]


@pytest.fixture
def one_thread():
    """Tiny fits run far faster on one thread on a shared CPU (torch's setting restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
