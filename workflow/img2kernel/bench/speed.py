"""Benchmarks that print figures (speed targets live here, not in timed tests)."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from img2kernel.pipeline.config import check_filters, load_yaml
from img2kernel.sources.downloads import sample_image_paths, to_grayscale_float32
from img2kernel.sources.filters import build_filter
from img2kernel.store.shards import ShardWriter, Store, split_for_keys
from img2kernel.store.crops import CropSampler
from img2kernel.sources.targets import compute_targets


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


THRESHOLDS = (1e-2, 1e-3, 1e-4)


class _ThresholdProbe:
    """Records when the kernel error (relative max-abs, aligned) first falls below each threshold."""

    def __init__(self, true: np.ndarray, combine: str, output: str, stop_when_reached: bool):
        self.true, self.combine, self.output = true, combine, output
        self.stop_when_reached = stop_when_reached
        self.reached: dict[float, tuple[float, int]] = {}
        self.error = math.inf

    def __call__(self, step: int, seconds: float, kernels: np.ndarray) -> bool:
        """Record the thresholds passed; True asks the training loop to stop."""
        from img2kernel.evaluate.kernels import compare

        self.error = compare(kernels, self.true, self.combine, self.output)["max_abs_rel"]
        for threshold in THRESHOLDS:
            if self.error <= threshold and threshold not in self.reached:
                self.reached[threshold] = (seconds, step)
        return self.stop_when_reached and len(self.reached) == len(THRESHOLDS)


def public_recipe(data, budget_seconds: float, seed: int = 0, batch: int = 16, lr: float = 1e-3, device: str = "cpu") -> _ThresholdProbe:
    """The common recipe: Adam lr 1e-3 on fresh batches of 16 zero-padded 128x128 crops, plain MSE.

    ``data`` must sample crops without a halo (input and target crops cover the same pixels).
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    filt = data.filter
    probe = _ThresholdProbe(np.stack(filt.kernels), filt.combine, filt.output, stop_when_reached=True)
    torch.manual_seed(seed)
    conv = nn.Conv2d(1, 1, data.ksize, padding=data.ksize // 2, bias=False).to(device)  # zeros padding, default init
    optimizer = torch.optim.Adam(conv.parameters(), lr=lr)
    synchronize = torch.cuda.synchronize if conv.weight.is_cuda else (lambda: None)
    elapsed, step = 0.0, 0
    while elapsed < budget_seconds:
        started = time.perf_counter()
        inputs, targets = data.train.sample(batch)
        x, y = torch.from_numpy(inputs)[:, None].to(device), torch.from_numpy(targets)[:, None].to(device)
        optimizer.zero_grad()
        loss = F.mse_loss(conv(x), y)
        loss.backward()
        optimizer.step()
        synchronize()  # CUDA runs asynchronously: count the step's work, not its launch
        step += 1
        elapsed += time.perf_counter() - started
        if probe(step, elapsed, conv.weight.detach().double().cpu().numpy()[:, 0]):
            break
    probe.steps, probe.seconds = step, elapsed
    return probe


def bench_training(
    inputs_folder: str | Path,
    targets_root: str | Path,
    config_file: str | Path,
    budget_seconds: float = 30.0,
    names: list[str] | None = None,
    threads: int = 2,
    device: str = "cpu",
) -> tuple[list[dict], list[dict]]:
    """Our default next to the public recipe, per linear filter; then sobel_magnitude over 5 seeds.

    Returns (comparison rows, magnitude rows). Times are training seconds (crop sampling
    and optimisation; the error probe itself is not counted), on ``device`` ("cpu" or
    "cuda"; TF32 off there, as in the pipeline) with ``threads`` CPU threads.
    """
    from img2kernel.pipeline.config import check_config, training_settings
    from img2kernel.fit.gradient import configure_torch, resolve_device
    from img2kernel.fit.filter_job import prepare_data, train_filter

    config = check_config(load_yaml(config_file), str(config_file))
    specs = check_filters(load_yaml(config["filters"]), config["filters"], config["train"])
    configure_torch(resolve_device(device), threads)
    rows, magnitude_rows = [], []
    for spec in specs:
        if names and spec["name"] not in names:
            continue
        filt = build_filter(spec)
        settings = training_settings(config["train"], spec)
        targets = Path(targets_root) / spec["name"]
        if filt.linear:
            # Our training runs to its own stopping rule; the probe only records when it passed each threshold.
            ours = _ThresholdProbe(np.stack(filt.kernels), filt.combine, filt.output, stop_when_reached=False)
            outcome = train_filter(inputs_folder, targets, spec, settings, device=device, threads=threads,
                                   probe=lambda step, seconds, model: ours(step, seconds, model.kernels()))
            public_data = prepare_data(inputs_folder, targets, spec, {**settings, "crop_size": 128}, halo=0)
            public = public_recipe(public_data, budget_seconds, seed=settings["seed"], device=device)
            row = {"filter": spec["name"]}
            for threshold in THRESHOLDS:
                row[f"ours_{threshold:.0e}_s"] = _reached(ours, threshold)
            row["ours_steps"] = outcome.info["steps"]
            row["ours_final_error"] = outcome.info["kernel_errors"]["max_abs_rel"]
            row["oracle_error"] = outcome.info["oracle_errors"]["max_abs_rel"]
            for threshold in THRESHOLDS:
                row[f"public_{threshold:.0e}_s"] = _reached(public, threshold, budget_seconds)
            row["public_steps"] = public.steps
            row["public_final_error"] = public.error
            row["speedup_at_1e-4"] = _speedup(ours, public, budget_seconds)
            row["device"] = outcome.info["device"]
            rows.append(row)
        elif filt.combine == "magnitude":
            for seed in range(5):
                outcome = train_filter(inputs_folder, targets, spec, {**settings, "seed": seed}, device=device, threads=threads)
                errors = outcome.info["kernel_errors"]
                magnitude_rows.append(
                    {
                        "filter": spec["name"],
                        "seed": seed,
                        "seconds": outcome.info["seconds"],
                        "steps": outcome.info["steps"],
                        "aligned_rel_error": errors["max_abs_rel"],
                        "within_1e-3": errors["max_abs_rel"] <= 1e-3,
                    }
                )
    return rows, magnitude_rows


def _reached(probe: _ThresholdProbe, threshold: float, budget: float | None = None) -> str:
    if threshold in probe.reached:
        return f"{probe.reached[threshold][0]:.2f}"
    return f"not in {budget:g}" if budget else "not reached"


def _speedup(ours: _ThresholdProbe, public: _ThresholdProbe, budget: float) -> str:
    if 1e-4 not in ours.reached:
        return "ours not reached"
    mine = ours.reached[1e-4][0]
    if 1e-4 in public.reached:
        return f"{public.reached[1e-4][0] / mine:.0f}x"
    return f">{budget / mine:.0f}x"


class PeakMemory:
    """Peak resident memory of this process while the block runs, in MB.

    ``rss_mb``: the kernel's high-water mark (VmHWM), file pages a memory map touched
    included. ``anon_mb``: the peak of anonymous memory (RssAnon, sampled every 10 ms),
    what has to fit in RAM; mapped file pages are page cache, written back and evicted
    under pressure. Linux only (zeros elsewhere).
    """

    def __enter__(self) -> "PeakMemory":
        import threading

        self.anon_mb = self.rss_mb = 0.0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    @staticmethod
    def _status() -> dict[str, float]:
        try:
            with open("/proc/self/status") as status:
                return {line.split(":")[0]: int(line.split()[1]) / 1024 for line in status if line.startswith(("VmHWM", "RssAnon"))}
        except OSError:
            return {}

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.anon_mb = max(self.anon_mb, self._status().get("RssAnon", 0.0))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._sampler.join()
        status = self._status()
        self.anon_mb = max(self.anon_mb, status.get("RssAnon", 0.0))
        self.rss_mb = status.get("VmHWM", 0.0)


def _measured(fn) -> dict:
    """Seconds, peak RSS and peak anonymous memory (MB) of one call of ``fn``."""
    with PeakMemory() as memory:
        seconds = _timed(fn)
    return {"seconds": seconds, "peak_rss_mb": memory.rss_mb, "peak_anon_mb": memory.anon_mb}


def _apply_worker(path: str, kernel: np.ndarray, tile: int, workers: int, queue) -> None:
    """In a fresh process: tiled apply over a memory-mapped .npy into memory."""
    from img2kernel.apply import apply_tiled
    from img2kernel.models import AffineKernel

    image = np.load(path, mmap_mode="r")
    model = AffineKernel(kernel[None])
    queue.put(_measured(lambda: apply_tiled(image, model, tile=tile, workers=workers)))


def _apply_file_worker(model: str, path: str, tile: int, workers: int, queue) -> None:
    """In a fresh process: `img2kernel apply MODEL in.npy out.npy`, the output memory-mapped too."""
    from img2kernel.apply import apply_to_file

    destination = str(Path(path).with_name("filtered.npy"))
    measured = _measured(lambda: apply_to_file(model, path, destination, tile=tile, workers=workers))
    os.unlink(destination)
    queue.put(measured)


def _filter2d_worker(path: str, kernel: np.ndarray, queue) -> None:
    """In a fresh process: np.load the whole image, then one cv2.filter2D; both timed."""
    with PeakMemory() as memory:
        started = time.perf_counter()
        image = np.load(path)
        loaded = time.perf_counter()
        cv2.filter2D(image, cv2.CV_32F, kernel[0].astype(np.float32))
        finished = time.perf_counter()
    queue.put({"seconds": finished - loaded, "load_seconds": loaded - started, "peak_rss_mb": memory.rss_mb,
               "peak_anon_mb": memory.anon_mb})


def bench_apply(size: int = 20000, tile: int = 1024, ksize: int = 3, workers: int | None = None) -> dict:
    """Tiled apply of a K x K kernel on a generated size x size float32 image, next to cv2.filter2D.

    Each run is its own process on the same .npy file: tiled apply into memory on one
    thread and on ``workers`` threads (default: the usable CPUs), reading the memory-mapped
    file tile by tile; `img2kernel apply` from that .npy to a .npy (both memory-mapped);
    and cv2.filter2D on the whole image after np.load, timed without and with the load.
    Returns per run seconds, MP/s, peak RSS and peak anonymous memory in MB (see PeakMemory).
    """
    import multiprocessing

    from img2kernel.apply import usable_cpus
    from img2kernel.models import AffineKernel

    workers = workers or usable_cpus()
    kernel = np.random.default_rng(0).standard_normal((1, ksize, ksize))
    context = multiprocessing.get_context("spawn")
    megapixels = size * size / 1e6
    rows = []
    with tempfile.TemporaryDirectory(prefix="img2kernel-bench-") as folder:
        path = str(Path(folder) / "image.npy")
        model = str(Path(folder) / "kernel.safetensors")
        AffineKernel(kernel[None]).save(model)
        image = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(size, size))
        rng = np.random.default_rng(1)
        for row in range(0, size, 1024):  # written in bands: never the whole image in memory
            band = image[row : row + 1024]
            band[:] = rng.integers(0, 256, band.shape)
        image.flush()
        del image
        jobs = [
            (f"tiled apply to memory, tile {tile}, 1 thread", _apply_worker, (path, kernel, tile, 1)),
            (f"tiled apply to memory, tile {tile}, {workers} threads", _apply_worker, (path, kernel, tile, workers)),
            (f"img2kernel apply .npy to .npy, {workers} threads", _apply_file_worker, (model, path, tile, workers)),
            ("cv2.filter2D, whole image in memory", _filter2d_worker, (path, kernel)),
        ]
        for label, target, args in jobs:
            queue = context.Queue()
            process = context.Process(target=target, args=(*args, queue))
            process.start()
            measured = queue.get()
            process.join()
            runs = [(label, measured["seconds"])]
            if "load_seconds" in measured:
                runs.append(("np.load + cv2.filter2D", measured["seconds"] + measured["load_seconds"]))
            for run, seconds in runs:
                rows.append({"run": run, "seconds": seconds, "mp_per_s": megapixels / seconds,
                             "peak_rss_mb": measured["peak_rss_mb"], "peak_anon_mb": measured["peak_anon_mb"]})
    return {"size": size, "tile": tile, "ksize": ksize, "image_mb": size * size * 4 / 2**20, "rows": rows}


def build_generated_pair_store(folder: str | Path, shards: int = 16, per_shard: int = 8, side: int = 1024) -> tuple[Path, Path]:
    """Paired inputs and Sobel-x targets stores of noise images, ``shards`` shards each (for benchmarks)."""
    folder = Path(folder)
    filt = build_filter({"name": "sobel_x", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 3, "output": "float"})
    rng = np.random.default_rng(0)
    for shard in range(shards):
        name = f"{shard:05d}.tar"
        with ShardWriter(folder / "inputs" / name) as inputs, ShardWriter(folder / "targets" / name) as targets:
            for i in range(per_shard):
                image = rng.random((side, side), dtype=np.float32) * 255
                split = "val" if i == 0 else "train"
                inputs.add(f"{shard:04d}{i:04d}", image, split)
                targets.add(f"{shard:04d}{i:04d}", filt.apply(image), split)
    return folder / "inputs", folder / "targets"


def _evict_from_page_cache(folder: Path) -> None:
    """Ask the kernel to drop the store's cached pages (clean pages; no root needed)."""
    for path in folder.rglob("*.tar"):
        with open(path, "rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def bench_streaming(crop: int = 64, ksizes: tuple[int, ...] = (3, 7), batch: int = 64, threads: int = 2, seconds: float = 2.0) -> list[dict]:
    """Crops/s the streaming reader delivers next to crops/s a training step consumes.

    Read: :class:`StoreCropSampler` drawing ``batch`` (input, target) crop pairs at a time
    from a generated 16-shard store of 1 GiB (inputs and targets), one core: with a mapping
    budget that holds the store, with the default budget (a quarter of it, so shards are
    unmapped and mapped again on every draw), and with the default budget right after the
    store was evicted from the page cache. Consumed: forward and backward passes of the
    model on whitened crops (one loss and gradient evaluation per crop: what an L-BFGS
    function evaluation or an Adam step costs), ``threads`` torch threads as in training.
    """
    import torch

    from img2kernel.fit.learnable import LearnableKernel
    from img2kernel.store.crops import MAPPED_BUDGET_MB, StoreCropSampler
    from img2kernel.fit.gradient import Crops, relative_mse

    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="img2kernel-bench-") as tmp:
        inputs_path, targets_path = build_generated_pair_store(tmp)
        store_mb = sum(p.stat().st_size for p in Path(tmp).rglob("*.tar")) / 2**20
        for ksize in ksizes:
            halo = ksize // 2
            size = crop + 2  # whitening takes one pixel off every side
            side = size + 2 * halo
            buffers = np.empty((batch, side, side), np.float32), np.empty((batch, size, size), np.float32)
            rates = {}
            for case, budget in (("fits", 2 * store_mb), ("default", MAPPED_BUDGET_MB), ("cold", MAPPED_BUDGET_MB)):
                sampler = StoreCropSampler(Store(inputs_path), Store(targets_path), "train", size, halo, seed=0, mapped_budget_mb=budget)
                if case == "cold":
                    _evict_from_page_cache(Path(tmp))
                else:
                    sampler.sample(batch, *buffers)
                count, start = 0, time.perf_counter()
                with one_core():
                    while time.perf_counter() - start < seconds:
                        sampler.sample(batch, *buffers)
                        count += batch
                rates[case] = count / (time.perf_counter() - start)
                sampler.release()
            crops = Crops.from_arrays(*buffers, whiten=True)
            model = LearnableKernel(ksize)
            relative_mse(model, crops).backward()  # warm-up
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                model.zero_grad()
                relative_mse(model, crops).backward()
                count += batch
            consumed = count / (time.perf_counter() - start)
            rows.append(
                {
                    "ksize": ksize,
                    "crop": crop,
                    "store_mb": round(store_mb),
                    "read_store_mapped": rates["fits"],
                    f"read_budget_{MAPPED_BUDGET_MB}mb": rates["default"],
                    "read_after_cache_evict": rates["cold"],
                    "consumed": consumed,
                    "slowest_read_over_consumed": min(rates.values()) / consumed,
                }
            )
    return rows
