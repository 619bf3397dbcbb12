"""Image I/O: conversions, and the one-line errors for bad inputs."""

import numpy as np
import pytest
from PIL import Image

from mixinr.errors import MixinrError
from mixinr.images import atomic_write, expand_inputs, read_image, write_png
from mixinr.metrics import bpp, psnr


def test_grayscale_and_rgba_become_rgb(tmp_path):
    Image.fromarray(np.full((4, 5), 7, np.uint8), "L").save(tmp_path / "g.png")
    Image.fromarray(np.full((4, 5, 4), 9, np.uint8), "RGBA").save(tmp_path / "a.png")
    assert read_image(tmp_path / "g.png").shape == (4, 5, 3)
    with pytest.warns(UserWarning, match="alpha"):
        assert read_image(tmp_path / "a.png").shape == (4, 5, 3)


def test_missing_and_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(MixinrError, match="nope.png: no such file"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(MixinrError, match="junk.png: not a readable image"):
        read_image(tmp_path / "junk.png")
    with pytest.raises(MixinrError, match="no input"):
        expand_inputs([])
    with pytest.raises(MixinrError, match="empty: folder holds no images"):
        (tmp_path / "empty").mkdir()
        expand_inputs([tmp_path / "empty"])


def test_folder_inputs_sorted_by_name(tmp_path):
    for name in ["b.png", "a.png", "c.txt"]:
        Image.new("RGB", (2, 2)).save(tmp_path / name) if name.endswith("png") else (tmp_path / name).write_text("x")
    assert [p.name for p in expand_inputs([tmp_path])] == ["a.png", "b.png"]


def test_png_round_trip_and_no_overwrite(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    write_png(tmp_path / "x.png", img)
    assert np.array_equal(read_image(tmp_path / "x.png"), img)
    with pytest.raises(MixinrError, match="already exists"):
        atomic_write(tmp_path / "x.png", b"zz", force=False)
    assert np.array_equal(read_image(tmp_path / "x.png"), img)  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary left behind


def test_psnr_rounds_and_bpp_counts_all_channels():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 1
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / (1 / 48)))
    assert psnr(a, a) == float("inf")
    assert bpp(100, 800) == 1.0


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    """Regression: files came out 0600 (mkstemp's mode), unreadable to other users."""
    import os

    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "r.bin", b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "r.bin").stat().st_mode & 0o777 == 0o644


class _FailsHalfWay:
    """A file object that writes half of what it is given, then raises `exc` (a full disk, Ctrl-C)."""

    def __init__(self, f, exc):
        self.f, self.exc = f, exc

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise self.exc

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, exc):
    """A write that fails half-way (injected: the disk fills, or Ctrl-C) leaves the old file intact and no
    temporary beside it; a full disk is one MixinrError naming the file, an interrupt stays an interrupt."""
    import os

    from mixinr import images

    target = tmp_path / "a.mixinr"
    target.write_bytes(b"old archive")
    real = os.fdopen
    monkeypatch.setattr(images.os, "fdopen", lambda fd, mode: _FailsHalfWay(real(fd, mode), exc))
    expected = (MixinrError, "a.mixinr: cannot write \\(No space left") if isinstance(exc, OSError) else (
        KeyboardInterrupt, None)
    with pytest.raises(expected[0], match=expected[1]):
        atomic_write(target, b"new archive, longer than the old one", force=True)
    assert target.read_bytes() == b"old archive"
    assert [p.name for p in tmp_path.iterdir()] == ["a.mixinr"]


def test_write_errors_are_one_line(tmp_path):
    """A file in the way of the folder, and a folder without write permission: MixinrError naming the file."""
    import os

    (tmp_path / "f").write_text("x")
    with pytest.raises(MixinrError, match="f/sub/a.png: cannot write \\(a file is in the way"):
        atomic_write(tmp_path / "f" / "sub" / "a.png", b"x")
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(MixinrError, match="Permission denied"):
            atomic_write(tmp_path / "ro" / "a.png", b"x")


def test_image_larger_than_the_format_is_refused_from_its_header(tmp_path):
    """A side over the format's 65535 is refused before the pixels are decoded."""
    Image.new("RGB", (70000, 1)).save(tmp_path / "wide.png")
    with pytest.raises(MixinrError, match="wide.png: image of 70000x1 pixels is too large"):
        read_image(tmp_path / "wide.png")
