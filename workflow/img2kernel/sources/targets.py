"""The targets stage: one filter applied with OpenCV to every image of the inputs store."""

from __future__ import annotations

import json
import time
from pathlib import Path

from img2kernel.sources.filters import build_filter
from img2kernel.store.shards import ShardWriter, Store


def compute_targets(inputs_folder: str | Path, targets_folder: str | Path, spec: dict, dtype: str = "float32") -> dict:
    """Write ``targets_folder/{shard}.tar``: the filter's output for every input, same keys and splits.

    Each shard is written atomically (see :class:`img2kernel.store.shards.ShardWriter`); the
    filter spec is kept in each shard's index. Returns counts and throughput, also
    written to ``targets_folder/manifest.json``.
    """
    filt = build_filter(spec)
    inputs = Store(inputs_folder)
    targets_folder = Path(targets_folder)
    targets_folder.mkdir(parents=True, exist_ok=True)
    pixels, images, start = 0, 0, time.perf_counter()
    for shard in inputs.shards:
        with ShardWriter(targets_folder / shard.path.name, dtype=dtype, meta={"filter": spec}) as writer:
            for key in shard.keys():
                image = shard.array(key)
                writer.add(key, filt.apply(image), shard.split_of(key))
                pixels += image.size
                images += 1
        shard.release()  # one input shard mapped at a time, whatever the store's size
    seconds = time.perf_counter() - start
    manifest = {
        "filter": spec,
        "images": images,
        "megapixels": pixels / 1e6,
        "seconds": seconds,
        "megapixels_per_second": pixels / 1e6 / seconds if seconds > 0 else None,
        "shards": [s.path.name for s in inputs.shards],
    }
    (targets_folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
