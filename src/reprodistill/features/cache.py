"""On-disk cache of fixed-view teacher features, so a frozen FM pass over a data set is paid once, not per run.

Key = SHA-256 of (teacher identity incl. weights, teacher preprocessing, the split's content, load size/channels,
view id, format version). A changed teacher, data set or transform gives a new key, so stale features are never
reused. Entries are fp16 ``.npy`` files read memory-mapped, written atomically, with a JSON sidecar that is checked
on read (shape, dtype) so a truncated or foreign file is recomputed instead of trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from reprodistill.data.dataset import ImageDataset
from reprodistill.errors import ReprodistillError
from reprodistill.models.teacher import Teacher
from reprodistill.util.checkpoint import atomic_write, write_json
from reprodistill.util.lock import FolderLock

log = logging.getLogger("reprodistill")
FORMAT_VERSION = 1
# Temp files of interrupted writes older than this are removed when the cache is next opened (a younger one may
# belong to a process writing right now).
STALE_TEMP_S = 3600.0
# What a user sets when the cache folder cannot be written.
CACHE_SETTING = "teacher.cache_dir (or teacher.cache_dir=null to turn the cache off)"


def user_cache_root() -> Path:
    """``$XDG_CACHE_HOME`` (default ``~/.cache``), as the XDG base-directory spec says."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()


def resolve_cache_dir(cache_dir: Optional[str]) -> Optional[Path]:
    """The feature cache folder of ``teacher.cache_dir`` ('auto' = the XDG default), or None when caching is off."""
    if not cache_dir:
        return None
    if cache_dir == "auto":
        return user_cache_root() / "reprodistill" / "features"
    return Path(cache_dir).expanduser()


def check_writable(folder: Path, setting: str) -> None:
    """Stop with what to set when ``folder`` cannot be created or written (before any expensive work)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ReprodistillError(
            f"{folder} is not writable ({e.strerror or e}); set {setting} to a folder you can write to"
        ) from None


def remove_stale_temp_files(folder: Path, older_than_s: float = STALE_TEMP_S) -> int:
    """Delete leftover ``.<name>.*.tmp`` files of interrupted atomic writes; returns how many."""
    now, n = time.time(), 0
    for p in folder.glob(".*.tmp"):
        try:
            if now - p.stat().st_mtime > older_than_s:
                p.unlink()
                n += 1
        except OSError:
            pass
    return n


def split_fingerprint(dataset: ImageDataset) -> str:
    """Content hash of a split as the dataset serves it: pixels (or file names, sizes, mtimes) and labels."""
    h = hashlib.sha256()
    s = dataset.split
    h.update(np.ascontiguousarray(s.labels).tobytes())
    if s.images is not None:
        h.update(str(s.images.shape).encode())
        h.update(np.ascontiguousarray(s.images).tobytes())
    for p in s.paths or []:
        st = os.stat(p)
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(f"{dataset.size}:{dataset.channels}".encode())
    return h.hexdigest()


def cache_key(teacher: Teacher, dataset: ImageDataset, kind: str, view: str = "fixed") -> str:
    desc = json.dumps(
        {
            "teacher": teacher.identity,
            "spec": teacher.spec.describe(),
            "data": split_fingerprint(dataset),
            "kind": kind,
            "view": view,
            "version": FORMAT_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(desc.encode()).hexdigest()[:32]


def cached_features(
    teacher: Teacher,
    dataset: ImageDataset,
    cache_dir: Optional[str],
    compute: Callable[[], torch.Tensor],
    kind: str = "pooled",
    name: str = "",
    timings: Optional[dict[str, float]] = None,
    view: str = "fixed",
) -> torch.Tensor:
    """Features (fp16 tensor) from the cache if a valid entry exists, else ``compute()`` and store them.

    Features are kept in fp16 in memory too (maps of a whole data set are large); the training loop casts each
    batch to fp32. ``timings[name]`` receives the seconds the FM pass took (measured now, or when the entry was
    made), so the transfer cost of a method is known even when its features come from the cache.
    """
    timings = {} if timings is None else timings
    root = resolve_cache_dir(cache_dir)
    if root is None:
        t0 = time.perf_counter()
        out = compute().half()
        timings[name] = time.perf_counter() - t0
        return out
    key = cache_key(teacher, dataset, kind, view)
    npy, meta = root / f"{key}.npy", root / f"{key}.json"
    hit = _read_entry(npy, meta, len(dataset), f"{kind}/{name}")
    if hit is None:
        check_writable(root, CACHE_SETTING)
        remove_stale_temp_files(root)
        # one process computes an entry; another that needs it meanwhile waits and then reads it
        with FolderLock(root, f".{key}.lock", wait=True):
            hit = _read_entry(npy, meta, len(dataset), f"{kind}/{name}")
            if hit is None:
                return _compute_entry(npy, meta, compute, timings, name, teacher, kind, view)
    features, timings[name] = hit
    return features


def _read_entry(npy: Path, meta: Path, n_images: int, what: str) -> Optional[tuple[torch.Tensor, float]]:
    """A valid cache entry's features (memory-mapped) and the seconds they took to compute, else None."""
    if not (npy.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text())
        arr = np.load(npy, mmap_mode="r")
        if list(arr.shape) == info["shape"] and arr.shape[0] == n_images and str(arr.dtype) == "float16":
            log.info("teacher features %s: cache hit %s", what, npy)
            # memory-mapped copy-on-write: pages are read on first use and shared by every process of the machine
            # (torchrun ranks), and the OS may drop them under memory pressure
            features = torch.from_numpy(np.load(npy, mmap_mode="c"))
            return features, float(info.get("compute_seconds", float("nan")))
        log.warning(
            "teacher features %s: cache entry %s has shape %s for %d images; recomputing",
            what,
            npy,
            list(arr.shape),
            n_images,
        )
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        log.warning("teacher features %s: unreadable cache entry %s (%s); recomputing", what, npy, e)
    return None


def _compute_entry(
    npy: Path,
    meta: Path,
    compute: Callable[[], torch.Tensor],
    timings: dict[str, float],
    name: str,
    teacher: Teacher,
    kind: str,
    view: str,
) -> torch.Tensor:
    """Run the FM pass and store its fp16 features atomically (array first, then the sidecar that validates it)."""
    t0 = time.perf_counter()
    half = compute().numpy().astype(np.float16)
    timings[name] = time.perf_counter() - t0
    log.info("teacher features %s/%s: computed in %.1f s, stored in %s", kind, name, timings[name], npy)

    def save(path: str) -> None:
        with open(path, "wb") as f:
            np.save(f, half)

    atomic_write(npy, save)
    write_json(
        meta,
        {
            "shape": list(half.shape),
            "dtype": "float16",
            "teacher": teacher.identity,
            "kind": kind,
            "split": name,
            "view": view,
            "compute_seconds": timings[name],
        },
    )
    # hand back the fp16-rounded values, so a first run and a cached rerun train on identical inputs
    return torch.from_numpy(half)
