"""What the ladder's rungs are fitted and scored on: square tiles of the pairs, one plane each.

Tiles carry ``MARGIN`` input pixels around their outputs, so every rung (windows up to 7x7)
predicts them by its own valid arithmetic, with no border rule; held-out tiles score every
candidate the same way (:func:`heldout_rms`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from img2kernel.evaluate.metrics import heldout_rms as blocks_rms
from img2kernel.fit.pairs import Pairs
from img2kernel.models import Model
from img2kernel.models.base import Location
from img2kernel.thresholds import STORAGE_RANGE

MARGIN = 3  # input pixels every tile carries around its outputs: enough for a 7x7 window
TILE = 48
FIT_ROWS = 40_000  # windows the rank rung recomputes
TRAIN_TILES, HELDOUT_TILES = 400, 200


@dataclass
class Tiles:
    """Square tiles of single planes: inputs (n, T + 2m, T + 2m), outputs (n, T, T), usable mask
    (n, T, T), and where each tile's outputs lie in their image (n, 4): top, left, height, width."""

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    where: np.ndarray

    def locations(self) -> list[Location]:
        return [Location(*map(int, row)) for row in self.where]

    @property
    def pixels(self) -> int:
        return int(self.mask.sum())


@dataclass
class LadderData:
    """What the rungs are fitted and scored on: planes of one channel each (a colour filter's
    channels are pooled: every rung after ``linear`` applies alike to each channel)."""

    train: Tiles
    heldout: Tiles
    channels: int
    noise_floor: float
    peak: float  # the output's range, for PSNR
    storage: str


class NoTiles(ValueError):
    """The pairs hold no tile the rungs after ``linear`` could be fitted or scored on."""


def spread(size: int, side: int) -> list[int]:
    """First rows (or columns) of tiles of ``side`` that cover ``MARGIN .. size - MARGIN`` evenly,
    the last flush with the far edge (they overlap where ``side`` does not divide the span): a
    map over the image (models.field) then sees its corners."""
    span = size - 2 * MARGIN
    count = -(-span // side)
    if count == 1:
        return [MARGIN]
    return [MARGIN + round(i * (span - side) / (count - 1)) for i in range(count)]


def sample_tiles(pairs: Pairs, split: str, max_tiles: int, seed: int) -> Tiles:
    """Tiles of ``split``'s usable pixels that cover each image (at most ``max_tiles``, a seeded sample)."""
    rng = np.random.default_rng(seed)
    candidates, usable_of = [], {}
    for index, (x, y) in enumerate(zip(pairs.inputs, pairs.outputs)):
        usable = usable_of[index] = pairs.usable(index, split)
        height, width = usable.shape
        side = min(TILE, height - 2 * MARGIN, width - 2 * MARGIN)
        if side < 8:
            continue
        for top in spread(height, side):
            for left in spread(width, side):
                if usable[top : top + side, left : left + side].mean() > 0.5:
                    for c in range(x.shape[2]):
                        candidates.append((index, c, top, left, side))
    if not candidates:
        raise NoTiles(f"no {split} tile of at least 8x8 usable pixels (images {pairs.inputs[0].shape[1]}x"
                      f"{pairs.inputs[0].shape[0]} and smaller, less a {MARGIN}-pixel margin)")
    side = min(c[4] for c in candidates)
    chosen = rng.permutation(len(candidates))[:max_tiles]
    xs, ys, masks, where = [], [], [], []
    for i in sorted(chosen):
        index, c, top, left, _ = candidates[i]
        xs.append(pairs.inputs[index][top - MARGIN : top + side + MARGIN, left - MARGIN : left + side + MARGIN, c])
        ys.append(pairs.outputs[index][top : top + side, left : left + side, c])
        masks.append(usable_of[index][top : top + side, left : left + side])  # one mask per image, not per tile
        where.append((top, left, *pairs.outputs[index].shape[:2]))
    return Tiles(np.asarray(xs, np.float64), np.nan_to_num(np.asarray(ys, np.float64)), np.asarray(masks),
                 np.asarray(where, dtype=np.int64))


def ladder_data(pairs: Pairs, heldout_split: str, noise_floor: float, seed: int = 0) -> LadderData:
    """Tiles for the rungs (pairs with as many output channels as input channels: no rung after
    ``linear`` maps 3 channels to 1); :class:`NoTiles` when the images leave none."""
    return LadderData(sample_tiles(pairs, "train", TRAIN_TILES, seed), sample_tiles(pairs, heldout_split, HELDOUT_TILES, seed + 1),
                      pairs.c_in, noise_floor, output_peak(pairs), pairs.output_storage)


def output_peak(pairs: Pairs) -> float:
    """The outputs' range for PSNR: the integer file's (255, 65535), else the values' own."""
    low, high = STORAGE_RANGE.get(pairs.output_storage, (None, None))
    if low is None:
        low = min(float(np.nanmin(y)) for y in pairs.outputs)
        high = max(float(np.nanmax(y)) for y in pairs.outputs)
    return (high - low) or 1.0


def sample_pixels(tiles: Tiles, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded sample of at most ``rows`` usable output pixels: (tile, row, column) in the tiles' outputs."""
    rng = np.random.default_rng(seed)
    t, r, c = np.nonzero(tiles.mask)
    pick = rng.permutation(len(t))[:rows]
    return t[pick], r[pick], c[pick]


def windows(tiles: Tiles, k: int, rows: int = FIT_ROWS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, k, k) input windows around a seeded sample of usable output pixels, and their (n,) targets."""
    t, r, c = sample_pixels(tiles, rows, seed)
    r, c = r + MARGIN, c + MARGIN
    h = k // 2
    dy, dx = np.mgrid[-h : h + 1, -h : h + 1]
    patches = tiles.x[t[:, None, None], r[:, None, None] + dy, c[:, None, None] + dx]
    return patches, tiles.y[t, r - MARGIN, c - MARGIN]


def heldout_rms(model: Model, tiles: Tiles) -> float:
    """RMS of (prediction - output) over the tiles' usable pixels, with the model's own output step."""
    return blocks_rms(model, zip(tiles.x, tiles.y, tiles.mask, tiles.locations()))


def window_positions(tiles: Tiles, rows: int = FIT_ROWS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Where the pixels of :func:`windows` (same ``rows`` and ``seed``) lie: (n,) row and (n,)
    column positions as fractions of their image (pixel centres, as :mod:`img2kernel.models.field`)."""
    from img2kernel.models.field import position

    t, r, c = sample_pixels(tiles, rows, seed)
    top, left, height, width = tiles.where[t].T
    return position(top + r, height), position(left + c, width)

