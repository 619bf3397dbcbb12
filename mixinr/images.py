"""Reading and writing images and files: Pillow in, PNG out, atomic writes, one-line errors."""

from __future__ import annotations

import os
import stat
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mixinr.bitstream import MAX_ARCHIVE_BYTES, MAX_SIDE, check_start
from mixinr.errors import MixinrError

HEAD_BYTES = 1 << 16  # read_bytes' first block, which `head` may refuse
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}


def read_image(path) -> np.ndarray:
    """Any Pillow-readable file -> (H, W, 3) uint8 RGB. Grayscale is expanded; alpha is dropped with a warning.

    An image with a side over the format's MAX_SIDE, or over Pillow's decompression-bomb limit, is refused
    from its header, before its pixels are decoded."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            limit = Image.MAX_IMAGE_PIXELS or MAX_SIDE * MAX_SIDE
            if max(w, h) > MAX_SIDE or w * h > limit:
                raise MixinrError(f"{path}: image of {w}x{h} pixels is too large (sides up to {MAX_SIDE}, "
                                  f"at most {limit} pixels)")
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                warnings.warn(f"{path}: alpha channel dropped (mixinr codes RGB)", stacklevel=2)
            rgb = im.convert("RGB")
    except FileNotFoundError:
        raise MixinrError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise MixinrError(f"{path}: is a directory, not an image") from None
    except Image.DecompressionBombError:  # raised by open() itself for twice the limit
        raise MixinrError(f"{path}: image too large (over Pillow's {Image.MAX_IMAGE_PIXELS} pixels)") from None
    except PermissionError:
        raise MixinrError(f"{path}: cannot read (permission denied)") from None
    except UnidentifiedImageError:
        raise MixinrError(f"{path}: not a readable image (unknown format)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        # Pillow says "image file is truncated" or "broken data stream" as OSError, with the detail.
        detail = str(e).split("\n")[0][:80] if isinstance(e, OSError) and str(e) else type(e).__name__
        raise MixinrError(f"{path}: not a readable image ({detail})") from None
    return np.asarray(rgb, dtype=np.uint8).copy()


def image_files(folder) -> list[Path]:
    """The image files directly in `folder`, sorted by name (how groups are formed)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def expand_inputs(inputs) -> list[Path]:
    """Files as given, folders replaced by their image files sorted by name. Errors name the input."""
    if not inputs:
        raise MixinrError("no input images given")
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = image_files(item)
            if not found:
                raise MixinrError(f"{item}: folder holds no images")
            paths.extend(found)
        elif item.exists():
            paths.append(item)
        else:
            raise MixinrError(f"{item}: no such file or folder")
    return paths


def read_bytes(path, what: str = "file", limit: int | None = None, head=None) -> bytes:
    """The bytes of `path`; a missing, directory or unreadable path is a one-line MixinrError naming it.

    More than `limit` bytes is an error too, raised before reading them where the size is known (a
    device or pipe is read up to the limit). `head(first_block)` may refuse the file from its first
    bytes, so `mixinr info /dev/zero` ends at once."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if limit is not None and stat.S_ISREG(st.st_mode) and st.st_size > limit:
                raise MixinrError(f"{path}: {st.st_size} bytes, larger than {what} can be ({limit} bytes)")
            data = f.read(HEAD_BYTES)
            if head is not None:
                head(data)
            data += f.read() if limit is None else f.read(limit + 1 - len(data))
    except FileNotFoundError:
        raise MixinrError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise MixinrError(f"{path}: is a directory, not {what}") from None
    except OSError as e:
        raise MixinrError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    if limit is not None and len(data) > limit:
        raise MixinrError(f"{path}: more than {limit} bytes, larger than {what} can be")
    return data


def read_archive_bytes(path, head=None) -> bytes:
    """An archive file's bytes, at most the format's largest archive (bitstream.MAX_ARCHIVE_BYTES); a
    foreign file is refused from its first bytes (`head`: another check of those, e.g. one that also
    lets a collection manifest through)."""
    return read_bytes(path, "an archive", MAX_ARCHIVE_BYTES, head or (lambda b: check_start(b, str(path))))


def atomic_write(path, data: bytes, force: bool = True) -> None:
    """Write `data` to a temporary file beside `path`, then rename: never a half-written file, and an
    existing `path` stays as it was when anything fails. OS errors (a file where a folder should be,
    permission denied, disk full) are one-line MixinrErrors naming `path`."""
    path = Path(path)
    if path.exists() and not force:
        raise MixinrError(f"{path}: already exists (use --force to overwrite)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise MixinrError(f"{path}: cannot write ({_why(e)})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        # mkstemp makes the file private (0600); give it the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise MixinrError(f"{path}: cannot write ({_why(e)})") from None
        raise


def _why(e: OSError) -> str:
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        return "a file is in the way of its folder"
    return e.strerror or type(e).__name__


def png_bytes(img: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, dtype=np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_png(path, img: np.ndarray, force: bool = True) -> None:
    """(H, W, 3) uint8 -> PNG file, atomically."""
    atomic_write(path, png_bytes(img), force=force)
