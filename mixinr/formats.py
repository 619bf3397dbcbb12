"""An archive's header alone, for every format version: what `mixinr info` prints and what `mixinr decode`
plans with (names, sizes, the render cost its caps count), read without torch and without decoding any
weights or latents. Torch-free: it imports each version's format module (mixinr.bitstream for version 1,
mixinr.grid.format for version 2), never a decoder or mixinr.codec.

Each version's format module gives the same three things: `read(data, source)`, whose result has
`.header` (with `names`, `sizes`, `madds_per_pixel()`) and `.sections`; and `describe(header, sections,
n_bytes)`, the `info()` dict. Its decoder (codec.REPRESENTATIONS, by the same version byte) reports the
very same facts from the very same functions."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mixinr import bitstream
from mixinr.errors import MixinrError
from mixinr.grid import format as gformat


@dataclass(frozen=True)
class ArchiveHeader:
    """What an archive's header tells, each under the name (and with the meaning) representation.Decoder
    gives it."""

    source: str
    names: list[str]
    sizes: list[tuple[int, int]]
    madds_per_pixel: int
    n_bytes: int
    described: dict = field(repr=False)

    def info(self) -> dict:
        """What `mixinr info` reports, the same dict as the decoder's info()."""
        return self.described


def _header_reader(read, describe) -> Callable[[bytes, str], ArchiveHeader]:
    def header(data: bytes, source: str = "archive") -> ArchiveHeader:
        parsed = read(data, source)
        h = parsed.header
        return ArchiveHeader(source, h.names, h.sizes, h.madds_per_pixel(), len(data),
                             describe(h, parsed.sections, len(data)))

    return header


# The header reader of each format version byte; every version codec.REPRESENTATIONS decodes has one.
HEADERS: dict[int, Callable[[bytes, str], ArchiveHeader]] = {
    bitstream.VERSION: _header_reader(bitstream.read, bitstream.describe),  # the mixture SIREN
    gformat.VERSION: _header_reader(gformat.read, gformat.describe),  # the grid
}


def unknown_version(source: str, version: int, known: Iterable[int]) -> MixinrError:
    """The error for an archive of a format version this mixinr has no reader for."""
    return MixinrError(f"{source}: unknown format version {version} (this mixinr reads {', '.join(map(str, known))})")


def read_header(data: bytes, source: str = "archive") -> ArchiveHeader:
    """The header of an archive's bytes, by its format version; errors are MixinrError "<source>: ..."."""
    version = bitstream.format_version(data, source)
    if version not in HEADERS:
        raise unknown_version(source, version, HEADERS)
    return HEADERS[version](data, source)
