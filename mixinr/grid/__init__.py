"""The grid representation (docs/photo.md): per-image multi-resolution latent grids, quantised and range
coded, decoded by a tiny synthesis MLP whose weights are a mixture of K shared sets. Format version 2."""

from mixinr.grid import format as _format
from mixinr.grid.archive import GridArchive
from mixinr.grid.encode import GridPlan
from mixinr.representation import Representation

REPRESENTATION = Representation("grid", _format.VERSION, plan=GridPlan, read=GridArchive.from_bytes)
