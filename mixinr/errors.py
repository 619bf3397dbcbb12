"""The one exception type users see: the CLI prints its message on one line and exits 2."""


class MixinrError(Exception):
    """A problem with the user's input (a file, a flag, a budget), not a bug in mixinr."""
