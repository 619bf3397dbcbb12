"""What a long computation shows while it runs, the same way in every phase (fitting, fine-tuning, the
greedy rounding, the search for a PSNR target): a rich bar on a terminal; else, when the "mixinr"
logger is at INFO (`-v`), a line every HEARTBEAT_S seconds while the phase lasts (and one when such a
phase ends); with `-q`, nothing. No phase should leave the screen still for a minute (docs/codec.md, "Progress").

`show` arguments (FitConfig.progress, EncodeConfig.progress): True / False force the bar on or off;
None follows the command line's choice (`configure`), else whether stderr is a terminal.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("mixinr")
_last_line = 0.0  # when the "mixinr" logger last wrote anything: heartbeats count from there, across phases


def _stamp(record) -> bool:
    global _last_line
    _last_line = time.perf_counter()
    return True


log.addFilter(_stamp)

HEARTBEAT_S = 20.0  # without a bar (a log file, -v): a line at least this often
_REFRESH_S = 0.1  # a bar's text is updated at most this often (rich redraws at 10 Hz anyway)
_SHOW_AFTER_S = 0.5  # a bar appears once its phase has run this long: quick phases do not flicker
_default: bool | None = None


def configure(show: bool | None) -> None:
    """The default for every `show=None` in this process: False for `-q`, None for "on a terminal"."""
    global _default
    _default = show


def showing(show: bool | None = None) -> bool:
    if show is not None:
        return show
    if _default is not None:
        return _default
    return sys.stderr.isatty()


def note(message: str, show: bool | None = None) -> None:
    """A line worth keeping (a probe of the PSNR search, the network chosen): logged at INFO when that
    is on (-v), else printed on stderr where bars are shown (a terminal), else dropped."""
    if log.isEnabledFor(logging.INFO):
        log.info(message)
    elif showing(show):
        print(f"mixinr: {message}", file=sys.stderr, flush=True)


class Bar:
    """One phase: `with Bar("fitting 5x16 [cpu]", total) as bar: bar.update(done, "epoch 10/3000 ...")`."""

    def __init__(self, description: str, total: int, show: bool | None = None):
        self.description, self.total = description, max(int(total), 1)
        self.mode = "bar" if showing(show) else ("lines" if log.isEnabledFor(logging.INFO) else None)
        self._progress = None

    def __enter__(self) -> "Bar":
        self.start = self._last = time.perf_counter()
        self._lines = 0
        return self

    def status(self, text: str) -> None:
        """Say `text` now (a step about to take long without updates, e.g. compiling)."""
        if self.mode == "bar":
            if self._progress is None:
                self._show()
            self._progress.update(self._task, text=text)
        elif self.mode == "lines":
            self._lines += 1
            log.info(f"{self.description}: {text}")

    def update(self, done: int, text: str = "") -> None:
        if self.mode is None:
            return
        now = time.perf_counter()
        if self.mode == "bar":
            if self._progress is None:
                if now - self.start < _SHOW_AFTER_S:
                    return
                self._show()
            if now - self._last >= _REFRESH_S or done >= self.total:
                self._last = now
                self._progress.update(self._task, completed=done, text=text)
        elif now - max(_last_line, self.start - HEARTBEAT_S / 2) >= HEARTBEAT_S:
            # Due HEARTBEAT_S after the last line of any phase (short phases in a row add up), and not
            # in the first HEARTBEAT_S / 2 of this one (its first figures mean little yet).
            self._lines += 1
            left = (now - self.start) / max(done, 1) * (self.total - done)
            log.info(f"{self.description}: {text or f'{done}/{self.total}'}, about {_duration(left)} left")

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        # markup=False: "[cpu]" and file names are text, not rich styles.
        self._progress = Progress(TextColumn(self.description, markup=False), BarColumn(),
                                  TextColumn("{task.fields[text]}", markup=False), TimeRemainingColumn(),
                                  console=Console(stderr=True), transient=True)
        self._progress.start()
        self._task = self._progress.add_task("", total=self.total, text="")

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
        elif self.mode == "lines" and self._lines and exc[0] is None:
            log.info(f"{self.description}: done in {_duration(time.perf_counter() - self.start)}")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min {seconds % 60:02d} s"


def plural(n: int, word: str) -> str:
    """'1 image', '3 images'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
