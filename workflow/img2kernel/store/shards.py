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
        dtype: the dtype every array is stored in: ``float32`` or ``float16`` (our stores), or
            a pairs filter's own ``uint8``/``uint16`` files as they are.
        meta: JSON-serialisable facts about the shard, kept in the index.
    """

    def __init__(self, path: str | os.PathLike, dtype: str = "float32", meta: dict | None = None):
        self.path = Path(path)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        if self.dtype.kind != "f" and self.dtype.name not in ("uint8", "uint16"):
            raise ValueError(f"store dtype must be a float type, uint8 or uint16, got {dtype!r}")
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
