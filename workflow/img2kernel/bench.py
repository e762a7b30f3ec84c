"""Benchmarks that print figures (speed targets live here, not in timed tests)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .config import check_filters, load_yaml
from .data import sample_image_paths, to_grayscale_float32
from .filters import build_filter
from .store import CropSampler, ShardWriter, Store, split_for_keys
from .targets import compute_targets


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """Pin this process (and OpenCV) to a single CPU for the duration."""
    saved_affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    saved_threads = cv2.getNumThreads()
    if saved_affinity is not None:
        os.sched_setaffinity(0, {min(saved_affinity)})
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(saved_threads)
        if saved_affinity is not None:
            os.sched_setaffinity(0, saved_affinity)


def build_sample_store(folder: str | Path, dtype: str = "float32") -> Path:
    """An inputs store of the scikit-image sample photos, without img2dataset (for benchmarks)."""
    paths = sample_image_paths()
    keys = [f"{i:06d}" for i in range(len(paths))]
    split = split_for_keys(keys, 0.15, 0.15, 0)
    with ShardWriter(Path(folder) / "00000.tar", dtype=dtype) as writer:
        for key, path in zip(keys, paths):
            writer.add(key, to_grayscale_float32(cv2.imread(str(path), cv2.IMREAD_UNCHANGED)), split[key])
    return Path(folder)


@contextlib.contextmanager
def inputs_store(path: str | Path | None) -> Iterator[Path]:
    """The given inputs store, or a temporary one of the sample photos when it does not exist."""
    if path is not None and Path(path).is_dir():
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="img2kernel-bench-") as tmp:
        yield build_sample_store(Path(tmp) / "inputs")


def bench_crops(store_path: str | Path | None, size: int = 128, batch: int = 64, seconds: float = 3.0) -> dict:
    """Random size x size float32 crops per second from the store, on one core."""
    with inputs_store(store_path) as path, one_core():
        store = Store(path)
        sampler = CropSampler([a for _, a in store.items()], size=size, seed=0)
        buffer = np.empty((batch, size, size), np.float32)
        sampler.sample(batch, out=buffer)  # page the store in
        crops, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            sampler.sample(batch, out=buffer)
            crops += batch
        elapsed = time.perf_counter() - start
        return {"store": str(path), "images": len(store), "crop": size, "batch": batch, "crops_per_second": crops / elapsed}


def bench_targets(store_path: str | Path | None, filters_file: str | Path, repeats: int = 7) -> list[dict]:
    """Per filter: MP/s of the store write path (read, filter, write shard) next to bare cv2.filter2D.

    Also the filter's own OpenCV call on the in-memory arrays, which for sobel_magnitude
    (two Sobels and a magnitude) and median is more work than one filter2D.
    """
    specs = check_filters(load_yaml(filters_file), str(filters_file))
    rows = []
    with inputs_store(store_path) as path, one_core(), tempfile.TemporaryDirectory(prefix="img2kernel-bench-") as out:
        images = [np.array(a) for _, a in Store(path).items()]
        megapixels = sum(a.size for a in images) / 1e6
        for spec in specs:
            filt = build_filter(spec)
            kernel = (filt.kernels[0] if filt.kernels else np.ones((filt.ksize, filt.ksize))).astype(np.float32)
            # Interleaved, best of `repeats`: a shared machine's noise only ever slows a run down.
            bare, opencv, store = np.inf, np.inf, np.inf
            for _ in range(repeats):
                bare = min(bare, _timed(lambda: [cv2.filter2D(a, cv2.CV_32F, kernel) for a in images]))
                opencv = min(opencv, _timed(lambda: [filt.apply(a) for a in images]))
                # A fresh folder each time, as in the pipeline (Snakemake clears outputs first):
                # replacing an existing shard would also time the freeing of the old one.
                target = Path(tempfile.mkdtemp(dir=out))
                store = min(store, _timed(lambda: compute_targets(path, target, spec)))
                shutil.rmtree(target)
            rows.append(
                {
                    "filter": spec["name"],
                    "store_mp_per_s": megapixels / store,
                    "filter2d_mp_per_s": megapixels / bare,
                    "store_vs_filter2d": bare / store,
                    "same_op_in_memory_mp_per_s": megapixels / opencv,
                }
            )
    return rows


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
