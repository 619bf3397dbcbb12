"""mixinr.progress: what a fit shows. Without a terminal, -v's log lines count Adam epochs and L-BFGS
iterations apart; on a terminal the bar's text is shown as written (rich would read "[cpu]" as a style)."""

import logging

import pytest
from conftest import smooth_image

from mixinr import progress
from mixinr.model import Arch
from mixinr.train import FitConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def test_log_lines_count_epochs_and_lbfgs_steps(monkeypatch, caplog):
    """With the logger at INFO and no bar, every update past the heartbeat is a line; the fit's lines say
    "epoch E/3" while Adam runs and "L-BFGS step S/2" after, and name the device."""
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.0)
    with caplog.at_level(logging.INFO, logger="mixinr"):
        fit([smooth_image(8, 8, 0)], Arch(2, 4, 1), FitConfig(epochs=3, lbfgs_steps=2, progress=False,
                                                               device="cpu", description="fitting 2x4"))
    lines = [r.getMessage() for r in caplog.records]
    assert any("fitting 2x4 [cpu]: epoch 3/3 (then 2 L-BFGS steps)" in m for m in lines)
    assert any("L-BFGS step 2/2" in m for m in lines)
    assert not any("epoch 5/" in m for m in lines)  # L-BFGS iterations are not epochs


def test_quiet_logs_nothing(monkeypatch, caplog):
    """Below INFO (the default, and -q) and without a bar, a phase prints and logs nothing."""
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.0)
    with caplog.at_level(logging.WARNING, logger="mixinr"):
        with progress.Bar("phase", 3, show=False) as bar:
            bar.update(1)
    assert caplog.records == [] and bar.mode is None


def test_bar_shows_brackets_as_text():
    """The bar's description keeps "[cpu]": rich markup is off for it."""
    bar = progress.Bar("fitting 5x16 [cpu]", 10, show=True)
    with bar:
        bar._show()
        text = bar._progress.columns[0].render(bar._progress.tasks[0])
    assert text.plain == "fitting 5x16 [cpu]"
