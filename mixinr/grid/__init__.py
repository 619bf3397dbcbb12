"""The grid representation (docs/photo.md): per-image multi-resolution latent grids, quantised and range
coded, decoded by a tiny synthesis MLP whose weights are a mixture of K shared sets. Format version 2.

Importing the package loads no torch: its format (format.py) is what `mixinr info` and decode's planning
read (mixinr.formats); the plan (encode.py) and the decoder (archive.py) load when first called."""

from mixinr.grid import format as _format
from mixinr.representation import Representation


def _plan(images, names, cfg):
    from mixinr.grid.encode import GridPlan

    return GridPlan(images, names, cfg)


def _read(data: bytes, source: str = "archive"):
    from mixinr.grid.archive import GridArchive

    return GridArchive.from_bytes(data, source)


REPRESENTATION = Representation("grid", _format.VERSION, plan=_plan, read=_read)
