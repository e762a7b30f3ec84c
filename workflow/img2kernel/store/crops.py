"""Random crops of a store's arrays for training, streamed shard by shard in bounded memory
(docs/design.md, "The store")."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from img2kernel.store.shards import Shard, Store, StoreError, rebuild_hint

# Shard bytes a streaming crop sampler keeps mapped between draws (StoreCropSampler).
MAPPED_BUDGET_MB = 256


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
