"""encode-collection: grouping, manifest, executors (in-process, process pool, Ray), retries,
failures recorded in the manifest, resume after an interrupted or damaged run, one-line errors.

Every run uses the same tiny collection (five 8x8 images in two folders -> three groups of at most
two) and a tiny network, so a run takes seconds. The Ray tests share one local Ray runtime with two
CPUs for the whole module and are skipped only when `ray` is not installed.
"""

import importlib.util
import json
import os
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mixinr.cli import main
from mixinr.codec import Archive, EncodeConfig
from mixinr.collection import (
    MANIFEST,
    CollectionConfig,
    encode_collection,
    encode_group,
    list_collection,
    make_groups,
)
from mixinr.errors import MixinrError
from mixinr.images import read_image, write_png
from mixinr.metrics import psnr

from conftest import smooth_image

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'mixinr[ray]')")

# What `mixinr encode-collection --depth 2 --width 8 --epochs 40 --device cpu` asks for.
ENC = EncodeConfig(depth=2, width=8, epochs=40, seed=0, device="cpu", progress=False)
CLI_ENC = ["--depth", "2", "--width", "8", "--epochs", "40", "--device", "cpu"]


def _config(**kw) -> CollectionConfig:
    return CollectionConfig(**{"group_size": 2, "encode": ENC, "progress": False, **kw})


def _make_collection(root: Path) -> Path:
    """a/0..2.png and b/0..1.png, plus a hidden file and a non-image that must be ignored."""
    for folder, count in (("a", 3), ("b", 2)):
        for i in range(count):
            write_png(root / folder / f"{i}.png", smooth_image(8, 8, 10 * len(folder) + i + ord(folder)))
    (root / "a" / "notes.txt").write_text("not an image")
    write_png(root / "b" / ".hidden.png", smooth_image(8, 8, 99))
    return root


def _files(out: Path) -> dict[str, bytes]:
    """The run's output (archives and manifest), ignoring the marker files the task functions leave."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix == ".mixinr" or p.name == MANIFEST}


def _manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One in-process run of the collection: (input folder, output folder, its files)."""
    root = tmp_path_factory.mktemp("collection")
    src = _make_collection(root / "in")
    result = encode_collection(src, root / "out", _config())
    assert result.encoded == 3 and result.failed == 0
    return src, root / "out", _files(root / "out")


@pytest.fixture(scope="module")
def ray_runtime():
    """A local Ray runtime with 2 CPUs, started once for the module (start-up takes seconds)."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'mixinr[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024**2)
    # Ray workers cannot import this test module by name (tests/ is not on their path): ship the
    # task functions below by value instead.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


# Task functions the runs execute instead of encode_group. Module level: Ray and the process pool
# import them by name in their worker processes. They keep their state in files beside the archives
# (a worker's memory does not survive a retry in another process).


def fail_once(task):
    """The first attempt of every group raises; the next ones encode."""
    marker = Path(task.archive).with_suffix(".failed-once")
    if not marker.exists():
        marker.write_text("attempt 1 failed")
        raise RuntimeError(f"injected failure of group {task.index}")
    return encode_group(task)


def crash_or_fail_once(task):
    """First attempts: group 0 kills its worker process, the others raise; then they encode."""
    marker = Path(task.archive).with_suffix(".failed-once")
    if not marker.exists():
        marker.write_text("attempt 1 failed")
        if task.index == 0:
            os._exit(3)
        raise RuntimeError(f"injected failure of group {task.index}")
    return encode_group(task)


def fail_group_1(task):
    """Group 1 always raises (each attempt is counted in a file); the others encode."""
    if task.index == 1:
        counter = Path(task.archive).with_suffix(".attempts")
        counter.write_text(str(int(counter.read_text()) + 1 if counter.exists() else 1))
        raise ValueError("injected permanent failure")
    return encode_group(task)


def interrupt_at_group_1(task):
    """Ctrl-C while group 1 is being encoded."""
    if task.index == 1:
        raise KeyboardInterrupt
    return encode_group(task)


def record_runs(task):
    """Encode, noting which groups ran."""
    Path(task.archive).with_suffix(".ran").write_text("ran")
    return encode_group(task)


# ---------------------------------------------------------------------------------------------


def test_grouping_by_folder_and_by_stride(tmp_path):
    """folder: sorted runs within each folder; stride: group i of G takes sorted images[i::G]."""
    items = list_collection(_make_collection(tmp_path / "in"))
    assert [n for n, _ in items] == ["a/0.png", "a/1.png", "a/2.png", "b/0.png", "b/1.png"]
    by_folder = make_groups(items, 2, "folder")
    assert [g.names for g in by_folder] == [("a/0.png", "a/1.png"), ("a/2.png",), ("b/0.png", "b/1.png")]
    assert [g.archive for g in by_folder] == ["group-0000.mixinr", "group-0001.mixinr", "group-0002.mixinr"]
    assert all(Path(p).is_absolute() for g in by_folder for p in g.paths)
    names = [f"{i:02d}.png" for i in range(7)]
    stride = make_groups([(n, Path(n)) for n in reversed(names)], 3, "stride")
    assert [g.names for g in stride] == [tuple(names[i::3]) for i in range(3)]
    assert [len(g.names) for g in make_groups([(n, Path(n)) for n in names], 7, "stride")] == [7]
    # Linked folders are followed once (a link back up ends there); an output folder inside is skipped.
    write_png(tmp_path / "elsewhere" / "x.png", smooth_image(8, 8, 5))
    os.symlink(tmp_path / "elsewhere", tmp_path / "in" / "linked")
    os.symlink(tmp_path / "in", tmp_path / "in" / "a" / "loop")
    write_png(tmp_path / "in" / "out" / "decoded.png", smooth_image(8, 8, 6))
    names_now = [n for n, _ in list_collection(tmp_path / "in", exclude=tmp_path / "in" / "out")]
    assert names_now == ["a/0.png", "a/1.png", "a/2.png", "b/0.png", "b/1.png", "linked/x.png"]
    assert by_folder[0].stored_names == ("a__0.png", "a__1.png")  # archives hold plain file names
    with pytest.raises(MixinrError, match="a/b.png: its archive name 'a__b.png' clashes"):
        make_groups([("a/b.png", Path("x")), ("a__b.png", Path("y"))], 2, "stride")


def test_detail_grouping_strides_from_smooth_to_detailed(tmp_path):
    """detail: images sorted by detail_score (flat < smooth < smooth+noise < noise), then group i
    of G takes that list's [i::G], so each group mixes smooth and detailed images."""
    import numpy as np

    rng = np.random.default_rng(0)
    smooth = smooth_image(16, 16, 1)
    noisy = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
    images = {"a.png": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "b.png": np.full((16, 16, 3), 128, np.uint8),
              "c.png": noisy, "d.png": smooth}
    for name, im in images.items():
        write_png(tmp_path / name, im)
    groups = make_groups(list_collection(tmp_path), 2, "detail")
    assert [g.names for g in groups] == [("b.png", "c.png"), ("d.png", "a.png")]


def test_local_run_writes_valid_archives_and_manifest(reference):
    """Each archive holds its group's images; the manifest's bytes, bpp and PSNR are the real ones."""
    src, out, files = reference
    manifest = _manifest(out)
    assert manifest["format"] == "mixinr-manifest" and manifest["version"] == 1
    assert sorted(files) == ["group-0000.mixinr", "group-0001.mixinr", "group-0002.mixinr", MANIFEST]
    assert [g["images"] for g in manifest["groups"]] == [["a/0.png", "a/1.png"], ["a/2.png"], ["b/0.png", "b/1.png"]]
    by_name = {im["name"]: im for im in manifest["images"]}
    assert sorted(by_name) == ["a/0.png", "a/1.png", "a/2.png", "b/0.png", "b/1.png"]
    for group in manifest["groups"]:
        data = files[group["archive"]]
        archive = Archive.from_bytes(data, group["archive"])
        assert group["status"] == "done" and group["error"] is None
        assert list(archive.names) == [n.replace("/", "__") for n in group["images"]]  # plain file names
        assert group["bytes"] == len(data)
        assert group["bpp"] == pytest.approx(len(data) * 8 / (64 * len(group["images"])))
        for index, name in enumerate(group["images"]):
            entry = by_name[name]
            assert (entry["archive"], entry["index"]) == (group["archive"], index)
            assert entry["psnr"] == pytest.approx(psnr(archive.decode(index), read_image(src / name)), abs=1e-6)
        assert group["psnr_mean"] == pytest.approx(sum(by_name[n]["psnr"] for n in group["images"]) / len(group["images"]))


def test_pool_with_retries_equals_in_process(reference, tmp_path):
    """Two worker processes; every group fails once first, one by killing its worker process (the
    pool is rebuilt, the tasks it ran are charged an attempt): retried, byte-identical to in-process."""
    src, _, files = reference
    result = encode_collection(src, tmp_path / "out", _config(workers=2, retries=2), task_fn=crash_or_fail_once)
    assert (result.encoded, result.failed) == (3, 0)
    assert len(list((tmp_path / "out").glob("*.failed-once"))) == 3  # the failures did happen
    assert _files(tmp_path / "out") == files


@needs_ray
def test_ray_executor_equals_local_retries_and_resumes(reference, ray_runtime, tmp_path):
    """On a 2-CPU local Ray runtime (one test, so that parallel test workers start Ray only once):
    1. one task per group: the same archives and manifest as in-process (and a GPU request the
       runtime cannot meet is refused instead of waiting forever);
    2. every task raising on its first attempt: Ray's retries finish the run, same output;
    3. a group failing every attempt: recorded as failed with its error, the others finish;
       rerunning resumes that group only and ends with the same output."""
    src, _, files = reference
    plain = encode_collection(src, tmp_path / "plain", _config(executor="ray"))
    assert (plain.encoded, plain.failed) == (3, 0)
    assert _files(tmp_path / "plain") == files
    assert ray_runtime.is_initialized()  # an existing runtime is used, not shut down
    with pytest.raises(MixinrError, match="--gpus-per-group 1: the Ray cluster has no such GPUs"):
        encode_collection(src, tmp_path / "gpu", _config(executor="ray", gpus_per_group=1))

    retried = encode_collection(src, tmp_path / "retried", _config(executor="ray", retries=1), task_fn=fail_once)
    assert (retried.encoded, retried.failed) == (3, 0)
    assert len(list((tmp_path / "retried").glob("*.failed-once"))) == 3  # the failures did happen
    assert _files(tmp_path / "retried") == files

    out = tmp_path / "failing"
    failing = encode_collection(src, out, _config(executor="ray", retries=1), task_fn=fail_group_1)
    assert (failing.encoded, failing.failed) == (2, 1)
    assert (out / "group-0001.attempts").read_text() == "2"
    group = _manifest(out)["groups"][1]
    assert group["status"] == "failed" and group["error"] == "ValueError: injected permanent failure"
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mixinr")}
    resumed = encode_collection(src, out, _config(executor="ray"), task_fn=record_runs)
    assert (resumed.encoded, resumed.reused, resumed.failed) == (1, 2, 0)
    assert sorted(p.name for p in out.glob("*.ran")) == ["group-0001.ran"]
    assert {n: (out / n).stat().st_mtime_ns for n in mtimes} == mtimes
    assert _files(out) == files


def test_failed_group_is_recorded_then_resumed(reference, tmp_path):
    """A group failing every attempt is recorded as failed (its images are not decodable); a rerun
    encodes only that group and ends with the reference output, the others untouched."""
    src, _, files = reference
    out = tmp_path / "out"
    result = encode_collection(src, out, _config(retries=2), task_fn=fail_group_1)
    assert (result.encoded, result.failed) == (2, 1)
    assert (out / "group-0001.attempts").read_text() == "3"
    manifest = _manifest(out)
    assert [g["status"] for g in manifest["groups"]] == ["done", "failed", "done"]
    assert manifest["groups"][1]["error"] == "ValueError: injected permanent failure"
    assert "a/2.png" not in {im["name"] for im in manifest["images"]}
    assert not (out / "group-0001.mixinr").exists()
    before = {n: (out / n).stat().st_mtime_ns for n in ("group-0000.mixinr", "group-0002.mixinr")}

    rerun = encode_collection(src, out, _config(), task_fn=record_runs)
    assert (rerun.encoded, rerun.reused, rerun.failed) == (1, 2, 0)
    assert sorted(p.name for p in out.glob("*.ran")) == ["group-0001.ran"]
    assert {n: (out / n).stat().st_mtime_ns for n in before} == before
    assert _files(out) == files


def test_interrupted_run_resumes(reference, tmp_path):
    """Ctrl-C during group 1 leaves group 0's archive and a manifest naming only it; the rerun
    encodes groups 1 and 2 and leaves group 0 as it was."""
    src, _, files = reference
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        encode_collection(src, out, _config(), task_fn=interrupt_at_group_1)
    assert [g["archive"] for g in _manifest(out)["groups"]] == ["group-0000.mixinr"]
    assert sorted(p.name for p in out.glob("*.mixinr")) == ["group-0000.mixinr"]
    assert not list(out.glob(".*.tmp"))  # no partial file left behind
    mtime = (out / "group-0000.mixinr").stat().st_mtime_ns

    rerun = encode_collection(src, out, _config(), task_fn=record_runs)
    assert (rerun.encoded, rerun.reused) == (2, 1)
    assert sorted(p.name for p in out.glob("*.ran")) == ["group-0001.ran", "group-0002.ran"]
    assert (out / "group-0000.mixinr").stat().st_mtime_ns == mtime
    assert _files(out) == files


def test_rerun_replaces_only_missing_or_corrupt_archives(reference, tmp_path):
    """Delete one archive, flip a byte of another (checksum fails): only those two are encoded again."""
    src, ref_out, files = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    (out / "group-0000.mixinr").unlink()
    damaged = bytearray(files["group-0002.mixinr"])
    damaged[len(damaged) // 2] ^= 0x40
    (out / "group-0002.mixinr").write_bytes(bytes(damaged))
    with pytest.raises(MixinrError):
        Archive.from_bytes(bytes(damaged), "damaged")
    mtime = (out / "group-0001.mixinr").stat().st_mtime_ns

    rerun = encode_collection(src, out, _config(), task_fn=record_runs)
    assert (rerun.encoded, rerun.reused, rerun.failed) == (2, 1, 0)
    assert sorted(p.name for p in out.glob("*.ran")) == ["group-0000.ran", "group-0002.ran"]
    assert (out / "group-0001.mixinr").stat().st_mtime_ns == mtime
    assert _files(out) == files


def test_valid_archive_without_manifest_entry_is_measured_not_rewritten(reference, tmp_path):
    """Archives whose manifest is gone are kept as they are; the rebuilt manifest is the same."""
    src, ref_out, files = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    (out / MANIFEST).unlink()
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mixinr")}
    rerun = encode_collection(src, out, _config())
    assert (rerun.encoded, rerun.reused) == (3, 0)  # tasks ran, but only measured the archives
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mixinr")} == mtimes
    assert _files(out) == files


def test_progress_bar_shows_groups_mean_psnr_and_bpp(reference, tmp_path, capsys):
    """The one bar (on stderr) counts groups and shows the running mean PSNR and bpp."""
    src, ref_out, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    (out / "group-0001.mixinr").unlink()
    result = encode_collection(src, out, _config(progress=True))
    s = result.summary()
    err = capsys.readouterr().err
    assert "groups [local]" in err and "3/3" in err
    assert f"{s['psnr_mean']:.2f} dB" in err and f"{s['bpp']:.3f} bpp" in err


def test_rerun_with_other_settings_is_refused(reference, tmp_path):
    """A folder encoded with one seed is not silently mixed with archives of another."""
    src, ref_out, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    with pytest.raises(MixinrError, match=r"manifest\.json: written with other settings \(encode\.seed: 0 -> 1\)"):
        encode_collection(src, out, _config(encode=replace(ENC, seed=1)))


def test_cli_matches_api_and_prints_json(reference, tmp_path, capsys):
    """`mixinr encode-collection ... --json` writes the same archives and manifest as the API run."""
    src, _, files = reference
    out = tmp_path / "out"
    code = main(["encode-collection", str(src), "-o", str(out), "--group-size", "2", *CLI_ENC, "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert (payload["groups"], payload["images"], payload["encoded"], payload["failed"]) == (3, 5, 3, 0)
    assert payload["bytes"] == sum(len(v) for k, v in files.items() if k.endswith(".mixinr"))
    assert _files(out) == files


def test_cli_reports_an_unreadable_image_as_a_failed_group(reference, tmp_path, capsys):
    """A corrupt file fails its group only: the manifest says why, the rest is encoded, exit 1."""
    src, _, files = reference
    shutil.copytree(src, tmp_path / "in")
    (tmp_path / "in" / "b" / "1.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    code = main(["encode-collection", str(tmp_path / "in"), "-o", str(out), "--group-size", "2", *CLI_ENC,
                 "--retries", "0", "--json"])
    assert code == 1
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert (payload["encoded"], payload["failed"]) == (2, 1)
    assert payload["failures"][0]["archive"] == "group-0002.mixinr"
    assert "b/1.png: not a readable image" in payload["failures"][0]["error"]
    assert "1 of 3 groups failed" in captured.err
    assert _manifest(out)["groups"][2]["status"] == "failed"
    assert {k: v for k, v in _files(out).items() if k != MANIFEST} == {
        k: v for k, v in files.items() if k in ("group-0000.mixinr", "group-0001.mixinr")}


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", r"missing: no such folder"),
        ("empty", r"empty: holds no images"),
        ("file", r"file: not a folder"),
        ("size", r"--group-size 0: must be at least 1"),
        ("gpus", r"--gpus-per-group: only with --executor ray"),
        ("ray", r"--executor ray: Ray is not installed \(pip install 'mixinr\[ray\]'\)"),
        ("address-local", r"--ray-address: only with --executor ray"),
        ("workers-ray", r"--workers: only with --executor local"),
        pytest.param("unreachable", r"--ray-address 127\.0\.0\.1:1: cannot reach 127\.0\.0\.1:1", marks=needs_ray),
    ],
)
def test_cli_errors_are_one_line(case, message, tmp_path, capsys, monkeypatch):
    """User errors: exit 2 and one line on stderr naming the problem, no traceback, nothing written."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    (tmp_path / "file").write_text("x")
    write_png(tmp_path / "ok" / "0.png", smooth_image(8, 8, 0))
    argv = {
        "missing": [str(tmp_path / "missing")],
        "empty": [str(tmp_path / "empty")],
        "file": [str(tmp_path / "file")],
        "size": [str(tmp_path / "ok"), "--group-size", "0"],
        "gpus": [str(tmp_path / "ok"), "--gpus-per-group", "1"],
        "ray": [str(tmp_path / "ok"), "--executor", "ray"],
        "address-local": [str(tmp_path / "ok"), "--ray-address", "auto"],
        "workers-ray": [str(tmp_path / "ok"), "--executor", "ray", "--workers", "2"],
        # Nothing listens on port 1: refused at once, before Ray spends minutes retrying.
        "unreachable": [str(tmp_path / "ok"), "--executor", "ray", "--ray-address", "127.0.0.1:1"],
    }[case]
    if case == "ray":
        monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    if case == "unreachable":  # as in a fresh process, even after this module's Ray test
        monkeypatch.setattr(importlib.import_module("ray"), "is_initialized", lambda: False)
    if "--group-size" not in argv:
        argv += ["--group-size", "2"]
    code = main(["encode-collection", *argv, "-o", str(tmp_path / "out"), *CLI_ENC])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("mixinr: error: ")
    assert re.search(message, err)
    assert not (tmp_path / "out").exists()


def test_manifest_names_nested_encoder_settings_only_when_not_default():
    """A manifest's settings name a nested encoder setting (rate control, fine-tuning, ...) only when it
    differs from its default (so manifests of default runs read as before), in the form a rerun reads
    back from JSON, so the rerun's comparison of settings holds."""
    from mixinr.codec import QatConfig
    from mixinr.collection import CollectionConfig, settings_of

    plain = settings_of(CollectionConfig(group_size=4, encode=EncodeConfig()))
    assert not {"schedule", "rules", "rate", "qat"} & set(plain["encode"])
    tuned = settings_of(CollectionConfig(group_size=4, encode=EncodeConfig(qat=QatConfig(stages=(0.5,)))))
    assert tuned["encode"]["qat"]["stages"] == [0.5] and json.loads(json.dumps(tuned)) == tuned
    assert EncodeConfig(**tuned["encode"]).qat == QatConfig(stages=(0.5,))
