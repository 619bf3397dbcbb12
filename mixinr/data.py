"""Datasets of the seed's experiments: loading Kodak, CIFAR-10 and ImageNet, grouping their images
the way the seed does, and fetching Kodak and CIFAR-10 from their public homes.

Layouts read:
- Kodak: a folder of `kodim01.png` .. `kodim24.png` (any subset). Portrait images are rotated to
  landscape (90 degrees counter-clockwise, `np.rot90`), then resized to the training size when they
  are not already that size (the seed trains at 512 x 768, which the Kodak files already are).
- CIFAR-10: the official python batches (`cifar-10-batches-py/` or that folder itself; the test
  batch by default, whose class order matches the class folders here), or class folders of PNGs
  (`<root>/<class>/<file>.png`, class named by its index 0-9 or its CIFAR-10 name); a class's files
  sorted by name, first N, form a group.
- ImageNet: class folders of images; classes `sorted(listdir)[20:100]` as the seed; images resized
  to 256 x 256 when they are not already.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from mixinr.errors import MixinrError
from mixinr.images import atomic_write, image_files, read_image

# 0-based kodim indices, smooth to detailed (the seed's order); group g of size N is SORTED_FREQ[g::24//N].
SORTED_FREQ = [11, 19, 22, 8, 2, 9, 6, 3, 14, 15, 21, 1, 5, 18, 20, 16, 10, 13, 0, 23, 7, 4, 17, 12]
KODAK_SIZE = (512, 768)  # (H, W) the seed trains at
IMAGENET_SIZE = 256
IMAGENET_CLASS_SLICE = (20, 100)  # the seed: sorted(listdir)[20:100]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]  # fmt: skip

KODAK_URL = "http://r0k.us/graphics/kodak/kodak/kodim{:02d}.png"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_DIR = "cifar-10-batches-py"
# The official MD5s (published with the archive; the same values torchvision checks).
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


@dataclass
class Group:
    """Images fitted together by one mixture network."""

    key: str  # stable id of the group within its dataset (used for resuming)
    label: str  # what the seed's run name says about the group (kodak indices, class)
    names: list[str]
    images: list[np.ndarray] = field(repr=False)

    @property
    def size(self) -> tuple[int, int]:
        return self.images[0].shape[:2]


# ---------------------------------------------------------------- Kodak


def load_kodak(root, size: tuple[int, int] = KODAK_SIZE) -> dict[int, tuple[str, np.ndarray]]:
    """{0-based kodim index: (file name, (H, W, 3) uint8)} of the kodimNN.png files in `root`."""
    root = Path(root)
    if not root.is_dir():
        raise MixinrError(f"{root}: no such folder (expected kodim01.png .. kodim24.png)")
    found = {}
    for path in sorted(root.iterdir()):
        m = re.fullmatch(r"kodim(\d\d)\.png", path.name, flags=re.IGNORECASE)
        if m and 1 <= int(m.group(1)) <= 24:
            found[int(m.group(1)) - 1] = (path.name, _landscape(read_image(path), size))
    if not found:
        raise MixinrError(f"{root}: no kodim01.png .. kodim24.png files")
    return found


def _landscape(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if img.shape[0] > img.shape[1]:
        img = np.ascontiguousarray(np.rot90(img))  # portrait -> landscape
    return resize(img, size)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 resized to `size` (H, W) with Lanczos; unchanged when already that size."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.LANCZOS), dtype=np.uint8)


def kodak_group_indices(n: int) -> list[list[int]]:
    """The seed's groups of N Kodak images: SORTED_FREQ[g::24//N] for g = 0 .. 24/N - 1."""
    if n < 1 or 24 % n:
        raise MixinrError(f"Kodak group size {n}: must divide 24")
    stride = 24 // n
    return [SORTED_FREQ[g::stride] for g in range(stride)]


def kodak_groups(images: dict[int, tuple[str, np.ndarray]], n: int) -> list[Group]:
    """The seed's groups of size N, each restricted to the images present (a warning when some are
    missing; groups with none present are left out)."""
    groups, absent = [], []
    for g, indices in enumerate(kodak_group_indices(n)):
        present = [i for i in indices if i in images]
        if not present:
            absent.append(str(g))
            continue
        if len(present) < len(indices):
            missing = ", ".join(f"kodim{i + 1:02d}" for i in indices if i not in images)
            warnings.warn(f"Kodak group {g} of N={n}: missing {missing}; fitting the {len(present)} present",
                          stacklevel=2)
        groups.append(Group(key=f"N={n}/g={g}", label="_".join(map(str, present)),
                            names=[images[i][0] for i in present], images=[images[i][1] for i in present]))
    if absent:
        warnings.warn(f"Kodak N={n}: no image of group(s) {', '.join(absent)} present; left out", stacklevel=2)
    return groups


# ---------------------------------------------------------------- CIFAR-10


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch and nothing else: the only globals it resolves are those a pickled
    numpy array needs (array reconstruction, dtype) and Python 2 string re-encoding via latin-1.
    Anything else (os.system, eval, ...) raises, so a hostile file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def _latin1_encode(text, encoding="latin1"):
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"codec {encoding!r} is not allowed in a CIFAR batch")
    return text.encode("latin1")


def read_cifar_batch(path) -> tuple[np.ndarray, list[int]]:
    """One official batch file -> ((N, 32, 32, 3) uint8, labels). Restricted unpickling (see above)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise MixinrError(f"{path}: no such file") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise MixinrError(f"{path}: not a CIFAR-10 batch ({e})") from None
    if not isinstance(entry, dict):
        raise MixinrError(f"{path}: not a CIFAR-10 batch (top level is {type(entry).__name__}, not dict)")
    data = entry.get(b"data", entry.get("data"))
    labels = entry.get(b"labels", entry.get("labels"))
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
        raise MixinrError(f"{path}: not a CIFAR-10 batch (needs 'data' N x 3072 and 'labels')")
    labels = [int(x) for x in labels]
    if len(labels) != data.shape[0]:
        raise MixinrError(f"{path}: {data.shape[0]} images but {len(labels)} labels")
    # Rows are channel-major: 1024 red, 1024 green, 1024 blue, each row by row.
    images = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _batch_dir(root: Path) -> Path | None:
    for d in (root / CIFAR10_DIR, root):
        if (d / "test_batch").is_file() or (d / "data_batch_1").is_file():
            return d
    return None


def load_cifar10(root, classes=None, per_class: int | None = None, split: str = "test") -> dict[int, Group]:
    """{class index: Group of its first `per_class` images (all when None)}, from batches or class folders.

    `split` picks the batches ("test": test_batch, "train": data_batch_1..5); class folders ignore it.
    """
    root = Path(root)
    if not root.is_dir():
        raise MixinrError(f"{root}: no such folder (expected {CIFAR10_DIR}/ or class folders)")
    classes = list(range(10)) if classes is None else [int(c) for c in classes]
    batches = _batch_dir(root)
    out: dict[int, tuple[list[str], list[np.ndarray]]] = {c: ([], []) for c in classes}
    if batches is not None:
        files = {"test": ["test_batch"], "train": [f"data_batch_{i}" for i in range(1, 6)]}.get(split)
        if files is None:
            raise MixinrError(f"CIFAR-10 split {split!r}: must be 'test' or 'train'")
        for fname in files:
            images, labels = read_cifar_batch(batches / fname)
            for idx, (img, lab) in enumerate(zip(images, labels)):
                names, imgs = out.get(lab, (None, None))
                if names is not None and (per_class is None or len(names) < per_class):
                    names.append(f"{fname}_{idx:05d}.png")
                    imgs.append(img)
    else:
        folders = _cifar_class_folders(root)
        for c in classes:
            if c not in folders:
                raise MixinrError(f"{root}: no folder for CIFAR-10 class {c} ({CIFAR10_CLASSES[c]})")
            paths = image_files(folders[c])
            for p in paths[:per_class]:
                out[c][0].append(p.name)
                out[c][1].append(read_image(p))
    groups = {}
    for c, (names, imgs) in out.items():
        if not imgs:
            raise MixinrError(f"{root}: no images of CIFAR-10 class {c}")
        groups[c] = Group(key=f"class={c}", label=str(c), names=names, images=imgs)
    return groups


def _cifar_class_folders(root: Path) -> dict[int, Path]:
    folders = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name.isdigit() and int(d.name) < 10:
            folders[int(d.name)] = d
        elif d.name.lower() in CIFAR10_CLASSES:
            folders[CIFAR10_CLASSES.index(d.name.lower())] = d
    if not folders:
        raise MixinrError(f"{root}: neither {CIFAR10_DIR}/ batches nor class folders (0-9 or class names)")
    return folders


# ---------------------------------------------------------------- ImageNet


def imagenet_classes(root, class_slice: tuple[int, int] | None = IMAGENET_CLASS_SLICE) -> list[str]:
    """Class folder names: sorted(listdir)[20:100] by default (the seed); None -> all."""
    root = Path(root)
    if not root.is_dir():
        raise MixinrError(f"{root}: no such folder (expected ImageNet class folders)")
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    chosen = names if class_slice is None else names[class_slice[0] : class_slice[1]]
    if not chosen:
        raise MixinrError(f"{root}: no class folders in slice {class_slice} ({len(names)} class folders)")
    return chosen


def load_imagenet_class(root, name: str, n: int, size: int = IMAGENET_SIZE) -> Group:
    """The first `n` images (sorted by name) of class folder `name`, resized to size x size if needed."""
    folder = Path(root) / name
    paths = image_files(folder)[:n]
    if not paths:
        raise MixinrError(f"{folder}: folder holds no images")
    return Group(key=f"class={name}", label=name, names=[p.name for p in paths],
                 images=[resize(read_image(p), (size, size)) for p in paths])


# ---------------------------------------------------------------- download


def fetch(url: str, timeout: float = 60.0) -> bytes:
    """The bytes at `url` (http, https or file). MixinrError when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise MixinrError(f"{url}: cannot download ({reason}); fetch it by hand into --data") from None


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def download_cifar10(root, url: str = CIFAR10_URL, md5: str = CIFAR10_ARCHIVE_MD5, fetcher=fetch) -> Path:
    """Fetch the python archive, check its MD5 and each batch's, unpack `cifar-10-batches-py/` into
    `root`. Does nothing when the batches are already there and intact."""
    root = Path(root)
    dest = root / CIFAR10_DIR
    if all(_file_md5(dest / n) == h for n, h in CIFAR10_BATCH_MD5.items()):
        return dest
    data = fetcher(url)
    if _md5(data) != md5:
        raise MixinrError(f"{url}: checksum mismatch (md5 {_md5(data)}, expected {md5})")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".cifar-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for m in tar.getmembers():
                name = Path(m.name).name  # written flat under tmp: no path from the archive is trusted
                if m.isfile() and m.name.startswith(f"{CIFAR10_DIR}/") and name in CIFAR10_BATCH_MD5:
                    (tmp / name).write_bytes(tar.extractfile(m).read())
        for name, h in CIFAR10_BATCH_MD5.items():
            got = _file_md5(tmp / name)
            if got != h:
                raise MixinrError(f"{url}: {name} missing or corrupt in the archive (md5 {got}, expected {h})")
        # Swap the checked folder in whole, so `dest` is never half-written.
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise MixinrError(f"{url}: cannot unpack the archive ({e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _file_md5(path: Path) -> str | None:
    return _md5(path.read_bytes()) if path.is_file() else None


def download_kodak(root, url: str = KODAK_URL, fetcher=fetch) -> list[Path]:
    """Fetch kodim01..24.png into `root` (files already there are kept).

    No checksums are published for the Kodak files, so each download is checked to be a readable
    768 x 512 (or 512 x 768) image, and its SHA-256 is recorded in `root/SHA256SUMS`; a file whose
    digest differs from the recorded one is reported."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    sums_path = root / "SHA256SUMS"
    sums = {}
    if sums_path.is_file():
        for line in sums_path.read_text().splitlines():
            digest, _, name = line.partition("  ")
            sums[name.strip()] = digest
    paths = []
    for i in range(1, 25):
        path = root / f"kodim{i:02d}.png"
        if path.is_file():
            data = path.read_bytes()
        else:
            data = fetcher(url.format(i))
            try:
                with Image.open(io.BytesIO(data)) as im:
                    dims = im.size
            except Exception:
                raise MixinrError(f"{url.format(i)}: not an image") from None
            if sorted(dims) != [512, 768]:
                raise MixinrError(f"{url.format(i)}: {dims[0]}x{dims[1]}, not a Kodak image (768x512)")
            atomic_write(path, data)
        digest = hashlib.sha256(data).hexdigest()
        if sums.get(path.name, digest) != digest:
            raise MixinrError(f"{path}: SHA-256 {digest} differs from {sums_path} ({sums[path.name]})")
        sums[path.name] = digest
        paths.append(path)
    atomic_write(sums_path, "".join(f"{h}  {n}\n" for n, h in sorted(sums.items())).encode())
    return paths
