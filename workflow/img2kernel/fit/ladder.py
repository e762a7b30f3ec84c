"""Beyond one kernel: the ladder of models, each the simplest explanation at its step.

When the linear verdict rejects a filter, the rungs after ``linear`` are fitted on the same
pairs (docs/design.md, "The ladder"), in order of learned weights:

- ``rank``: an order statistic over a square or disk footprint (median, erosion,
  dilation, a percentile), optionally followed by an affine step, found by recomputing it;
- ``curve``: a kernel, then a learned piecewise-linear curve, alone or beside a linear
  skip path (gamma after a blur, |derivative|, clipped edges, thresholded unsharp masking);
- ``magnitude``: the square root of a sum of squares of n = 1..3 kernels;
- ``two curves``: a learned curve, a kernel, another learned curve (a tool's own gamma);
- ``spatially varying``: a gain map or a kernel map over the image (vignetting, a blur that
  grows towards the corners), whose candidates read where each tile lies in its image;
- ``cnn``: a small network, the fallback, reported as a fit and never as an identification.

Every candidate is scored by its own prediction (:meth:`Model.predict_valid`) on held-out
tiles, as RMS in the output's units next to the storage's noise floor. The chosen model is
the first rung whose held-out residual is within ``LINEAR_FACTOR`` noise floors; when none
is, the best held-out PSNR, unless an earlier (smaller) rung is within ``PSNR_TOLERANCE_DB``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from img2kernel.evaluate.metrics import psnr_db
from img2kernel.fit import rungs
from img2kernel.fit.pairs import Pairs
from img2kernel.fit.smallest import smallest_forms
from img2kernel.fit.tiles import LadderData, NoTiles, heldout_rms, ladder_data, output_peak
from img2kernel.models import AffineKernel, Model
from img2kernel.thresholds import LINEAR_FACTOR, PSNR_TOLERANCE_DB, as_good

LINEAR = AffineKernel.rung  # the first rung: one kernel, the least-squares fit


@dataclass
class Ladder:
    rows: list[dict]
    chosen: str
    model: Model
    seconds: float
    notes: list[str] = field(default_factory=list)
    smallest: list[dict] = field(default_factory=list)  # see img2kernel.fit.smallest

    def summary(self) -> dict:
        return {"model": self.chosen, "ladder": self.rows, "ladder_seconds": self.seconds, "ladder_notes": self.notes,
                "smallest_forms": self.smallest}


def ladder_fields(model: Model, info: dict, expected_rung: str | None = None) -> dict:
    """The evaluation JSON's fields about the chosen model and its ladder, from the train job's
    sidecar (what :meth:`Ladder.summary` wrote) and the model file's model; ``expected_rung``:
    the rung of the filter's declared structure (None for pairs, whose structure is unknown)."""
    return {
        "expected_rung": expected_rung,
        "model": info.get("model", LINEAR),
        "model_class": model.name,
        "model_description": model.describe(),
        "ladder": info.get("ladder", []),
        "ladder_notes": info.get("ladder_notes", []),
        "smallest_forms": info.get("smallest_forms", []),
    }


def ladder_sentence(rows: list[dict], chosen: str, expected_rung: str | None = None) -> str:
    """The ladder's answer as a clause of the verdict: what the chosen rung is and how close
    it comes, and, when the filter's true structure is known, whether that is it. Empty when
    the ladder stopped at ``linear``."""
    row = next((r for r in rows if r["model"] == chosen), None)
    if row is None or chosen == LINEAR and len(rows) == 1:
        return ""
    found = ""
    if expected_rung is not None:
        found = "; the true structure" if chosen == expected_rung else f"; its true structure is a {expected_rung} model"
    if row["adequate"]:
        return (f"; it is a {row['description']} ({chosen} model, held-out residual "
                f"{row['residual_in_floors']:.2f}x the floor{found})")
    kind = "closest, not exact" if row.get("identifies", True) else "a fit, not an identification"
    return (f"; no rung reaches the floor: the {chosen} model comes closest ({row['description']}, "
            f"{row['psnr_db']:.1f} dB held out, {kind}{found})")


def row_of(rung: str, model: Model, residual: float, noise_floor: float, peak: float, seconds: float, origin: str) -> dict:
    """One rung's line of the ladder: its model in words, weights, held-out RMS (and in noise floors), PSNR, seconds."""
    return {
        "model": rung,
        "description": model.describe(),
        "params": model.n_parameters,
        "residual": residual,
        "residual_in_floors": residual / noise_floor if noise_floor > 0 else math.inf,
        "psnr_db": psnr_db(residual, peak),
        "seconds": seconds,
        "adequate": residual <= LINEAR_FACTOR * noise_floor,
        "identifies": model.identifies,
        "origin": origin,
    }


def best_candidate(candidates: list[Model], data: LadderData) -> tuple[Model, float]:
    """The smallest candidate (fewest parameters first) within ``SIZE_TOLERANCE`` floors of the best held-out RMS."""
    scored = sorted(((m, heldout_rms(m, data.heldout)) for m in candidates), key=lambda s: (s[0].n_parameters, s[1]))
    best = min(rms for _, rms in scored)
    return next((m, rms) for m, rms in scored if as_good(rms, best, data.noise_floor))


def choose(rows: list[dict]) -> int:
    """The first adequate rung; else the best PSNR, or an earlier rung within ``PSNR_TOLERANCE_DB`` of it."""
    for i, row in enumerate(rows):
        if row["adequate"]:
            return i
    best = max(row["psnr_db"] for row in rows)
    return next(i for i, row in enumerate(rows) if row["psnr_db"] >= best - PSNR_TOLERANCE_DB)


@dataclass
class Given:
    """A model a rung does not need to fit: the linear fit, or the filter's own trained model."""

    model: Model
    residual: float | None = None  # held-out RMS; None: scored on the ladder's held-out tiles
    seconds: float = 0.0
    origin: str = "fitted"


def climb(data: LadderData, given: dict[str, Given], seed: int = 0,
          rung_fits: list[tuple[str, Callable]] | None = None) -> Ladder:
    """Climb from ``linear`` (which must be given) until a rung reaches the noise floor.

    A rung in ``given`` is not fitted: its model is scored as it is (a trained model of the
    filter's declared structure stands on its own rung). Rungs above the first adequate one
    are not tried: the simplest adequate explanation is the answer.
    """
    started = time.perf_counter()
    rows, models, notes = [], [], []
    for rung, fit in [(LINEAR, None)] + list(rung_fits or rungs.RUNGS):
        step = time.perf_counter()
        if rung in given:
            item = given[rung]
            residual = item.residual if item.residual is not None else heldout_rms(item.model, data.heldout)
            model, seconds, origin = item.model, item.seconds + time.perf_counter() - step, item.origin
        elif fit is None:
            raise ValueError("climb needs the linear fit")
        else:
            try:
                candidates = fit(data, seed)
            except rungs.NotTried as reason:
                notes.append(f"{rung}: not tried: {reason}")
                continue
            if not candidates:
                notes.append(f"{rung}: not tried for a {data.channels}-channel filter")
                continue
            model, residual = best_candidate(candidates, data)
            seconds, origin = time.perf_counter() - step, "fitted"
        rows.append(row_of(rung, model, residual, data.noise_floor, data.peak, seconds, origin))
        models.append(model)
        if rows[-1]["adequate"]:
            break
    index = choose(rows)
    # A colour pairs filter's linear fit reads every channel at once, not the pooled planes:
    # its smallest forms are scored on the pairs themselves (ladder_for_pairs).
    smallest = (smallest_forms(models[index], lambda m: heldout_rms(m, data.heldout), data.noise_floor, data.peak)
                if models[index].c_in == 1 else [])
    return Ladder(rows, rows[index]["model"], models[index], time.perf_counter() - started, notes, smallest)


def single_rung(rung: str, model: Model, residual: float, noise_floor: float, peak: float, seconds: float,
                origin: str = "fitted") -> Ladder:
    """The ladder of a filter the first rung explains: nothing above it is tried."""
    return Ladder([row_of(rung, model, residual, noise_floor, peak, seconds, origin)], rung, model, 0.0)


def pairs_from_stores(inputs_folder, targets_folder, max_images: int = 12, output_storage: str = "float32",
                      output_jpeg: dict | None = None) -> Pairs:
    """Train and val images of our own stores as :class:`Pairs` (the test split stays unseen);
    ``output_storage`` ``uint8`` when the targets hold 8-bit values (``output: abs_uint8``, ``jpeg``);
    ``output_jpeg``: the targets' JPEG facts (:meth:`img2kernel.sources.filters.Filter.jpeg_facts`),
    each target a whole JPEG whose grid starts at its pixel (0, 0)."""
    from img2kernel.sources.pairs import SPLIT_CODES
    from img2kernel.store.shards import Store

    inputs, targets = Store(inputs_folder), Store(targets_folder)
    keys, xs, ys, codes = [], [], [], []
    for split in ("train", "val"):
        for key in inputs.keys(split)[:max_images]:
            x = inputs.array(key).astype(np.float64)
            keys.append(key)
            xs.append(x[..., None])
            ys.append(targets.array(key).astype(np.float64)[..., None])
            codes.append(np.full(x.shape, SPLIT_CODES[split], np.uint8))
    return Pairs(keys, xs, ys, codes, "float32", output_storage, [output_jpeg] * len(keys) if output_jpeg else [])


def ladder_for_pairs(pairs: Pairs, fit, seed: int = 0) -> Ladder:
    """The ladder of a ``pairs`` filter after its linear fit (:class:`img2kernel.fit.pairs.PairsFit`).

    A linear verdict ends it at ``linear``. Otherwise the rungs are climbed on tiles of the
    train split, scored on the split the linear fit was judged on; the chosen model gets the
    output file's rounding and, for colour pairs, applies to every channel.
    """
    from img2kernel.fit.pairs import heldout_rms as pairs_heldout_rms

    def linear_only(note: str | None = None) -> Ladder:
        ladder = single_rung(LINEAR, fit.model, fit.residual_rms, fit.noise_floor, output_peak(pairs), fit.seconds)
        if note:
            ladder.notes.append(note)
        ladder.smallest = linear_smallest()
        return ladder

    def linear_smallest() -> list[dict]:
        return smallest_forms(fit.model.with_output("float"),
                              lambda m: pairs_heldout_rms(m, pairs, fit.residual_split, m.halo),
                              fit.noise_floor, output_peak(pairs))

    if fit.linear:
        return linear_only()
    if fit.model.resamples:
        return linear_only("the rungs after linear read outputs on their inputs' grid, and a resize by this ratio has a "
                           "grid of its own: nothing more was tried")
    if pairs.c_in != pairs.c_out:
        return linear_only(f"no rung after linear maps {pairs.c_in} channels to {pairs.c_out}: nothing more was tried")
    try:
        data = ladder_data(pairs, fit.residual_split, fit.noise_floor, seed)
    except NoTiles as error:
        return linear_only(f"the rungs after linear were not tried: {error}")
    # The rungs are scored on pixels: a fit made through a file's compression (fit.jpeg) has its
    # residual in other units, so climb scores the linear model on the same pixels as the rest.
    linear_residual = None if fit.compression else fit.residual_rms
    ladder = climb(data, {LINEAR: Given(fit.model.with_output("float"), linear_residual, fit.seconds)}, seed)
    if ladder.chosen == LINEAR:
        ladder.model = fit.model
        if not ladder.smallest:  # climb scored only one-channel models on its planes
            ladder.smallest = linear_smallest()
    else:
        model = ladder.model.with_channels(pairs.c_in) if pairs.c_in > 1 else ladder.model
        ladder.model = model.with_output(fit.model.output)
    return ladder


def ladder_for_filter(inputs_folder, targets_folder, trained: Model | None, linear: Model, trained_seconds: float,
                      seed: int = 0, output_storage: str = "float32") -> Ladder:
    """The ladder of one of our nonlinear filters, on its stores' train and val images.

    ``linear`` (the least-squares kernel) stands on the first rung and the trained model
    of the filter's declared structure on its own rung (:attr:`Model.ladder_rung`), scored
    as they are; the other rungs are fitted, so a median or a kernel with a ``then`` step
    is identified by the ladder itself. ``trained`` is None when the filter's structure is
    not one the trainer holds (a ``then`` step). ``output_storage``: ``uint8`` for targets
    rounded to 8 bits (``output: uint8``), whose noise floor is the rounding's.
    """

    pairs = pairs_from_stores(inputs_folder, targets_folder, output_storage=output_storage)
    floor = pairs.noise_floor()
    data = ladder_data(pairs, "val", floor, seed)
    given = {LINEAR: Given(linear, origin="least squares")}
    if trained is not None:
        given[trained.ladder_rung] = Given(trained, seconds=trained_seconds, origin="trained")
    return climb(data, given, seed)
