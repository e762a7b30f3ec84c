"""The sharded array store (docs/design.md, "The store").

A shard is one uncompressed tar of ``<key>.npy`` members (webdataset's layout, so
``tar``, ``tarfile`` and webdataset read it) plus a sidecar ``<shard>.tar.index.json``
that records, per member, the byte offset of the array data inside the tar, its
shape, its split and an xxh3-64 checksum of the member. Readers memory-map the tar once and hand
out array views at those offsets: no decode and no copy of whole images.

Writers stream array by array into a hidden temporary file beside the shard and
``os.replace`` it into place only when the shard is complete, so a shard on disk is
either whole or absent. Readers check every shard against its index (size and
checksums) before handing out a single pixel.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import xxhash

FORMAT = "img2kernel-store/1"
INDEX_SUFFIX = ".index.json"
# "tiles": a pair that is split by disjoint tiles of its image (fewer than three pairs; see
# img2kernel.sources.pairs.split_codes), not as a whole.
SPLITS = ("train", "val", "test", "tiles")
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# Shard bytes a streaming crop sampler keeps mapped between draws (StoreCropSampler).
MAPPED_BUDGET_MB = 256


class StoreError(RuntimeError):
    """A shard is missing, truncated, corrupted or does not match its index."""


def index_path(shard_path: str | os.PathLike) -> Path:
    """The sidecar index of a shard: ``00000.tar`` -> ``00000.tar.index.json``."""
    return Path(str(shard_path) + INDEX_SUFFIX)


def rebuild_hint(path: Path) -> str:
    """How to rebuild a bad shard: each store folder is one job's output, so force that job."""
    return f"rebuild it with `snakemake --cores 8 --forcerun {path.parent}`"


@dataclass(frozen=True)
class Entry:
    """One array of a shard, as its index records it."""

    key: str
    member_offset: int  # first byte of the member's content (the .npy header)
    offset: int  # first byte of the array data
    shape: tuple[int, ...]
    split: str
    checksum: int  # xxh3-64 of the member's content: .npy header and data

    def to_json(self) -> dict:
        return {
            "key": self.key,
            "member_offset": self.member_offset,
            "offset": self.offset,
            "shape": list(self.shape),
            "split": self.split,
            "xxh3": self.checksum,
        }


def _npy_header(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, np.lib.format.header_data_from_array_1_0(array))
    return buffer.getvalue()


class ShardWriter:
    """Streams arrays into one shard; the shard appears on disk only when closed.

    Use as a context manager: on an exception the partial file is removed and any
    previous shard at ``path`` is left as it was.

    Args:
        path: the shard's tar path, e.g. ``results/store/inputs/00000.tar``.
        dtype: the dtype every array is stored in (``float32`` or ``float16``).
        meta: JSON-serialisable facts about the shard, kept in the index.
    """

    def __init__(self, path: str | os.PathLike, dtype: str = "float32", meta: dict | None = None):
        self.path = Path(path)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        if self.dtype.kind != "f":
            raise ValueError(f"store dtype must be a float type, got {dtype!r}")
        self.meta = dict(meta or {})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A hidden name in the same directory: os.replace is then atomic, and globs for *.tar skip it.
        self._tmp_path = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        self._file = open(self._tmp_path, "wb")
        self._offset = 0
        self._entries: list[Entry] = []
        self._keys: set[str] = set()
        self._closed = False

    def add(self, key: str, array: np.ndarray, split: str = "train") -> Entry:
        """Append one array (any shape) under ``key``; returns its index entry."""
        if not _KEY_PATTERN.match(key):
            raise ValueError(f"{self.path}: key {key!r} must match {_KEY_PATTERN.pattern}")
        if key in self._keys:
            raise ValueError(f"{self.path}: key {key!r} written twice")
        if split not in SPLITS:
            raise ValueError(f"{self.path}: key {key!r}: split {split!r} is not one of {SPLITS}")
        array = np.ascontiguousarray(array, dtype=self.dtype)
        header = _npy_header(array)
        data = memoryview(array).cast("B")
        info = tarfile.TarInfo(f"{key}.npy")
        info.size = len(header) + array.nbytes
        info.mode = 0o444
        info.mtime = 0  # identical inputs give identical bytes
        # The tar is written directly (a ustar header, then header and data straight
        # from the array's buffer): tarfile's addfile copies through 16 KiB reads.
        member_offset = self._write(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict"))
        self._write(header)
        self._write(data)
        self._write(tarfile.NUL * (-info.size % tarfile.BLOCKSIZE))
        digest = xxhash.xxh3_64(header)
        digest.update(data)
        checksum = digest.intdigest()
        entry = Entry(key, member_offset, member_offset + len(header), tuple(array.shape), split, checksum)
        self._entries.append(entry)
        self._keys.add(key)
        return entry

    def _write(self, chunk: bytes | memoryview) -> int:
        """Append to the tar; returns the offset just after the chunk."""
        self._file.write(chunk)
        self._offset += len(chunk)
        return self._offset

    def close(self) -> Path:
        """Finish the tar, write the index, and move both into place (index first, tar last).

        No fsync: a killed process cannot leave a partial shard in place (the rename is
        atomic), and a file torn by a power loss fails the readers' size and checksum
        checks, so it is rebuilt, never read.
        """
        if self._closed:
            return self.path
        self._write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))  # end-of-archive marker
        tar_bytes = self._offset
        self._file.close()
        index = {
            "format": FORMAT,
            "dtype": self.dtype.str,
            "tar_bytes": tar_bytes,
            "meta": self.meta,
            "entries": [e.to_json() for e in self._entries],
        }
        final_index = index_path(self.path)
        tmp_index = final_index.with_name(f".{final_index.name}.{os.getpid()}.partial")
        tmp_index.write_text(json.dumps(index, indent=1))
        # The tar is the commit point: an index without its tar (or beside an older tar)
        # fails the size and checksum checks of every reader.
        os.replace(tmp_index, final_index)
        os.replace(self._tmp_path, self.path)
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop the partial shard; an existing shard at ``path`` is untouched."""
        if self._closed:
            return
        self._closed = True
        try:
            self._file.close()
        finally:
            self._tmp_path.unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self._entries)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Shard:
    """A read-only view of one shard: arrays are memory-mapped views into the tar.

    Args:
        path: the shard's tar path.
        verify: check every member's checksum against the index (reads the shard once).
    """

    def __init__(self, path: str | os.PathLike, verify: bool = True):
        self.path = Path(path)
        idx_path = index_path(self.path)
        if not self.path.is_file():
            raise StoreError(f"{self.path}: shard is missing; {rebuild_hint(self.path)}")
        try:
            index = json.loads(idx_path.read_text())
            if index.get("format") != FORMAT:
                raise ValueError(f"format is {index.get('format')!r}, expected {FORMAT!r}")
            self.dtype = np.dtype(index["dtype"])
            self.meta = index.get("meta", {})
            self.entries = [
                Entry(e["key"], e["member_offset"], e["offset"], tuple(e["shape"]), e["split"], e["xxh3"])
                for e in index["entries"]
            ]
            tar_bytes = int(index["tar_bytes"])
        except FileNotFoundError:
            raise StoreError(f"{self.path}: index {idx_path.name} is missing; {rebuild_hint(self.path)}") from None
        except (ValueError, KeyError, TypeError) as err:
            raise StoreError(f"{idx_path}: unreadable index ({err}); {rebuild_hint(self.path)}") from None
        size = self.path.stat().st_size
        if size != tar_bytes:
            raise StoreError(
                f"{self.path}: shard is {size} bytes but its index says {tar_bytes} "
                f"(truncated or overwritten); {rebuild_hint(self.path)}"
            )
        self._by_key = {e.key: e for e in self.entries}
        self._size = size
        self._mmap: np.ndarray | None = None  # mapped on first use, dropped by release()
        if verify:
            self.verify()

    def _data(self) -> np.ndarray:
        if self._mmap is None:
            self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r") if self._size else np.zeros(0, np.uint8)
        return self._mmap

    def release(self) -> None:
        """Drop this shard's mapping; arrays already handed out keep theirs until they go.

        Readers of large stores release each shard when done with it, so memory (and
        address space) holds one shard at a time, not the store.
        """
        self._mmap = None

    def verify(self) -> None:
        """Raise StoreError naming the shard and member if any member's bytes changed."""
        was_mapped = self._mmap is not None
        data = self._data()
        try:
            for e in self.entries:
                end = e.offset + self.dtype.itemsize * int(np.prod(e.shape))
                if end > len(data) or xxhash.xxh3_64_intdigest(data[e.member_offset : end]) != e.checksum:
                    raise StoreError(
                        f"{self.path}: member {e.key}.npy does not match its checksum "
                        f"(the shard is corrupted); {rebuild_hint(self.path)}"
                    )
        finally:
            del data
            if not was_mapped:
                self.release()

    @property
    def nbytes(self) -> int:
        """Size of the shard file: what mapping it whole costs in address space."""
        return self._size

    def keys(self, split: str | None = None) -> list[str]:
        return [e.key for e in self.entries if split is None or e.split == split]

    def array(self, key: str) -> np.ndarray:
        """The stored array as a read-only view (no copy)."""
        e = self._by_key[key]
        return np.ndarray(e.shape, dtype=self.dtype, buffer=self._data(), offset=e.offset)

    def shape(self, key: str) -> tuple[int, ...]:
        """The stored array's shape, from the index (nothing is read)."""
        return self._by_key[key].shape

    def split_of(self, key: str) -> str:
        return self._by_key[key].split

    def __contains__(self, key: str) -> bool:
        return key in self._by_key

    def __len__(self) -> int:
        return len(self.entries)


class Store:
    """All shards of one array kind in a directory (``results/store/inputs``, a filter's targets).

    Opening reads the indexes; a shard is memory-mapped when one of its arrays is asked
    for. Verification reads one shard at a time and unmaps it, so opening a store larger
    than memory holds one shard's pages at most.

    Args:
        root: the directory holding ``*.tar`` shards and their indexes.
        verify: checksum every shard on open (see :class:`Shard`).
    """

    def __init__(self, root: str | os.PathLike, verify: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise StoreError(f"{self.root}: store directory is missing; run snakemake to build it")
        self.shards = [Shard(p, verify=verify) for p in sorted(self.root.glob("*.tar"))]
        self._shard_of = {key: shard for shard in self.shards for key in shard.keys()}

    def keys(self, split: str | None = None) -> list[str]:
        return [k for shard in self.shards for k in shard.keys(split)]

    def array(self, key: str) -> np.ndarray:
        return self._shard_of[key].array(key)

    def split_of(self, key: str) -> str:
        return self._shard_of[key].split_of(key)

    def shard_name(self, key: str) -> str:
        return self._shard_of[key].path.name

    def items(self, split: str | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """(key, array) shard by shard; each shard is released when its keys are done."""
        for shard in self.shards:
            for key in shard.keys(split):
                yield key, shard.array(key)
            shard.release()

    def shard_of(self, key: str) -> "Shard":
        return self._shard_of[key]

    def __contains__(self, key: str) -> bool:
        return key in self._shard_of

    def __len__(self) -> int:
        return len(self._shard_of)


def split_for_keys(keys: Sequence[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """A deterministic train/val/test split decided by a seeded hash of each key.

    Keys are ordered by ``crc32(seed:key)``; the first ``round(test * n)`` go to test, the
    next ``round(val * n)`` to val, the rest to train. With three or more keys, a non-zero
    fraction always gets at least one. Adding keys moves few existing ones.
    """
    ordered = sorted(keys, key=lambda k: (zlib.crc32(f"{seed}:{k}".encode()), k))
    n = len(ordered)

    def count(fraction: float) -> int:
        c = round(fraction * n)
        return max(c, 1) if fraction > 0 and n >= 3 else c

    n_test, n_val = count(test_fraction), count(val_fraction)
    split = {}
    for i, key in enumerate(ordered):
        split[key] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return split


class CropSampler:
    """Uniformly random crops, over every valid crop position of a set of 2-D arrays.

    Each input crop is ``size + 2 * halo`` pixels square; the paired target crop is the
    ``size`` square interior, so a valid (unpadded) correlation of the input crop with a
    kernel of size ``2 * halo + 1`` lines up with the target crop pixel for pixel.

    Args:
        inputs: 2-D arrays (H_i, W_i), e.g. store views.
        size: side of the target crop.
        halo: extra pixels on every side of the input crop.
        targets: arrays of the same shapes as ``inputs``, or None.
        seed: seed of the crop positions.
    """

    def __init__(
        self,
        inputs: Sequence[np.ndarray],
        size: int,
        halo: int = 0,
        targets: Sequence[np.ndarray] | None = None,
        seed: int = 0,
    ):
        if size < 1 or halo < 0:
            raise ValueError(f"crop size must be >= 1 and halo >= 0, got size={size}, halo={halo}")
        if targets is not None and len(targets) != len(inputs):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        side = size + 2 * halo
        self.size, self.halo, self.side = size, halo, side
        self._inputs, self._targets, weights = [], [], []
        for i, image in enumerate(inputs):
            if image.ndim != 2:
                raise ValueError(f"input {i}: expected a 2-D array (H, W), got shape {image.shape}")
            if targets is not None and targets[i].shape != image.shape:
                raise ValueError(f"input {i}: shape {image.shape} but its target is {targets[i].shape}")
            if image.shape[0] < side or image.shape[1] < side:
                continue  # too small for one crop: skipped, see `skipped`
            self._inputs.append(image)
            if targets is not None:
                self._targets.append(targets[i])
            weights.append((image.shape[0] - side + 1) * (image.shape[1] - side + 1))
        self.skipped = len(inputs) - len(self._inputs)
        self.images = len(self._inputs)  # images large enough for a crop
        if not weights:
            raise ValueError(f"no image is at least {side}x{side} pixels (crop {size} + halo {halo} on each side)")
        self._cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))
        self._has_targets = targets is not None
        # Number of valid top-left positions along each axis, per image.
        self._rows = np.array([a.shape[0] - side + 1 for a in self._inputs])
        self._cols = np.array([a.shape[1] - side + 1 for a in self._inputs])
        self.rng = np.random.default_rng(seed)

    def _positions(self, n: int) -> tuple[list[int], list[int], list[int]]:
        """(image index, top, left) of ``n`` crops, uniform over every valid crop position."""
        total = self._cumulative[-1]
        which = np.searchsorted(self._cumulative, self.rng.random(n) * total, side="right")
        ys = (self.rng.random(n) * self._rows[which]).astype(np.int64).tolist()
        xs = (self.rng.random(n) * self._cols[which]).astype(np.int64).tolist()
        return which.tolist(), ys, xs

    def sample(
        self, n: int, out: np.ndarray | None = None, out_targets: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Draw ``n`` crops: inputs (n, side, side) and targets (n, size, size) or None.

        Pass ``out`` / ``out_targets`` (float arrays of those shapes) to fill reused
        buffers: a fresh multi-megabyte array per batch costs more than the copies.
        """
        which, ys, xs = self._positions(n)
        inputs = np.empty((n, self.side, self.side), np.float32) if out is None else out
        targets = None
        if self._has_targets:
            targets = np.empty((n, self.size, self.size), np.float32) if out_targets is None else out_targets
        side, size, h = self.side, self.size, self.halo
        images, target_images = self._inputs, self._targets
        for j in range(n):
            y, x = ys[j], xs[j]
            inputs[j] = images[which[j]][y : y + side, x : x + side]
            if targets is not None:
                targets[j] = target_images[which[j]][y + h : y + h + size, x + h : x + h + size]
        return inputs, targets


class StoreCropSampler(CropSampler):
    """:class:`CropSampler` over one split of an inputs store (and a targets store), streamed.

    The same crops as a CropSampler over the split's arrays in store order with the same
    seed, but the crop positions come from the indexes (shapes only) and pixels are copied
    shard by shard. Shards stay mapped between draws (mapping again costs page faults:
    ~3.5x slower draws) up to ``mapped_budget_mb`` of shard files; beyond it the least
    recently used are released. Memory and address space are bounded by the budget (or
    one input and one target shard, if larger) plus the crops, whatever the store's size.

    Args:
        inputs: the inputs store.
        targets: the paired targets store (same keys and shapes), or None.
        split: "train", "val" or "test".
        size, halo, seed: as for :class:`CropSampler`.
        mapped_budget_mb: shard bytes kept mapped between draws.
    """

    def __init__(
        self,
        inputs: Store,
        targets: Store | None,
        split: str,
        size: int,
        halo: int = 0,
        seed: int = 0,
        mapped_budget_mb: float = MAPPED_BUDGET_MB,
    ):
        if size < 1 or halo < 0:
            raise ValueError(f"crop size must be >= 1 and halo >= 0, got size={size}, halo={halo}")
        side = size + 2 * halo
        self.size, self.halo, self.side = size, halo, side
        self._stores = (inputs, targets)
        self._keys: list[str] = []
        rows, cols = [], []
        keys = inputs.keys(split)
        for key in keys:
            shape = inputs.shard_of(key).shape(key)
            if targets is not None:
                if key not in targets:
                    raise StoreError(f"{targets.root}: no target for input {key!r}; {rebuild_hint(targets.root / 'x')}")
                if targets.shard_of(key).shape(key) != shape:
                    raise StoreError(f"{targets.root}: target {key!r} is {targets.shard_of(key).shape(key)}, its input {shape}")
            if len(shape) != 2:
                raise ValueError(f"{inputs.shard_name(key)}: {key} is not a 2-D array (shape {shape})")
            if shape[0] < side or shape[1] < side:
                continue
            self._keys.append(key)
            rows.append(shape[0] - side + 1)
            cols.append(shape[1] - side + 1)
        self.skipped = len(keys) - len(self._keys)
        self.images = len(self._keys)
        if not self._keys:
            raise ValueError(f"no {split} image is at least {side}x{side} pixels (crop {size} + halo {halo} on each side)")
        self._rows, self._cols = np.array(rows), np.array(cols)
        self._cumulative = np.cumsum(self._rows.astype(np.float64) * self._cols)
        self._has_targets = targets is not None
        self._shard_rank = {id(shard): rank for rank, shard in enumerate(inputs.shards)}
        self._budget = mapped_budget_mb * 2**20
        self._mapped: dict[int, tuple[Shard, ...]] = {}  # by input shard rank, least recently used first
        self.rng = np.random.default_rng(seed)

    def sample(
        self, n: int, out: np.ndarray | None = None, out_targets: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Draw ``n`` crops as :meth:`CropSampler.sample` does, reading one shard at a time."""
        which, ys, xs = self._positions(n)
        inputs = np.empty((n, self.side, self.side), np.float32) if out is None else out
        targets = None
        if self._has_targets:
            targets = np.empty((n, self.size, self.size), np.float32) if out_targets is None else out_targets
        input_store, target_store = self._stores
        side, size, h = self.side, self.size, self.halo
        shard_of = [input_store.shard_of(self._keys[i]) for i in which]
        # Visit crops grouped by shard (store order): each shard is looked up once per draw.
        order = sorted(range(n), key=lambda j: (self._shard_rank[id(shard_of[j])], j))
        rank, pair = -1, ()
        for j in order:
            key = self._keys[which[j]]
            if self._shard_rank[id(shard_of[j])] != rank:
                rank = self._shard_rank[id(shard_of[j])]
                pair = self._use(rank, shard_of[j], key)
            y, x = ys[j], xs[j]
            inputs[j] = pair[0].array(key)[y : y + side, x : x + side]
            if targets is not None:
                targets[j] = pair[1].array(key)[y + h : y + h + size, x + h : x + h + size]
        return inputs, targets

    def _use(self, rank: int, shard: Shard, key: str) -> tuple[Shard, ...]:
        """The (input, target) shards holding ``key``, most recently used; release the
        least recently used others while the mapped total is over the budget."""
        pair = self._mapped.pop(rank, None)
        if pair is None:
            target_store = self._stores[1]
            pair = (shard,) + ((target_store.shard_of(key),) if target_store is not None else ())
        self._mapped[rank] = pair
        mapped = sum(s.nbytes for shards in self._mapped.values() for s in shards)
        for other in list(self._mapped):
            if mapped <= self._budget or other == rank:
                break
            for s in self._mapped.pop(other):
                s.release()
                mapped -= s.nbytes
        return pair

    def release(self) -> None:
        """Unmap every shard this sampler keeps mapped."""
        for shards in self._mapped.values():
            for s in shards:
                s.release()
        self._mapped.clear()
