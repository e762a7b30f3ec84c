"""The data stage: URL lists, img2dataset downloads, and the grayscale inputs store.

The embedded default is every photo that ships inside scikit-image's wheel, listed as
``file://`` URLs (see :mod:`img2kernel.sources.urls`), so the pipeline runs with no network. img2dataset downloads into
webdataset shards with lossless settings (PNG, no re-encode of a PNG unless resizing);
the inputs store then holds each image as grayscale float32, same keys and shard
numbers as img2dataset's, each image decoded by the one reader (:mod:`img2kernel.images`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tarfile
from collections import Counter
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from img2kernel.store.shards import ShardWriter, split_for_keys

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


class DownloadError(RuntimeError):
    """Not a single image downloaded: there is nothing to learn from."""


@contextlib.contextmanager
def img2dataset_environment(parent: str | Path | None = None) -> Iterator[None]:
    """Run img2dataset with its optional services off and its temporary files contained.

    img2dataset imports wandb, which makes two temporary folders in every process that
    imports it; the worker processes exit without removing theirs. Here every process of
    the download makes them in one folder (TMPDIR) inside ``parent``, removed when the
    download is done; a killed download's is removed with its stale work folder.
    """
    import tempfile

    folder = tempfile.mkdtemp(prefix="img2kernel-img2dataset-", dir=parent)
    saved = {name: os.environ.get(name) for name in ("TMPDIR", "WANDB_MODE", "NO_ALBUMENTATIONS_UPDATE")}
    saved_tempdir = tempfile.tempdir
    os.environ.update(TMPDIR=folder, WANDB_MODE="disabled", NO_ALBUMENTATIONS_UPDATE="1")
    tempfile.tempdir = folder
    try:
        yield
    finally:
        tempfile.tempdir = saved_tempdir
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


def sample_image_paths() -> list[Path]:
    """The photos inside scikit-image's wheel (``skimage/data/*.png|*.jpg``), sorted by name."""
    import skimage.data

    root = Path(skimage.data.__file__).parent
    return sorted(p for p in root.iterdir() if p.suffix.lower() in (".png", ".jpg"))


def download_fingerprint(url_table: str | Path, settings: dict) -> str:
    """xxh3-64 of the URL list and the download settings: which partial download a rerun may resume."""
    import pandas as pd
    import xxhash

    digest = xxhash.xxh3_64(json.dumps(settings, sort_keys=True).encode())
    for url in pd.read_parquet(url_table, columns=["url"])["url"]:
        digest.update(url.encode() + b"\n")
    return digest.hexdigest()


def download(
    url_table: str | Path,
    output_folder: str | Path,
    work_root: str | Path,
    *,
    shard_size: int = 10000,
    timeout: float = 10,
    retries: int = 2,
    processes: int = 1,
    threads: int = 8,
) -> dict:
    """Download a URL table (parquet, 'url' column) with img2dataset into webdataset shards.

    Bytes are kept as served (img2dataset's ``disable_all_reencoding``): decoding, alpha,
    16-bit depth, EXIF orientation, the size limits and resizing are the inputs store's,
    through the one reader every stage uses (:mod:`img2kernel.images`). Failures are counted
    by reason, never fatal; the summary is also written to ``<output_folder>/summary.json``.

    Resumable: img2dataset writes into ``work_root/<fingerprint>/`` (see
    :func:`download_fingerprint`), outside the job's declared output, which Snakemake
    deletes before it reruns a killed job. A rerun with the same list and settings resumes
    there with img2dataset's incremental mode (every shard with a ``*_stats.json`` is done
    and skipped); other folders under ``work_root`` are stale and removed. When all shards
    are done the folder is renamed to ``output_folder``.
    """
    settings = {"shard_size": shard_size, "timeout": timeout, "retries": retries}
    work_root, output_folder = Path(work_root), Path(output_folder)
    work = work_root / download_fingerprint(url_table, settings)
    if work_root.is_dir():
        for stale in work_root.iterdir():
            if stale != work:
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    resumed = sorted(p.name for p in work.glob("*_stats.json")) if work.is_dir() else []
    work.mkdir(parents=True, exist_ok=True)
    with img2dataset_environment(work_root):
        from img2dataset import download as img2dataset_download

        img2dataset_download(
            url_list=str(url_table),
            output_folder=str(work),
            input_format="parquet",
            url_col="url",
            output_format="webdataset",
            disable_all_reencoding=True,  # bytes as served: our reader decodes (alpha, 16-bit, EXIF)
            number_sample_per_shard=shard_size,
            processes_count=max(1, processes),
            thread_count=max(1, threads),
            timeout=timeout,
            retries=retries,
            extract_exif=False,
            compute_hash=None,
            enable_wandb=False,
            incremental_mode="incremental",
        )
    summary = summarize_download(work)
    summary["resumed_shards"] = len(resumed)
    if summary["downloaded"] == 0:
        shutil.rmtree(work)  # nothing worth resuming: a rerun tries every URL again
        raise DownloadError(
            f"{url_table}: none of {summary['attempted']} URLs downloaded; "
            f"failures by reason: {json.dumps(summary['failed_by_reason'])}"
        )
    shutil.rmtree(work / "_tmp", ignore_errors=True)
    output_folder.parent.mkdir(parents=True, exist_ok=True)
    os.replace(work, output_folder)
    if not any(work_root.iterdir()):
        work_root.rmdir()
    (output_folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def summarize_download(folder: str | Path) -> dict:
    """Count attempts, successes and failures by reason from img2dataset's parquet files."""
    import pandas as pd

    folder = Path(folder)
    tables = [pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["status", "error_message"])
    failed = table[table["status"] != "success"]
    reasons = Counter(
        f"{row.status}: {row.error_message}" if row.error_message else str(row.status)
        for row in failed.itertuples(index=False)
    )
    return {
        "attempted": int(len(table)),
        "downloaded": int((table["status"] == "success").sum()),
        "failed": int(len(failed)),
        "failed_by_reason": dict(sorted(reasons.items())),
        "shards": sorted(p.name for p in folder.glob("*.tar")),
    }


def to_grayscale_float32(image: np.ndarray, order: str = "BGR") -> np.ndarray:
    """Pixels (H, W[, C]) of any depth to grayscale float32 (H, W), on the 8-bit scale.

    OpenCV's colour conversion (0.299 R + 0.587 G + 0.114 B, rounded in the source depth);
    16-bit values are divided by 256, a power of two, so values stay exact in float32 and
    on the same 0..255 scale as 8-bit images. ``order``: ``RGB`` for pixels from
    :mod:`img2kernel.images`, ``BGR`` for OpenCV's own ``imread``.
    """
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 1:
            image = image[:, :, 0]
        elif channels == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY if order == "RGB" else cv2.COLOR_BGR2GRAY)
        elif channels == 4:
            image = cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY if order == "RGB" else cv2.COLOR_BGRA2GRAY)
        else:
            raise ValueError(f"unsupported channel count {channels}")
    elif image.ndim != 2:
        raise ValueError(f"unsupported image shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32)
    if image.dtype == np.uint16:
        return image.astype(np.float32) / np.float32(256)
    if image.dtype.kind == "f":
        return image.astype(np.float32)
    raise ValueError(f"unsupported pixel type {image.dtype}")


def store_image(payload: bytes, name: str, min_side: int, max_side: int | None, conversions: Counter) -> np.ndarray:
    """One downloaded file as the inputs store holds it: the one reader (alpha dropped, EXIF
    orientation applied, 16-bit on the 8-bit scale), gray, downscaled to ``max_side``.

    Raises ValueError naming why the image is skipped (unreadable, smaller than ``min_side``).
    ``conversions`` counts what was converted, for the manifest and the report.
    """
    from img2kernel.images import ImageReadError, decode_pixels

    try:
        pixels, storage, notes = decode_pixels(payload, name)
    except ImageReadError as err:
        raise ValueError("could not decode") from err
    conversions.update(notes)
    if pixels.ndim == 3:
        conversions["colour converted to gray"] += 1
    if storage == "uint16":
        conversions["16-bit divided by 256"] += 1
    gray = to_grayscale_float32(pixels, order="RGB")
    if min(gray.shape) < min_side:
        raise ValueError(f"smaller than min_side {min_side}")
    if max_side is not None and max(gray.shape) > max_side:
        scale = max_side / max(gray.shape)
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        conversions[f"downscaled to max_side {max_side}"] += 1
    return gray


def _image_members(tar: tarfile.TarFile) -> Iterator[tuple[str, tarfile.TarInfo]]:
    for member in tar:
        stem, _, ext = member.name.rpartition(".")
        if member.isfile() and f".{ext.lower()}" in IMAGE_EXTENSIONS:
            yield Path(stem).name, member


def webdataset_image_keys(shard: Path) -> list[str]:
    """The keys of the image members of an img2dataset shard (reads headers only)."""
    with tarfile.open(shard, "r") as tar:
        return [key for key, _ in _image_members(tar)]


def iter_webdataset_images(shard: Path) -> Iterator[tuple[str, bytes]]:
    """(key, encoded image bytes) for every image member of an img2dataset shard, in key order.

    img2dataset writes members in the order downloads finish; reading them sorted makes
    the store, and so every crop drawn from it, the same from run to run.
    """
    with tarfile.open(shard, "r") as tar:
        for key, member in sorted(_image_members(tar), key=lambda item: item[0]):
            yield key, tar.extractfile(member).read()


def _quarters(key: str, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The 2 x 2 disjoint tiles of an image, keyed ``{key}_t0`` .. ``{key}_t3`` (row by row)."""
    rows, cols = image.shape[0] // 2, image.shape[1] // 2
    return [(f"{key}_t{2 * r + c}", np.ascontiguousarray(image[r * rows : (r + 1) * rows if r == 0 else None,
                                                                c * cols : (c + 1) * cols if c == 0 else None]))
            for r in range(2) for c in range(2)]


def build_inputs_store(
    images_folder: str | Path,
    store_folder: str | Path,
    *,
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
    dtype: str = "float32",
    min_side: int = 1,
    max_side: int | None = None,
) -> dict:
    """Decode every downloaded image to grayscale into ``store_folder/{shard}.tar``.

    One store shard per img2dataset shard, same keys. The split comes from the keys
    (see :func:`img2kernel.store.shards.split_for_keys`). Images that fail to decode or are
    smaller than ``min_side`` are skipped and counted; larger than ``max_side``, they are
    downscaled (area interpolation). Writes and returns ``store_folder/manifest.json``,
    with the conversions made (alpha dropped, EXIF orientation, colour to gray, 16-bit).
    """
    images_folder, store_folder = Path(images_folder), Path(store_folder)
    shards = sorted(images_folder.glob("*.tar"))
    keys = [key for shard in shards for key in webdataset_image_keys(shard)]
    # Fewer than three images cannot give train, val and test an image each: then each image
    # is cut into 2 x 2 disjoint tiles, stored as images of their own, split by their keys.
    tiles = len(keys) < 3
    if tiles:
        keys = [f"{key}_t{t}" for key in keys for t in range(4)]
    split = split_for_keys(keys, val_fraction, test_fraction, split_seed)
    store_folder.mkdir(parents=True, exist_ok=True)
    skipped: Counter = Counter()
    counts: Counter = Counter()
    conversions: Counter = Counter()
    written = []
    for shard in shards:
        with ShardWriter(store_folder / shard.name, dtype=dtype, meta={"source": shard.name}) as writer:
            for key, payload in iter_webdataset_images(shard):
                try:
                    gray = store_image(payload, f"{shard.name}: {key}", min_side, max_side, conversions)
                except ValueError as err:
                    skipped[str(err)] += 1
                    continue
                for part_key, part in (_quarters(key, gray) if tiles else [(key, gray)]):
                    writer.add(part_key, part, split[part_key])
                    counts[split[part_key]] += 1
        written.append(shard.name)
    manifest = {
        "images": int(sum(counts.values())),
        "splits": {s: int(counts[s]) for s in ("train", "val", "test")},
        "skipped": dict(skipped),
        "conversions": dict(conversions),
        "split_by": "2 x 2 disjoint tiles of each image (fewer than three images)" if tiles else "image",
        "shards": written,
        "dtype": dtype,
    }
    (store_folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest

