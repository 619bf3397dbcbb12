"""Dataset loaders and grouping: CIFAR-10 batches (real pickle structure, restricted unpickling) and
class folders, Kodak (portrait rotation, SORTED_FREQ groups), ImageNet class folders, and the
checksummed downloads (file:// URLs and a fake fetcher; the network is never used)."""

import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from mixinr import data
from mixinr.errors import MixinrError
from mixinr.images import read_image, write_png


def _batch(n: int, seed: int):
    """A batch dict with the official structure: bytes keys, data N x 3072 uint8 channel-major."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = [int(x) for x in rng.integers(0, 3, n)]
    entry = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": labels,
        b"data": images.transpose(0, 3, 1, 2).reshape(n, 3072).copy(),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    return entry, images, labels


def _write_batch(path, entry):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(entry, protocol=2))  # protocol 2, as the Python 2 originals


def test_cifar_batch_layout_and_first_n_per_class(tmp_path):
    """Channel-major rows become (32, 32, 3) images; each class keeps its first N in file order."""
    entry, images, labels = _batch(30, 0)
    _write_batch(tmp_path / "cifar-10-batches-py" / "test_batch", entry)
    got, got_labels = data.read_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch")
    assert got.shape == (30, 32, 32, 3) and np.array_equal(got, images) and got_labels == labels
    groups = data.load_cifar10(tmp_path, classes=[0, 1, 2], per_class=3)
    for c in (0, 1, 2):
        expected = [i for i, lab in enumerate(labels) if lab == c][:3]
        assert groups[c].names == [f"test_batch_{i:05d}.png" for i in expected]
        assert all(np.array_equal(a, images[i]) for a, i in zip(groups[c].images, expected))
    # The batch folder itself can be given too.
    same = data.load_cifar10(tmp_path / "cifar-10-batches-py", classes=[1], per_class=3)
    assert same[1].names == groups[1].names


def test_cifar_train_split_reads_five_batches(tmp_path):
    """split='train' concatenates data_batch_1..5 in order."""
    all_images = []
    for i in range(1, 6):
        entry, images, labels = _batch(4, i)
        entry[b"labels"] = [0] * 4
        _write_batch(tmp_path / "cifar-10-batches-py" / f"data_batch_{i}", entry)
        all_images.append(images)
    g = data.load_cifar10(tmp_path, classes=[0], split="train")[0]
    assert len(g.images) == 20 and np.array_equal(g.images[4], all_images[1][0])


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_hostile_pickle_is_refused(tmp_path):
    """A batch file that would call os.system is rejected with a one-line error naming the file."""
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2))
    with pytest.raises(MixinrError, match="test_batch: not a CIFAR-10 batch.*os|posix|system"):
        data.read_cifar_batch(path)


def test_malformed_batch_errors(tmp_path):
    """Wrong structure or a truncated file gives MixinrError, not a traceback."""
    bad = tmp_path / "test_batch"
    bad.write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, protocol=2))
    with pytest.raises(MixinrError, match="N x 3072"):
        data.read_cifar_batch(bad)
    entry, *_ = _batch(3, 0)
    bad.write_bytes(pickle.dumps(entry, protocol=2)[:200])
    with pytest.raises(MixinrError, match="not a CIFAR-10 batch"):
        data.read_cifar_batch(bad)


def test_cifar_class_folders(tmp_path):
    """`<root>/<class>/<file>.png`, classes by index or name, files sorted by name, first N."""
    rng = np.random.default_rng(1)
    for cls in ("0", "automobile"):
        for name in ("b.png", "a.png", "c.png"):
            write_png(tmp_path / cls / name, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    groups = data.load_cifar10(tmp_path, classes=[0, 1], per_class=2)
    assert groups[0].names == ["a.png", "b.png"] and groups[1].names == ["a.png", "b.png"]
    assert np.array_equal(groups[1].images[0], read_image(tmp_path / "automobile" / "a.png"))
    with pytest.raises(MixinrError, match="class 5"):
        data.load_cifar10(tmp_path, classes=[5])


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_kodak_portrait_rotated_and_resized(tmp_path):
    """A portrait kodim becomes landscape by np.rot90; sizes other than the target are resized."""
    land, port = _rgb(8, 12, 0), _rgb(12, 8, 1)
    write_png(tmp_path / "kodim01.png", land)
    write_png(tmp_path / "kodim04.png", port)
    write_png(tmp_path / "notkodak.png", land)
    imgs = data.load_kodak(tmp_path, size=(8, 12))
    assert sorted(imgs) == [0, 3]
    assert np.array_equal(imgs[0][1], land)
    assert np.array_equal(imgs[3][1], np.rot90(port))
    small = data.load_kodak(tmp_path, size=(4, 6))
    assert small[3][1].shape == (4, 6, 3)
    with pytest.raises(MixinrError, match="missing: no such folder"):
        data.load_kodak(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MixinrError, match="empty: no kodim"):
        data.load_kodak(tmp_path / "empty")


def test_kodak_groups_follow_sorted_freq():
    """Group g of size N is SORTED_FREQ[g::24//N]; every image is in exactly one group per N."""
    assert data.kodak_group_indices(6)[1] == [19, 9, 15, 18, 13, 4]
    for n in (2, 3, 4, 6, 12):
        groups = data.kodak_group_indices(n)
        assert len(groups) == 24 // n and all(len(g) == n for g in groups)
        assert sorted(i for g in groups for i in g) == list(range(24))
    with pytest.raises(MixinrError):
        data.kodak_group_indices(5)


def test_kodak_groups_with_missing_images_warn():
    """With only some images present, groups keep those (in SORTED_FREQ order) and warn."""
    present = {i: (f"kodim{i + 1:02d}.png", _rgb(2, 3, i)) for i in (2, 11, 7, 5, 19)}
    with pytest.warns(UserWarning) as record:
        groups = data.kodak_groups(present, 6)
    messages = [str(w.message) for w in record]
    assert any("group 0 of N=6: missing kodim15, kodim11" in m for m in messages)
    assert any("group(s) 2, 3 present; left out" in m for m in messages)
    # N=6 groups: [11, 2, 14, 5, 10, 7], [19, 9, 15, 18, 13, 4], two with none present.
    assert [g.names for g in groups] == [["kodim12.png", "kodim03.png", "kodim06.png", "kodim08.png"],
                                         ["kodim20.png"]]
    assert groups[0].label == "11_2_5_7" and groups[1].key == "N=6/g=1"


def test_imagenet_classes_slice_and_resize(tmp_path):
    """Classes are sorted(listdir)[20:100]; images resized to size x size unless already that size."""
    for c in range(23):
        (tmp_path / f"n{c:03d}").mkdir()
    write_png(tmp_path / "n021" / "b.png", _rgb(30, 40, 0))
    write_png(tmp_path / "n021" / "a.png", _rgb(16, 16, 1))
    assert data.imagenet_classes(tmp_path) == ["n020", "n021", "n022"]
    assert len(data.imagenet_classes(tmp_path, None)) == 23
    g = data.load_imagenet_class(tmp_path, "n021", n=5, size=16)
    assert g.names == ["a.png", "b.png"] and all(im.shape == (16, 16, 3) for im in g.images)
    assert np.array_equal(g.images[0], read_image(tmp_path / "n021" / "a.png"))
    with pytest.raises(MixinrError, match="no class folders"):
        data.imagenet_classes(tmp_path, (30, 40))


def _cifar_archive(tmp_path, extra=()):
    """A .tar.gz with the official member names; returns (bytes, {name: md5})."""
    buf = io.BytesIO()
    sums = {}
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i, name in enumerate(data.CIFAR10_BATCH_MD5):
            payload = pickle.dumps(_batch(4, i)[0], protocol=2)
            sums[name] = hashlib.md5(payload).hexdigest()
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for name, payload in extra:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue(), sums


def test_download_cifar10_from_file_url(tmp_path, monkeypatch):
    """A file:// archive with matching checksums is unpacked; entries outside the folder are ignored."""
    archive, sums = _cifar_archive(tmp_path, extra=[("../escape.txt", b"x")])
    src = tmp_path / "src" / "cifar.tar.gz"
    src.parent.mkdir()
    src.write_bytes(archive)
    monkeypatch.setattr(data, "CIFAR10_BATCH_MD5", sums)
    dest = data.download_cifar10(tmp_path / "d", url=src.as_uri(), md5=hashlib.md5(archive).hexdigest())
    assert sorted(p.name for p in dest.iterdir()) == sorted(sums)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "d" / "escape.txt").exists()
    assert len(data.load_cifar10(tmp_path / "d", classes=[0, 1, 2], split="train")[0].images) > 0
    # Already there and intact: nothing is fetched.
    data.download_cifar10(tmp_path / "d", fetcher=lambda url: pytest.fail("fetched again"))


def test_download_cifar10_checksum_and_unreachable(tmp_path, monkeypatch):
    """A wrong archive checksum, a corrupt member, or an unreachable URL is a one-line MixinrError."""
    archive, sums = _cifar_archive(tmp_path)
    src = tmp_path / "cifar.tar.gz"
    src.write_bytes(archive)
    with pytest.raises(MixinrError, match="checksum mismatch"):
        data.download_cifar10(tmp_path / "d", url=src.as_uri())
    monkeypatch.setattr(data, "CIFAR10_BATCH_MD5", {**sums, "test_batch": "0" * 32})
    with pytest.raises(MixinrError, match="test_batch missing or corrupt"):
        data.download_cifar10(tmp_path / "d", url=src.as_uri(), md5=hashlib.md5(archive).hexdigest())
    assert not (tmp_path / "d" / "cifar-10-batches-py").exists()
    with pytest.raises(MixinrError, match="cannot download"):
        data.download_cifar10(tmp_path / "d", url=(tmp_path / "absent.tar.gz").as_uri())


def test_download_kodak_records_and_checks_digests(tmp_path):
    """24 files fetched and size-checked; SHA256SUMS written; a changed file is reported."""
    img = Image.new("RGB", (768, 512), (10, 20, 30))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    urls = []
    paths = data.download_kodak(tmp_path, fetcher=lambda url: urls.append(url) or buf.getvalue())
    assert len(paths) == 24 and urls[0] == "http://r0k.us/graphics/kodak/kodak/kodim01.png"
    assert len((tmp_path / "SHA256SUMS").read_text().splitlines()) == 24
    data.download_kodak(tmp_path, fetcher=lambda url: pytest.fail("fetched again"))
    write_png(tmp_path / "kodim07.png", _rgb(512, 768, 0))
    with pytest.raises(MixinrError, match="kodim07.png: SHA-256"):
        data.download_kodak(tmp_path)
    wrong = io.BytesIO()
    Image.new("RGB", (10, 10)).save(wrong, format="PNG")
    with pytest.raises(MixinrError, match="not a Kodak image"):
        data.download_kodak(tmp_path / "other", fetcher=lambda url: wrong.getvalue())
