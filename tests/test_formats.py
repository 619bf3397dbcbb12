"""The header reader of each format version (mixinr.formats, torch-free): what it reads from an archive's
header alone is what the full decoder reports, every version the codec decodes has one, and a version
nobody reads is the codec's one-line error."""

from pathlib import Path

import pytest

from mixinr import codec, formats
from mixinr.codec import archive_from_bytes
from mixinr.errors import MixinrError
from mixinr.formats import read_header

DATA = Path(__file__).parent / "data"
GOLDEN = sorted(p.stem for p in DATA.glob("golden-*.mixinr"))


def test_golden_archives_cover_both_versions():
    """The archives the next test compares on include version 1 (the SIREN) and version 2 (the grid)."""
    assert {read_header((DATA / f"{s}.mixinr").read_bytes()).info()["version"] for s in GOLDEN} == {1, 2}


@pytest.mark.parametrize("stem", GOLDEN)
def test_header_reader_reports_what_the_decoder_does(stem):
    """For every golden archive (SIREN q8 and fp16, grid factorized and with the context model): names,
    sizes, render cost, bytes, source and the info() dict `mixinr info` prints, read from the header
    alone, equal the full decoder's."""
    data = (DATA / f"{stem}.mixinr").read_bytes()
    header, decoder = read_header(data, stem), archive_from_bytes(data, stem)
    assert header.info() == decoder.info()
    assert header.info()["precision"] == decoder.precision
    assert (header.source, header.names, header.sizes, header.madds_per_pixel, header.n_bytes) == \
           (decoder.source, decoder.names, decoder.sizes, decoder.madds_per_pixel, decoder.n_bytes)


def test_every_decoded_version_has_a_header_reader():
    """formats.HEADERS and codec.REPRESENTATIONS own the same format version bytes."""
    assert set(formats.HEADERS) == {r.version for r in codec.REPRESENTATIONS.values()}


def test_unknown_version_is_the_codecs_error():
    """The header reader and the codec's decoder refuse a version-7 archive with the same one-line message."""
    data = b"MXNR\x07" + bytes(20)
    message = r"^x\.mixinr: unknown format version 7 \(this mixinr reads 1, 2\)$"
    with pytest.raises(MixinrError, match=message):
        read_header(data, "x.mixinr")
    with pytest.raises(MixinrError, match=message):
        archive_from_bytes(data, "x.mixinr")
