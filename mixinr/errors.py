"""The one exception type users see: the CLI prints its message on one line and exits 2."""


class MixinrError(Exception):
    """A problem with the user's input (a file, a flag, a budget), not a bug in mixinr."""


class BudgetTooSmall(MixinrError):
    """The bpp budget cannot hold even the smallest archive; `min_bpp` is a budget that can (--psnr's
    search starts its bracket there)."""

    def __init__(self, message: str, min_bpp: float):
        super().__init__(message)
        self.min_bpp = min_bpp
