"""Archives stay byte-identical across refactoring: tiny fixed-seed encodes on one thread give the
SHA-256 recorded from main before the codec was split (issue 19), through every path rate control
takes (budget with fine-tuning and the mean-PSNR objective, the mse objective with learned
coefficients, a forced refit, a fixed precision without a budget, auto precision without a budget).

The hashes belong to one float environment (torch build, CPU architecture): elsewhere the test skips,
saying why; record new ones there with `python tests/test_golden_encode.py`."""

import hashlib
import platform
import sys

import pytest
import torch
from conftest import smooth_image

from mixinr.codec import EncodeConfig, QatConfig, RateControl, encode

pytestmark = pytest.mark.usefixtures("one_thread")

ENVIRONMENT = ("2.13.0+cpu", "x86_64")  # torch.__version__, platform.machine() of the recording
FAST = dict(epochs=60, progress=False, device="cpu")
CASES = {
    "budget-psnr-qat": (dict(bpp=4.0, qat_epochs=30, **FAST),
                        "4468de3d4b68f9fa96c2c07fc3ac2495d8beff4d370a3a39814715f87664b5bc"),
    "budget-mse-learned": (dict(bpp=2.0, objective="mse", coeffs="learned", sets=2, qat_epochs=20, **FAST),
                           "c6d59d91be21c567c5d5c801ebfb7bdafb099614eadb76adf34fae79eedc1ed4"),
    "refit": (dict(bpp=4.0, qat_epochs=40, rate=RateControl(est_bits_per_param=3.0), **FAST),
              "dea492f22a3e8c2af623b46ce0775d338cf12076ce266f836c13b1a124e508cf"),
    "q9-no-budget": (dict(depth=2, width=8, precision="q9", **FAST),
                     "50d66fe888e3abe7415f8aabe787452331b3612481b39742e5367403a8cdb6ea"),
    "auto-no-budget": (dict(depth=2, width=8, qat_epochs=20, **FAST),
                       "786b4a861948c017ea7315af25ee3161b4afe2ded995f56e520bb0fef3e17180"),
}


def _digest(settings: dict) -> str:
    images = [smooth_image(16, 16, s) for s in range(3)]
    return hashlib.sha256(encode(images, ["a.png", "b.png", "c.png"], EncodeConfig(**settings)).data).hexdigest()


@pytest.mark.skipif((torch.__version__, platform.machine()) != ENVIRONMENT,
                    reason=f"golden hashes recorded with torch {ENVIRONMENT[0]} on {ENVIRONMENT[1]}")
@pytest.mark.parametrize("case", list(CASES))
def test_archive_bytes_unchanged(case):
    """The archive of a fixed input, seed and settings has the SHA-256 recorded before the refactoring."""
    settings, expected = CASES[case]
    assert _digest(settings) == expected


def test_qat_config_is_what_fine_tuning_uses():
    """A QatConfig value changes the archive (its lr reaches fine-tuning): configs replace the module
    constants tests used to patch."""
    settings = dict(CASES["auto-no-budget"][0])
    assert _digest({**settings, "qat": QatConfig(lr=1e-3)}) != _digest(settings)


if __name__ == "__main__":
    torch.set_num_threads(1)
    for name, (settings, _) in CASES.items():
        print(name, _digest(settings), file=sys.stdout)
