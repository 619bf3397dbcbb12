"""Reading and writing images and files: Pillow in, PNG out, atomic writes, one-line errors."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mixinr.errors import MixinrError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}


def read_image(path) -> np.ndarray:
    """Any Pillow-readable file -> (H, W, 3) uint8 RGB. Grayscale is expanded; alpha is dropped with a warning."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                warnings.warn(f"{path}: alpha channel dropped (mixinr codes RGB)", stacklevel=2)
            rgb = im.convert("RGB")
    except FileNotFoundError:
        raise MixinrError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise MixinrError(f"{path}: is a directory, not an image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise MixinrError(f"{path}: not a readable image ({type(e).__name__})") from None
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


def read_bytes(path, what: str = "file") -> bytes:
    """The bytes of `path`; a missing, directory or unreadable path is a one-line MixinrError naming it."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise MixinrError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise MixinrError(f"{path}: is a directory, not {what}") from None
    except OSError as e:
        raise MixinrError(f"{path}: cannot read ({e.strerror})") from None


def atomic_write(path, data: bytes, force: bool = True) -> None:
    """Write `data` to a temporary file beside `path`, then rename: never a half-written file."""
    path = Path(path)
    if path.exists() and not force:
        raise MixinrError(f"{path}: already exists (use --force to overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes the file private (0600); give it the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def png_bytes(img: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, dtype=np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_png(path, img: np.ndarray, force: bool = True) -> None:
    """(H, W, 3) uint8 -> PNG file, atomically."""
    atomic_write(path, png_bytes(img), force=force)
