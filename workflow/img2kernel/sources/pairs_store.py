"""The ``pairs_store`` job: the user's pairs decoded once into two stores (docs/design.md, "Sources").

:func:`build_pairs_store` reads every file the listing (:mod:`img2kernel.sources.pairs`)
found, fetching URLs with img2dataset (bytes as served), converts channels as the entry
says, and splits pairs by a seeded hash of their key; with fewer than three pairs each image
is split by disjoint tiles instead (per-pixel :data:`SPLIT_CODES`).
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from img2kernel.images import IMAGE_SUFFIXES, ImageReadError, jpeg_facts, read_pixels
from img2kernel.sources.geometry import Placement, locate
from img2kernel.sources.pairs import SPLIT_CODES, PairRef, list_pairs, mixed_storage
from img2kernel.thresholds import STORAGE_RANGE

REC601 = np.array([0.299, 0.587, 0.114])
MIN_TILE = 16  # the smallest tile side when one image is split into train, val and test

def fetch_urls(refs: list[PairRef], work: Path, timeout: float = 10, retries: int = 2) -> dict[tuple[str, str], Path | str]:
    """Download every http(s) location with img2dataset, bytes as served (no re-encoding).

    Both files of a pair keep the pair's key (``pair_key``, ``role`` columns saved by
    img2dataset), so they are matched whatever order downloads finish in. Returns
    {(key, role): file}, or for a location that failed, img2dataset's reason as a string.
    """
    import tarfile

    import pandas as pd

    from img2kernel.sources.downloads import img2dataset_environment

    rows = [(loc, ref.key, role) for ref in refs for role, loc in (("input", ref.input), ("output", ref.output)) if PairRef.is_url(loc)]
    if not rows:
        return {}
    work.mkdir(parents=True, exist_ok=True)
    table = work / "urls.parquet"
    pd.DataFrame(rows, columns=["url", "pair_key", "role"]).to_parquet(table)
    with img2dataset_environment(work):
        from img2dataset import download

        download(
            url_list=str(table), output_folder=str(work / "shards"), input_format="parquet", url_col="url",
            save_additional_columns=["pair_key", "role"], output_format="webdataset", disable_all_reencoding=True,
            processes_count=1, thread_count=8, timeout=timeout, retries=retries, enable_wandb=False,
            compute_hash=None, extract_exif=False,
        )
    fetched: dict[tuple[str, str], Path] = {}
    failures = {}
    for table_path in sorted((work / "shards").glob("*.parquet")):
        results = pd.read_parquet(table_path)
        for row in results.itertuples(index=False):
            if getattr(row, "status", "success") != "success":
                failures[(row.pair_key, row.role)] = str(getattr(row, "error_message", "") or row.status)
    files = work / "files"
    files.mkdir(exist_ok=True)
    for shard in sorted((work / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            by_sample: dict[str, dict[str, tarfile.TarInfo]] = {}  # webdataset: one stem, a member per extension
            for member in tar.getmembers():
                if member.isfile():
                    stem, _, extension = member.name.partition(".")
                    by_sample.setdefault(stem, {})[extension] = member
            for members in by_sample.values():
                if "json" not in members:
                    continue
                meta = json.loads(tar.extractfile(members["json"]).read())
                payload = next((m for extension, m in members.items() if extension not in ("json", "txt")), None)
                if payload is None or meta.get("status", "success") != "success":
                    continue
                suffix = Path(meta["url"].split("?")[0]).suffix.lower()
                target = files / f"{meta['pair_key']}.{meta['role']}{suffix if suffix in IMAGE_SUFFIXES else '.img'}"
                target.write_bytes(tar.extractfile(payload).read())
                fetched[(meta["pair_key"], meta["role"])] = target
    for key, reason in failures.items():
        fetched.setdefault(key, reason)  # a string: why it failed, for the error message
    return fetched


def as_channels(planes: np.ndarray, wanted: int) -> tuple[np.ndarray, str | None]:
    """(H, W, C) planes with C = ``wanted``; the conversion made, if any."""
    if planes.shape[2] == wanted:
        return planes, None
    if wanted == 1 and _is_gray_rgb(planes):
        return planes[..., :1], "gray stored as RGB read as gray"
    if wanted == 1:
        return (planes.astype(np.float64) @ REC601)[..., None], "RGB converted to gray (0.299, 0.587, 0.114)"
    return np.repeat(planes, 3, axis=2), "gray repeated to RGB"


def _is_gray_rgb(planes: np.ndarray) -> bool:
    return planes.shape[2] == 3 and np.array_equal(planes[..., 0], planes[..., 1]) and np.array_equal(planes[..., 0], planes[..., 2])


def split_for_pairs(keys: list[str], holdout: float, seed: int) -> dict[str, str]:
    """Whole pairs by a seeded hash of their key (three or more), else every pair by tiles."""
    from img2kernel.store.shards import split_for_keys

    if len(keys) < 3:
        return dict.fromkeys(keys, "tiles")
    return split_for_keys(keys, holdout / 2, holdout / 2, seed)


def tile_side(shapes: list[tuple[int, ...]]) -> int:
    """Tiles for a tile split: about a 4 x 4 grid of the smallest image, at least MIN_TILE pixels."""
    return max(MIN_TILE, min(min(s[:2]) for s in shapes) // 4)


def split_codes(key: str, shape: tuple[int, ...], label: str, manifest: dict) -> np.ndarray:
    """(H, W) uint8 split codes (0 train, 1 val, 2 test) of one stored pair.

    A whole pair's label fills it; a ``tiles`` pair gets disjoint tiles, ordered by a seeded
    hash, the first ones test, the next val (each at least one tile), the rest train.
    """
    height, width = shape[:2]
    if label != "tiles":
        return np.full((height, width), SPLIT_CODES[label], dtype=np.uint8)
    side, seed, holdout = manifest["tile"], manifest["seed"], manifest["holdout"]
    rows, cols = -(-height // side), -(-width // side)
    order = sorted(range(rows * cols), key=lambda t: zlib.crc32(f"{seed}:{key}:{t}".encode()))
    n_held = max(1, round(holdout / 2 * len(order)))
    codes_of_tile = np.zeros(rows * cols, dtype=np.uint8)
    for rank, tile in enumerate(order):
        codes_of_tile[tile] = SPLIT_CODES["test"] if rank < n_held else SPLIT_CODES["val"] if rank < 2 * n_held else 0
    grid = codes_of_tile.reshape(rows, cols)
    return np.repeat(np.repeat(grid, side, axis=0), side, axis=1)[:height, :width]


@dataclass
class LoadedPair:
    """One pair decoded, channels settled: (H, W, C_in) and (H, W, C_out), the output on the
    input's grid (NaN where the tool wrote nothing: a valid-mode ring, a crop, a resize's gaps)."""

    ref: PairRef
    x: np.ndarray
    y: np.ndarray
    split: str
    placement: Placement = Placement()
    output_jpeg: dict | None = None  # the output file's JPEG facts (images.jpeg_facts), None if not a JPEG
    placement_evidence: dict | None = None  # what chose the placement (sources.geometry.locate)


def read_pairs(spec: dict, refs: list[PairRef], fetched: dict[tuple[str, str], Path] | None = None,
               seed: int = 0) -> tuple[list[LoadedPair], dict]:
    """Decode every pair (errors name the file), settle channels and storage, split; returns the
    pairs and the manifest (counts, storage, channels, conversions, split mode)."""
    name = spec.get("name", "pairs")
    holdout = float(spec.get("holdout", 0.3))
    wanted = spec.get("channels") or {}
    fetched = fetched or {}
    raw, notes, storages, skipped = [], Counter(), {"input": {}, "output": {}}, Counter()
    for ref in refs:
        arrays = {}
        failed = [(role, fetched.get((ref.key, role))) for role, location in (("input", ref.input), ("output", ref.output))
                  if PairRef.is_url(location) and not isinstance(fetched.get((ref.key, role)), Path)]
        if failed:  # as the image download does: a URL that fails skips its pair and is counted
            role, reason = failed[0]
            skipped[f"{role} could not be downloaded ({reason or 'no answer'})"] += 1
            continue
        compression = None
        for role, location in (("input", ref.input), ("output", ref.output)):
            url = PairRef.is_url(location)
            path = fetched[(ref.key, role)] if url else location
            try:
                pixels, storage, file_notes = read_pixels(path)
            except ImageReadError as err:
                if not url:  # the config check read this file's header: a folder's pair is refused
                    raise ValueError(f"{name}: {role} {location}: {err.reason}") from None
                skipped[f"{role}: {err.reason}"] += 1  # what the server sent
                break
            storages[role].setdefault(storage, location)
            notes.update(f"{role}: {n}" for n in file_notes)
            arrays[role] = pixels[..., None] if pixels.ndim == 2 else pixels
            # The output's 8x8 grid as stored: a file turned upright by its EXIF tag has it moved.
            if role == "output" and "EXIF orientation applied" not in file_notes:
                compression = jpeg_facts(path)
        else:
            raw.append((ref, arrays["input"], arrays["output"], compression))
    if not raw:
        reasons = "; ".join(f"{n} x {why}" for why, n in skipped.items())
        raise ValueError(f"{name}: no pair could be read: {reasons}")
    for role in ("input", "output"):
        if len(storages[role]) > 1:  # URLs, whose headers the config check could not read
            raise ValueError(f"{name}: {mixed_storage(role, storages[role])}")
    storage = {role: next(iter(storages[role])) for role in ("input", "output")}
    channels = {}
    for role, index in (("input", 1), ("output", 2)):
        # Gray stored as RGB goes with gray files (a gray GIF decodes as RGB) and with colour ones
        # (a black-and-white photo among colour photos); each image is compared once.
        gray = [item[index].shape[2] == 1 or _is_gray_rgb(item[index]) for item in raw]
        stored = [item[index].shape[2] for item in raw]
        if 1 in stored and not all(gray):
            first = {c: item[0] for item, c, g in zip(raw, stored, gray) if c == 1 or not g}
            raise ValueError(f"{name}: {role} files have different channel counts: "
                             + ", ".join(f"{getattr(ref, role)} has {c}" for c, ref in sorted(first.items())))
        channels[role] = int(wanted.get(role) or (1 if all(gray) else 3))
    split = split_for_pairs([item[0].key for item in raw], holdout, seed)
    loaded = []
    for ref, x, y, compression in raw:
        x, note_in = as_channels(x, channels["input"])
        y, note_out = as_channels(y, channels["output"])
        for role, note in (("input", note_in), ("output", note_out)):
            if note:
                notes[f"{role}: {note}"] += 1
                if note.startswith("RGB converted"):  # weighted sums are no longer the file's integers
                    storage[role] = "float32" if storage[role] != "float64" else "float64"
                    if role == "output":
                        compression = None  # no longer the file's planes
        try:
            # one tool, one placement: a later pair keeps the first one's unless the pixels clearly say otherwise
            placement, evidence = locate(x, y, ref.input, ref.output, loaded[0].placement if loaded else None)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        if not placement.plain:
            y = placement.place(y, x.shape)
            if compression is not None and placement.transform != "none":  # its 8x8 blocks are turned too
                notes["output: a JPEG turned off its input's grid, fitted on its decoded pixels"] += 1
                compression = None
        loaded.append(LoadedPair(ref, x, y, split[ref.key], placement, compression, evidence))
    turns = {(p.placement.transform, p.placement.stride, p.placement.scale is None): p for p in loaded}
    if len(turns) > 1:  # one model holds one geometry
        raise ValueError(f"{name}: the outputs are placed on their inputs differently: " + "; ".join(
            f"{p.ref.output}: {p.placement.describe() or 'as stored'}" for p in turns.values()))
    manifest = {
        "filter": name,
        "pairs": len(loaded),
        "split_mode": "tiles" if len(loaded) < 3 else "pairs",
        "splits": dict(Counter(split.values())),
        "seed": seed,
        "holdout": holdout,
        "tile": tile_side([p.y.shape for p in loaded]),
        "input_storage": storage["input"],
        "output_storage": storage["output"],
        "channels": channels,
        "conversions": dict(notes),
        "skipped": dict(skipped),
        "dtypes": {role: store_dtype(storage[role], role == "output" and any(not p.placement.plain for p in loaded))
                   for role in ("input", "output")},
        "keys": {p.ref.key: {"input": p.ref.input, "output": p.ref.output, "shape": list(p.x.shape),
                             "placement": p.placement.to_dict(), "placement_evidence": p.placement_evidence,
                             **({"output_jpeg": p.output_jpeg} if p.output_jpeg else {})}
                 for p in loaded},
    }
    return loaded, manifest


def store_dtype(storage: str, unknown_pixels: bool) -> str:
    """The store's dtype for one side of the pairs: the files' own integers where they are
    integers (a 10000 x 10000 colour photo stays 300 MB, not 1.2 GB of float32), else float32,
    or float64 for float64 files; float where an output placed on its input's grid needs NaN."""
    if storage in STORAGE_RANGE and not unknown_pixels:
        return storage
    return "float64" if storage == "float64" else "float32"


def build_pairs_store(spec: dict, inputs_folder: str | Path, outputs_folder: str | Path, seed: int = 0,
                      timeout: float = 10, retries: int = 2) -> dict:
    """The ``pairs_store`` job: decode every pair once into two stores; returns the manifest.

    Every file is read before anything is written (an error names the file); arrays keep
    the files' values (in their own integer type, else float32 or float64; see
    :func:`store_dtype`); an output of another size or orientation sits on its input's grid
    (:mod:`img2kernel.sources.geometry`), NaN where the tool wrote nothing. URLs are
    fetched with the data section's ``timeout`` and ``retries``, into a folder beside the
    stores that the next run of the job clears if this one is killed.
    """
    from img2kernel.store.shards import ShardWriter

    dropped: dict[str, int] = {}
    refs = list_pairs(spec, dropped)
    work = Path(inputs_folder).parent / ".fetching"
    shutil.rmtree(work, ignore_errors=True)  # what a killed run of this job left
    try:
        loaded, manifest = read_pairs(spec, refs, fetch_urls(refs, work, timeout=timeout, retries=retries), seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    manifest["skipped"] = {**dropped, **manifest["skipped"]}
    dtypes = manifest["dtypes"]
    with ShardWriter(Path(inputs_folder) / "00000.tar", dtype=dtypes["input"], meta={"source": "pairs"}) as x_writer, \
            ShardWriter(Path(outputs_folder) / "00000.tar", dtype=dtypes["output"], meta={"source": "pairs"}) as y_writer:
        for p in loaded:
            x_writer.add(p.ref.key, p.x[..., 0] if p.x.shape[2] == 1 else p.x, p.split)
            y_writer.add(p.ref.key, p.y[..., 0] if p.y.shape[2] == 1 else p.y, p.split)
    for folder in (inputs_folder, outputs_folder):
        (Path(folder) / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
