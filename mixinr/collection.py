"""Compressing a whole collection: split it into groups, encode each group into its own archive
(in-process, in a small process pool, or as Ray tasks), and write a manifest that maps every image
to its archive.

Groups are independent, so they are the unit of work, retry and resume:
- a task gets only paths and settings (`GroupTask`), reads its images itself, writes its archive
  atomically and returns a small summary; nothing large crosses process or machine boundaries;
- a task that raises is retried (`retries` times), then recorded in the manifest as failed;
- an archive that exists and is valid (checksum included) and holds the group's images is never
  rewritten: a rerun skips it (or, without a matching manifest entry, only measures it);
- the manifest is rewritten atomically after every finished group, so an interrupted run leaves a
  manifest that describes exactly the archives on disk.

Encoding is made reproducible across executors by running every task with the same number of
torch threads (`threads`, default 1): the same seed then gives byte-identical archives whether the
group ran in-process, in a pool process or on a Ray worker.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from mixinr import jsonout
from mixinr.errors import MixinrError
from mixinr.images import IMAGE_SUFFIXES, atomic_write
from mixinr.validate import check_config, check_output_dir

GROUPINGS = ("folder", "stride", "detail")
EXECUTORS = ("local", "ray")
MANIFEST = "manifest.json"
MANIFEST_FORMAT, MANIFEST_VERSION = "mixinr-manifest", 1
# EncodeConfig fields that do not change what is written, so a rerun may change them freely.
_RUNTIME_FIELDS = ("device", "progress")


@dataclass
class CollectionConfig:
    """How to split a collection and where to run its groups. `encode` is a codec.EncodeConfig."""

    group_size: int
    grouping: str = "folder"  # see make_groups: "folder", "stride" or "detail"
    encode: Any = None  # codec.EncodeConfig; None -> EncodeConfig()
    executor: str = "local"
    workers: int = 1  # local: processes working at once (1 = in this process)
    ray_address: str | None = None  # None: RAY_ADDRESS if set, else a local Ray runtime for the run
    gpus_per_group: float = 0.0  # Ray: GPUs requested by each task (fractions share a GPU)
    threads: int = 1  # torch threads per group (and Ray CPUs per task)
    retries: int = 2  # extra attempts for a group whose task raised
    progress: bool | None = None  # None: a bar only when stderr is a terminal

    def __post_init__(self):
        if self.group_size < 1:
            raise MixinrError(f"--group-size {self.group_size}: must be at least 1")
        if self.grouping not in GROUPINGS:
            raise MixinrError(f"--grouping {self.grouping}: must be one of {', '.join(GROUPINGS)}")
        if self.executor not in EXECUTORS:
            raise MixinrError(f"--executor {self.executor}: must be one of {', '.join(EXECUTORS)}")
        if self.workers < 1:
            raise MixinrError(f"--workers {self.workers}: must be at least 1")
        if self.threads < 1:
            raise MixinrError(f"--threads {self.threads}: must be at least 1")
        if self.retries < 0:
            raise MixinrError(f"--retries {self.retries}: must be 0 or more")
        if self.gpus_per_group < 0:
            raise MixinrError(f"--gpus-per-group {self.gpus_per_group}: must be 0 or more")
        if self.gpus_per_group and self.executor != "ray":
            raise MixinrError("--gpus-per-group: only with --executor ray (locally, use --device cuda)")
        if self.workers > 1 and self.executor == "ray":
            raise MixinrError("--workers: only with --executor local (Ray runs as many groups as it has CPUs)")
        if self.ray_address and self.executor != "ray":
            raise MixinrError("--ray-address: only with --executor ray")


@dataclass(frozen=True)
class Group:
    """One group: its archive's file name and its images (relative names and absolute paths)."""

    index: int
    names: tuple[str, ...]  # paths relative to the collection ("cat/0.png"): the manifest's names
    paths: tuple[str, ...]

    @property
    def archive(self) -> str:
        return archive_name(self.index)

    @property
    def stored_names(self) -> tuple[str, ...]:
        """The names inside the archive, which must be plain file names: "cat/0.png" -> "cat__0.png"."""
        return tuple(stored_name(n) for n in self.names)


@dataclass(frozen=True)
class GroupTask:
    """Everything a task needs, and nothing heavy: it reads the images itself."""

    index: int
    archive: str  # absolute path of the archive to write
    paths: tuple[str, ...]
    names: tuple[str, ...]  # as stored in the archive
    encode: Any  # codec.EncodeConfig
    threads: int = 1


@dataclass
class CollectionResult:
    manifest: dict
    manifest_path: Path
    encoded: int = 0  # groups whose task ran and succeeded
    reused: int = 0  # groups skipped because a valid archive and manifest entry were there
    failed: int = 0
    seconds: float = 0.0

    @property
    def groups(self) -> int:
        return len(self.manifest["groups"])

    def summary(self) -> dict:
        done = [g for g in self.manifest["groups"] if g["status"] == "done"]
        total_bytes = sum(g["bytes"] for g in done)
        pixels = sum(g["pixels"] for g in done)
        return {
            "manifest": str(self.manifest_path),
            "groups": self.groups,
            "images": sum(len(g["images"]) for g in self.manifest["groups"]),
            "encoded": self.encoded,
            "reused": self.reused,
            "failed": self.failed,
            "bytes": total_bytes,
            "bpp": 8.0 * total_bytes / pixels if pixels else None,
            # The seed's convention: PSNR averaged over a group's images, then over groups.
            "psnr_mean": _mean([g["psnr_mean"] for g in done]),
            "seconds": round(self.seconds, 3),
            "groups_per_minute": round(60.0 * self.encoded / self.seconds, 3) if self.seconds > 0 else None,
        }


def archive_name(index: int) -> str:
    return f"group-{index:04d}.mixinr"


def stored_name(name: str) -> str:
    """An archive holds plain file names (decode writes them as files): folders become "__"."""
    return name.replace("/", "__")


# ---------------------------------------------------------------------------------------------
# Grouping


def list_collection(input_dir, exclude=None) -> list[tuple[str, Path]]:
    """(relative posix name, path) of every image under `input_dir`, recursively, sorted by name.

    Hidden files and folders are skipped, and so is `exclude` (an output folder inside the input).
    Linked folders are followed, each real folder once (so a link loop ends)."""
    root = Path(input_dir)
    if not root.exists():
        raise MixinrError(f"{root}: no such folder")
    if not root.is_dir():
        raise MixinrError(f"{root}: not a folder")
    skip = Path(exclude).resolve() if exclude is not None else None
    found = []
    seen = {root.resolve()}  # linked folders are followed (datasets are often linked), each once
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        keep = []
        for d in dirnames:
            real = (here / d).resolve()
            if not d.startswith(".") and real != skip and real not in seen:
                seen.add(real)
                keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            path = here / name
            if not name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES:
                found.append((path.relative_to(root).as_posix(), path))
    if not found:
        raise MixinrError(f"{root}: holds no images")
    return sorted(found)


def make_groups(items: list[tuple[str, Path]], group_size: int, grouping: str = "folder",
                detail: Callable[[Path], float] | None = None) -> list[Group]:
    """Split sorted (name, path) items into groups of at most `group_size` images.

    - "folder": each folder on its own (folders never mix), its images in name order, cut into
      consecutive runs of `group_size` (the last run of a folder may be shorter). Folders are
      taken in name order, so group numbers follow the sorted listing.
    - "stride": the seed's striding over the whole sorted list: with G = ceil(M / group_size)
      groups, group i takes items[i::G] (sizes differ by at most one; each group samples the
      whole collection instead of a run of neighbours).
    - "detail": the seed's frequency striding: the same striding over the images sorted from
      smooth to detailed by `detail(path)` (default `detail_score`, which reads every image once).
      Within a group, images stay in that order.
    """
    items = sorted(items)
    if grouping == "detail":
        score = detail or detail_score
        items = sorted(items, key=lambda item: (score(item[1]), item[0]))
        grouping = "stride"
    if grouping == "folder":
        by_folder: dict[str, list] = {}
        for name, path in items:
            by_folder.setdefault(name.rpartition("/")[0], []).append((name, path))
        runs = [
            members[start : start + group_size]
            for folder in sorted(by_folder)
            for members in [by_folder[folder]]
            for start in range(0, len(members), group_size)
        ]
    elif grouping == "stride":
        g = math.ceil(len(items) / group_size)
        runs = [items[i::g] for i in range(g)]
    else:
        raise MixinrError(f"--grouping {grouping}: must be one of {', '.join(GROUPINGS)}")
    groups = [
        Group(i, tuple(n for n, _ in run), tuple(str(Path(p).resolve()) for _, p in run))
        for i, run in enumerate(runs)
    ]
    for group in groups:
        stored = group.stored_names
        if len(set(stored)) < len(stored):
            clash = next(n for n in group.names if stored.count(stored_name(n)) > 1)
            raise MixinrError(f"{clash}: its archive name {stored_name(clash)!r} clashes with another "
                              "image of the same group; rename one of them")
    return groups


def detail_score(path) -> float:
    """How detailed an image is: mean absolute difference between neighbouring pixels (luma, 8-bit
    scale, both directions). The seed's own measure is not published; on the six Kodak images
    here this order matches its SORTED_FREQ except for two swaps of neighbours."""
    import numpy as np

    from mixinr.images import read_image

    luma = read_image(path).astype(np.float32).mean(axis=2)
    dy = float(np.abs(np.diff(luma, axis=0)).mean()) if luma.shape[0] > 1 else 0.0
    dx = float(np.abs(np.diff(luma, axis=1)).mean()) if luma.shape[1] > 1 else 0.0
    return dy + dx


# ---------------------------------------------------------------------------------------------
# The task (runs wherever the executor puts it)


def encode_group(task: GroupTask) -> dict:
    """Encode one group into its archive and return its summary.

    Idempotent: if the archive is already there, valid and holds these images (a retried task whose
    first attempt wrote it, or a rerun without a manifest entry), it is measured, not rewritten."""
    from mixinr.codec import archive_from_bytes, encode
    from mixinr.images import read_image
    from mixinr.metrics import psnr

    start = time.perf_counter()
    images = [read_image(p) for p in task.paths]
    existing = _valid_archive(Path(task.archive), task.names)
    if existing is not None:
        data = existing
        archive = archive_from_bytes(data, task.archive)
        psnrs = [psnr(archive.decode(i), im) for i, im in enumerate(images)]
        reused = True
    else:
        result = encode(images, list(task.names), replace(task.encode, progress=False))
        atomic_write(task.archive, result.data)
        data, psnrs, reused = result.data, [im.psnr for im in result.images], False
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    return {
        "index": task.index,
        "bytes": len(data),
        "pixels": pixels,
        "psnrs": [float(p) for p in psnrs],
        "measured_existing": reused,
        "seconds": time.perf_counter() - start,
    }


def _valid_archive(path: Path, names) -> bytes | None:
    """The archive's bytes if it exists, parses and validates (checksum included); None if it is
    missing or broken (so it may be written). A valid archive of other images is an error: it is a
    finished archive of some other run, and finished archives are never overwritten."""
    from mixinr.codec import archive_from_bytes

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        archive = archive_from_bytes(data, str(path))
    except Exception:  # whatever the parser trips on, it is not a finished archive
        return None
    if list(archive.names) != list(names):
        raise MixinrError(
            f"{path}: holds other images ({', '.join(archive.names[:3])}, ...) than this run puts in "
            "that group (did the input change?); use a new output folder"
        )
    return data


def _call(fn: Callable[[GroupTask], dict], task: GroupTask) -> dict:
    """The function every executor runs: `fn(task)` with the task's torch thread count."""
    from mixinr.model import using_threads

    with using_threads(task.threads):
        return fn(task)


# ---------------------------------------------------------------------------------------------
# Executors: each calls on_done(task, summary, error) once per task, as tasks finish.


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _run_in_process(tasks, fn, retries, on_done):
    for task in tasks:
        for attempt in range(retries + 1):
            try:
                summary = _call(fn, task)
            except Exception as e:  # a KeyboardInterrupt stops the run instead
                if attempt == retries:
                    on_done(task, None, _error_text(e))
            else:
                on_done(task, summary, None)
                break


def _run_pool(tasks, fn, retries, workers, on_done):
    """A small process pool. 'spawn', not 'fork': forking a process that already runs torch's
    thread pools can deadlock. A crashed worker breaks the pool; it is rebuilt and the tasks that
    were running are charged one attempt each (which of them crashed it is unknown)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")
    queue = [(task, 0) for task in tasks]
    queue.reverse()  # pop() from the end keeps group order
    running: dict = {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    finished_normally = False
    try:
        while queue or running:
            while queue and len(running) < workers:
                task, attempt = queue.pop()
                running[pool.submit(_call, fn, task)] = (task, attempt)
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            broken = False
            for future in finished:
                task, attempt = running.pop(future)
                try:
                    summary = future.result()
                except BrokenProcessPool as e:
                    broken = True
                    _retry_or_fail(queue, task, attempt, retries, e, on_done)
                except Exception as e:
                    _retry_or_fail(queue, task, attempt, retries, e, on_done)
                else:
                    on_done(task, summary, None)
            if broken:
                for future, (task, attempt) in running.items():
                    _retry_or_fail(queue, task, attempt, retries, RuntimeError("worker process crashed"), on_done)
                running.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        finished_normally = True
    finally:
        # Interrupted: do not wait for running groups (Ctrl-C reached the workers too).
        pool.shutdown(wait=finished_normally, cancel_futures=True)


def _retry_or_fail(queue, task, attempt, retries, exc, on_done):
    if attempt < retries:
        queue.append((task, attempt + 1))
    else:
        on_done(task, None, _error_text(exc))


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MixinrError("--executor ray: Ray is not installed (pip install 'mixinr[ray]')") from None
    return ray


@contextlib.contextmanager
def _ray_session(cfg: CollectionConfig):
    """Ray, connected: --ray-address, else RAY_ADDRESS (set by `ray job submit`), else a new local
    runtime (never whatever cluster happens to run on this machine). An already initialised Ray
    (a notebook, a test) is used as it is. What this starts or joins, it leaves afterwards."""
    import logging

    ray = _import_ray()
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS") or "local"
    owned = not ray.is_initialized()
    if owned:
        where = "--executor ray" if address == "local" else (
            f"--ray-address {address}" if cfg.ray_address else f"RAY_ADDRESS={address}")
        _probe(address, where)
        try:
            if "://" in address:  # Ray Client takes fewer options
                ray.init(address=address)
            elif address == "local":
                ray.init(address="local", include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            else:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise MixinrError(f"{where}: cannot start or reach Ray ({_error_text(e)})") from None
    try:
        if cfg.gpus_per_group and ray.cluster_resources().get("GPU", 0) < cfg.gpus_per_group:
            # Such tasks would wait forever. A cluster named by address may be autoscaling and
            # still add GPU nodes, so there it is only a warning.
            message = f"--gpus-per-group {cfg.gpus_per_group:g}: the Ray cluster has no such GPUs"
            if address == "local":
                raise MixinrError(message)
            import warnings

            warnings.warn(message + "; tasks wait until GPU nodes join", stacklevel=3)
        yield ray
    finally:
        if owned:
            ray.shutdown()


def _probe(address: str, where: str) -> None:
    """Fail fast on an unreachable HOST:PORT: Ray itself keeps retrying for minutes."""
    import socket

    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # "local", "auto": Ray resolves those
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise MixinrError(f"{where}: cannot reach {host}:{port} ({e.strerror or type(e).__name__})") from None


def _run_ray(ray, tasks, fn, cfg: CollectionConfig, on_done):
    """One Ray task per group, asking for `threads` CPUs and `gpus_per_group` GPUs. Ray retries a
    task that raised (or whose worker or node died) `retries` times."""
    refs: dict = {}
    try:
        remote = ray.remote(_call).options(
            num_cpus=cfg.threads,
            num_gpus=cfg.gpus_per_group,
            max_retries=cfg.retries,
            retry_exceptions=True,
        )
        fn_ref = ray.put(fn)
        refs = {remote.remote(fn_ref, task): task for task in tasks}
        pending = list(refs)
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            for ref in finished:
                task = refs.pop(ref)
                try:
                    summary = ray.get(ref)
                except Exception as e:  # RayTaskError wraps the task's own exception as .cause
                    on_done(task, None, _error_text(getattr(e, "cause", None) or e))
                else:
                    on_done(task, summary, None)
    finally:
        for ref in refs:  # interrupted: stop what is still queued or running
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)


# ---------------------------------------------------------------------------------------------
# The manifest


def settings_of(cfg: CollectionConfig) -> dict:
    """What decides the archives' contents; a rerun into the same folder must use the same."""
    # The nested settings (schedule, rate control, ...) only where they differ from their defaults, so
    # manifests of runs with the defaults stay as they were; JSON's view, as a rerun reads it back.
    defaults = type(cfg.encode)()
    enc = {f.name: getattr(cfg.encode, f.name) for f in fields(cfg.encode) if f.name not in _RUNTIME_FIELDS}
    enc = {k: asdict(v) if is_dataclass(v) else v for k, v in enc.items()
           if not (is_dataclass(v) and v == getattr(defaults, k))}
    enc = json.loads(json.dumps(enc))
    if enc.get("psnr") is None:
        enc.pop("psnr", None)  # a field newer than the first manifests: those still resume
    return {"grouping": cfg.grouping, "group_size": cfg.group_size, "encode": enc}


def build_manifest(groups: list[Group], results: dict[int, dict], settings: dict) -> dict:
    """The manifest of the groups that have a result so far, in group order.

    results[i] is {"status": "done", "bytes", "pixels", "psnrs"} or {"status": "failed", "error"}.
    Images of failed groups are listed under their group only: they have no archive to decode."""
    out_groups, out_images = [], []
    for group in groups:
        r = results.get(group.index)
        if r is None:
            continue
        if r["status"] == "done":
            bpp = 8.0 * r["bytes"] / r["pixels"]
            out_groups.append({
                "archive": group.archive, "status": "done", "error": None, "bytes": r["bytes"],
                "pixels": r["pixels"], "bpp": bpp, "psnr_mean": _mean(r["psnrs"]), "images": list(group.names),
            })
            out_images.extend(
                {"name": n, "archive": group.archive, "index": i, "psnr": p, "bpp": bpp}
                for i, (n, p) in enumerate(zip(group.names, r["psnrs"]))
            )
        else:
            out_groups.append({
                "archive": group.archive, "status": "failed", "error": r["error"], "bytes": None,
                "pixels": None, "bpp": None, "psnr_mean": None, "images": list(group.names),
            })
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "settings": settings,
        "groups": out_groups,
        "images": out_images,
    }


def read_manifest(path, text: bytes | None = None) -> dict:
    """A manifest file (or its bytes already read, `text`), checked for its format marker and version;
    MixinrError naming the file otherwise. The one reader: `mixinr decode` uses it too."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_bytes() if text is None else text)
    except FileNotFoundError:
        raise MixinrError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MixinrError(f"{path}: not a mixinr manifest (bad JSON: {e.msg if hasattr(e, 'msg') else e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise MixinrError(f"{path}: not a mixinr manifest (no \"format\": \"{MANIFEST_FORMAT}\")")
    if manifest.get("version") != MANIFEST_VERSION:
        raise MixinrError(f"{path}: manifest version {manifest.get('version')} is not supported")
    return manifest


def manifest_images(path, manifest: dict) -> list[dict]:
    """The images a manifest read from `path` lists: [{name, archive (a Path beside it), index}], each
    entry checked."""
    path = Path(path)
    images = manifest.get("images")
    if not isinstance(images, list):
        raise MixinrError(f"{path}: manifest has no image list")
    out = []
    for e in images:
        if not (isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("archive"), str)
                and isinstance(e.get("index"), int) and e["index"] >= 0):
            raise MixinrError(f"{path}: malformed manifest entry {e!r:.80}")
        out.append({"name": e["name"], "archive": path.parent / e["archive"], "index": e["index"]})
    return out


def _previous_results(manifest: dict) -> dict[str, dict]:
    """archive name -> done result, from an earlier run's manifest."""
    psnrs: dict[str, list] = {}
    for im in manifest.get("images", []):
        psnrs.setdefault(im["archive"], []).append(im["psnr"])
    return {
        g["archive"]: {"status": "done", "bytes": g["bytes"], "pixels": g["pixels"],
                       "psnrs": psnrs.get(g["archive"], []), "images": g["images"]}
        for g in manifest.get("groups", []) if g.get("status") == "done"
    }


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------------------------------------
# The run


def encode_collection(input_dir, out_dir, cfg: CollectionConfig,
                      task_fn: Callable[[GroupTask], dict] = encode_group) -> CollectionResult:
    """Encode every group of `input_dir` into `out_dir`, resuming what an earlier run finished.

    `task_fn` is what runs per group (encode_group; tests pass a wrapper that fails on purpose).
    It must be importable by name in worker processes (a module-level function)."""
    if cfg.encode is None:
        from mixinr.settings import EncodeConfig

        cfg = replace(cfg, encode=EncodeConfig())
    check_config(cfg.encode)  # before any manifest is written: a rerun with corrected settings must not find one
    if cfg.executor == "ray":
        _import_ray()  # fail before any work when the extra is missing
    out = Path(out_dir)
    check_output_dir(out)
    groups = make_groups(list_collection(input_dir, exclude=out), cfg.group_size, cfg.grouping)
    settings = settings_of(cfg)
    manifest_path = out / MANIFEST
    previous = {}
    if manifest_path.exists():
        old = read_manifest(manifest_path)
        if old.get("settings") != settings:
            raise MixinrError(
                f"{manifest_path}: written with other settings ({_diff(old.get('settings'), settings)}); "
                "use a new output folder or the same settings"
            )
        previous = _previous_results(old)

    results: dict[int, dict] = {}
    tasks = []
    for group in groups:
        path = out / group.archive
        prev = previous.get(group.archive)
        data = _existing_bytes(path, group.stored_names)
        if data is not None and prev and prev["images"] == list(group.names) and prev["bytes"] == len(data):
            results[group.index] = prev  # finished before, and the manifest says how well
        else:
            tasks.append(GroupTask(group.index, str(path.resolve()), group.paths, group.stored_names,
                                   cfg.encode, cfg.threads))
    reused = len(results)
    result = CollectionResult(manifest={}, manifest_path=manifest_path, reused=reused)

    def write():
        manifest = build_manifest(groups, results, settings)
        result.manifest = manifest
        text = jsonout.dumps(manifest, indent=1) + "\n"
        if not manifest_path.exists() or manifest_path.read_text() != text:
            atomic_write(manifest_path, text.encode())

    start = time.perf_counter()
    # Ray is started (or joined) before anything is written, and only when there is work for it.
    session = _ray_session(cfg) if cfg.executor == "ray" and tasks else contextlib.nullcontext()
    with session as ray, _GroupProgress(cfg, len(groups), results.values()) as bar:
        out.mkdir(parents=True, exist_ok=True)

        def on_done(task: GroupTask, summary: dict | None, error: str | None):
            if error is None:
                results[task.index] = {"status": "done", "bytes": summary["bytes"],
                                       "pixels": summary["pixels"], "psnrs": summary["psnrs"]}
                result.encoded += 1
            else:
                results[task.index] = {"status": "failed", "error": error}
                result.failed += 1
            write()
            bar.advance(results[task.index])

        write()
        if tasks:
            if cfg.executor == "ray":
                _run_ray(ray, tasks, task_fn, cfg, on_done)
            elif cfg.workers > 1 and len(tasks) > 1:
                _run_pool(tasks, task_fn, cfg.retries, min(cfg.workers, len(tasks)), on_done)
            else:
                _run_in_process(tasks, task_fn, cfg.retries, on_done)
    result.seconds = time.perf_counter() - start
    return result


def _existing_bytes(path: Path, names) -> bytes | None:
    return _valid_archive(path, names) if path.exists() else None


def _diff(old, new) -> str:
    if not isinstance(old, dict):
        return "none recorded"
    flat_old, flat_new = _flatten(old), _flatten(new)
    keys = [k for k in sorted(set(flat_old) | set(flat_new)) if flat_old.get(k) != flat_new.get(k)]
    return ", ".join(f"{k}: {flat_old.get(k)} -> {flat_new.get(k)}" for k in keys[:3])


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


class _GroupProgress:
    """One rich bar: groups finished, running mean PSNR (over groups) and bpp (over all bytes)."""

    def __init__(self, cfg: CollectionConfig, total: int, finished):
        show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
        self.total, self.bar = total, None
        self.psnrs, self.bytes, self.pixels, self.failed = [], 0, 0, 0
        for r in finished:
            self._add(r)
        if show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn(f"groups [{cfg.executor}]", markup=False),  # "[local]" is not a style
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[psnr]}  {task.fields[bpp]}  {task.fields[failed]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )

    def _add(self, r: dict):
        if r["status"] == "done":
            self.psnrs.append(_mean(r["psnrs"]))
            self.bytes += r["bytes"]
            self.pixels += r["pixels"]
        else:
            self.failed += 1

    def _fields(self) -> dict:
        mean = _mean(self.psnrs)
        return {
            "psnr": f"{mean:.2f} dB" if mean is not None else "-- dB",
            "bpp": f"{8.0 * self.bytes / self.pixels:.3f} bpp" if self.pixels else "-- bpp",
            "failed": f"{self.failed} failed" if self.failed else "",
        }

    def __enter__(self):
        if self.bar:
            self.bar.start()
            done = len(self.psnrs) + self.failed
            self.task = self.bar.add_task("groups", total=self.total, completed=done, **self._fields())
        return self

    def advance(self, r: dict):
        self._add(r)
        if self.bar:
            self.bar.update(self.task, advance=1, **self._fields())

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()
