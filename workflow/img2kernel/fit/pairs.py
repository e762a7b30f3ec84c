"""Fit an affine kernel to (input, output) pairs made by any tool (docs/design.md, "Pairs").

Nothing about the tool is assumed:

- **Saturation**: in an integer output file, pixels at the type's limits (0 or 255 for
  8 bits) may be clipped, so they are left out of the fit and of every residual.
- **Border**: unknown, so the fit uses only output pixels whose whole window lies inside
  the image; afterwards each border rule (:mod:`img2kernel.borders`) predicts the edge
  ring and the one with the smallest residual there is reported.
- **Size**: the normal equations of the largest size contain every smaller odd size's,
  so all sizes are solved from one pass; the chosen size is the smallest whose residual
  is within half the noise floor (in quadrature) of the best size's. Colour is sized with
  a kernel per channel, and with the full cross-channel kernel only when the channels mix.
- **Linear or not**: decided by the residual against the noise floor that the output's
  storage implies (8-bit rounding: 1/sqrt(12) = 0.29 levels RMS), not a PSNR.
- **Which residual**: the larger of the train and held-out RMS. With a few pairs the
  held-out one may be a single flat image (a median filter changes almost nothing there),
  and with hundreds of parameters against thousands of pixels the train one is not
  measurably optimistic; a linear tool has both at the floor.
- **Units**: the kernel and bias map input values as stored to output values as stored.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from img2kernel import borders
from img2kernel.colour import Space, space_named
from img2kernel.models import AffineKernel
from img2kernel.models.base import Location
from img2kernel.thresholds import LINEAR_FACTOR, STORAGE_RANGE, WIDENED_8BIT_STEP, as_good, noise_floor, size_is_enough
from img2kernel.sources.geometry import Placement, geometry_of
from img2kernel.sources.pairs import SPLIT_CODES
from img2kernel.sources.pairs_store import LoadedPair, split_codes
from img2kernel.fit import jpeg, roundings
from img2kernel.fit.lstsq import FitSample, normal_equations
from img2kernel.fit.resample import fit_resample, resampling
from img2kernel.evaluate.metrics import heldout_rms as blocks_rms, row_bands

# Rows for the normal equations, at most: about 3e11 multiply-adds (a 15x15 gray kernel on
# 5.9 megapixels, seconds here); a colour fit with three times the features samples rows.
ROW_BUDGET = 3e11


@dataclass
class Pairs:
    """(input, output) pairs as the fit sees them.

    Attributes:
        keys: one name per pair.
        inputs: (H, W, C_in) arrays, values as stored.
        outputs: (H, W, C_out) arrays, values as stored; NaN where unknown.
        splits: (H, W) uint8 arrays of SPLIT_CODES (whole pairs, or tiles of one image).
        input_storage, output_storage: ``uint8``, ``uint16``, ``float32`` or ``float64``.
        output_jpeg: per pair, the output file's JPEG facts (:func:`img2kernel.images.jpeg_facts`)
            or None; empty when no output is a JPEG.
        placements: per pair, how the output file sits on its input's grid
            (:class:`img2kernel.sources.geometry.Placement`: a margin, a crop, a resize, a turn);
            empty means the plain placement for all.
    """

    keys: list[str]
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]
    splits: list[np.ndarray]
    input_storage: str = "float32"
    output_storage: str = "float32"
    output_jpeg: list = field(default_factory=list)
    placements: list = field(default_factory=list)
    # Per pair, its known and unsaturated output pixels of any split: a fit asks for them at
    # every size and structure, and the saturation scan is a pass over the output.
    _usable: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def c_in(self) -> int:
        return self.inputs[0].shape[2]

    @property
    def c_out(self) -> int:
        return self.outputs[0].shape[2]

    def known(self, index: int, split: str | None) -> np.ndarray:
        """(H, W) bool: output pixels of ``split`` (None: any split) whose value is known."""
        y = self.outputs[index]
        mask = np.ones(y.shape[:2], dtype=bool) if y.dtype.kind in "ui" else np.all(np.isfinite(y), axis=2)
        if split is not None:
            mask &= self.splits[index] == SPLIT_CODES[split]
        return mask

    def saturated(self, index: int) -> np.ndarray:
        """(H, W) bool: output pixels at an integer file's limits in any channel (maybe clipped)."""
        y = self.outputs[index]
        if self.output_storage not in STORAGE_RANGE:
            return np.zeros(y.shape[:2], dtype=bool)
        low, high = STORAGE_RANGE[self.output_storage]
        mask = np.empty(y.shape[:2], dtype=bool)
        for r0, r1 in row_bands(*y.shape[:2]):  # (H, W, C) comparisons a band at a time
            mask[r0:r1] = np.any((y[r0:r1] <= low) | (y[r0:r1] >= high), axis=2)
        return mask

    def usable(self, index: int, split: str | None) -> np.ndarray:
        """(H, W) bool: known, unsaturated output pixels of ``split`` (None: any split); a new array."""
        if index not in self._usable:
            self._usable[index] = self.known(index, None) & ~self.saturated(index)
        if split is None:
            return self._usable[index].copy()
        return self._usable[index] & (self.splits[index] == SPLIT_CODES[split])

    def on_own_grid(self) -> "Pairs":
        """These pairs with each output that is every s-th pixel of its input's grid (an integer
        resize) cut back to those samples, its placement a ``scale``: what a resize model
        (:mod:`img2kernel.models.resample`) is fitted and scored on; these pairs where none is."""
        if not any(p.stride != (1, 1) for p in self.placements):
            return self
        outputs, splits, placements = [], [], []
        for x, y, codes, placement in zip(self.inputs, self.outputs, self.splits, self.placements):
            if placement.stride != (1, 1):
                rows, cols = placement.sampled_shape(x.shape)
                cut = placement.cells(x.shape)
                y, codes = np.ascontiguousarray(y[cut]), np.ascontiguousarray(codes[cut])
                placement = Placement(placement.transform, scale=(rows / x.shape[0], cols / x.shape[1]))
            outputs.append(y)
            splits.append(codes)
            placements.append(placement)
        return Pairs(self.keys, self.inputs, outputs, splits, self.input_storage, self.output_storage, self.output_jpeg,
                     placements)

    def samples(self, split: str | None) -> list[FitSample]:
        return [FitSample(x, y, self.usable(i, split)) for i, (x, y) in enumerate(zip(self.inputs, self.outputs))]

    def saturated_pixels(self) -> int:
        return int(sum(self.saturated(i).sum() for i in range(len(self.outputs))))

    def output_step(self) -> int:
        """The spacing of the outputs' values: WIDENED_8BIT_STEP where a 16-bit file holds 8-bit
        levels (every value a multiple of 257, as writing an 8-bit image to 16 bits stores it), else 1."""
        if self.output_storage != "uint16":
            return 1
        inside = False  # a file of only 0 and 65535 says nothing about the step
        for y in self.outputs:
            for r0, r1 in row_bands(*y.shape[:2]):
                band = y[r0:r1]
                if np.any(band % WIDENED_8BIT_STEP):
                    return 1
                inside = inside or bool(np.any((band > 0) & (band < STORAGE_RANGE["uint16"][1])))
        return WIDENED_8BIT_STEP if inside else 1

    def noise_floor(self, step: int | None = None) -> float:
        """The RMS error the outputs' storage alone implies (:func:`img2kernel.thresholds.noise_floor`);
        ``step``: :meth:`output_step`, when already known."""
        return noise_floor(self.output_storage, self.output_rms(), self.output_step() if step is None else step)

    def model_output(self, step: int | None = None) -> str:
        """The output step (:data:`img2kernel.models.base.OUTPUTS`) that writes values as these files store
        them; ``step``: :meth:`output_step`, when already known."""
        if self.output_storage not in STORAGE_RANGE:
            return "float"
        step = self.output_step() if step is None else step
        return "uint16_x257" if step == WIDENED_8BIT_STEP else self.output_storage

    def output_rms(self) -> float:
        total, count = 0.0, 0
        for y in self.outputs:
            for r0, r1 in row_bands(*y.shape[:2]):
                band = np.asarray(y[r0:r1], dtype=np.float64)
                finite = np.isfinite(band)
                total += float(np.sum(np.square(band, where=finite, out=np.zeros_like(band))))
                count += int(finite.sum())
        return math.sqrt(total / count) if count else 0.0


def to_fit_pairs(loaded: list[LoadedPair], manifest: dict) -> Pairs:
    """:class:`Pairs` of decoded pairs (:func:`img2kernel.sources.pairs.read_pairs`), with their split codes."""
    codes = [split_codes(p.ref.key, p.y.shape, p.split, manifest) for p in loaded]  # on the output's grid
    return Pairs([p.ref.key for p in loaded], [p.x for p in loaded], [p.y for p in loaded], codes,
                 manifest["input_storage"], manifest["output_storage"], [p.output_jpeg for p in loaded],
                 [p.placement for p in loaded])


def load_pairs(inputs_folder: str | Path, outputs_folder: str | Path) -> tuple[Pairs, dict]:
    """A pairs filter's stores as :class:`Pairs`, with their split codes; and the store manifest."""
    from img2kernel.store.shards import Store

    manifest = json.loads((Path(inputs_folder) / "manifest.json").read_text())
    inputs, outputs = Store(inputs_folder), Store(outputs_folder)
    keys = inputs.keys()
    xs, ys, codes = [], [], []
    for key in keys:
        x, y = np.asarray(inputs.array(key)), np.asarray(outputs.array(key))
        xs.append(x[..., None] if x.ndim == 2 else x)
        ys.append(y[..., None] if y.ndim == 2 else y)
        codes.append(split_codes(key, y.shape, inputs.split_of(key), manifest))  # on the output's grid
    stored = [manifest["keys"].get(key, {}) for key in keys]
    return Pairs(keys, xs, ys, codes, manifest["input_storage"], manifest["output_storage"],
                 [s.get("output_jpeg") for s in stored], [Placement.from_dict(s.get("placement")) for s in stored]), manifest


@dataclass
class PairsFit:
    """What the pairs fit found; :meth:`summary` is the JSON the train job writes."""

    model: AffineKernel
    ksize: int
    sizes: list[dict]
    structures: list[dict]
    noise_floor: float
    residual_rms: float
    residual_split: str
    linear: bool
    border: dict
    rows: int
    eligible_rows: int
    exact_sums: bool
    saturated_pixels: int
    seconds: float
    timings: dict = field(default_factory=dict)
    compression: dict | None = None  # what the output files went through, when the fit models it (fit.jpeg)
    # The outputs' value step (fit.pairs.Pairs.output_step) and a rounding inside the tool (fit.roundings).
    precision: dict = field(default_factory=lambda: {"output_step": 1, "intermediate": None})
    # Sizes searched up to ``searched`` of ``max_ksize`` (fit_pairs: the larger ones did not need trying).
    size_window: dict | None = None
    geometry: dict | None = None  # where the outputs sit on the inputs' grid (sources.geometry.geometry_of)
    # A resize's kernels as fitted, per axis {offsets, taps}, before a named resampler replaced them (fit.resample)
    fitted_kernels: dict | None = None

    def summary(self) -> dict:
        return {
            "model": self.model.name,
            "description": self.model.describe(),
            "ksize": self.ksize,
            "channels": {"input": self.model.c_in, "output": self.model.c_out, "structure": self.model.structure()},
            # the chosen model's offset per output channel (a ladder model may have none)
            "bias": np.asarray(self.model.tensors().get("bias", [])).tolist(),
            "sizes": self.sizes,
            "structures": self.structures,
            "noise_floor": self.noise_floor,
            "residual_rms": self.residual_rms,
            "residual_split": self.residual_split,
            "residual_in_floors": self.residual_rms / self.noise_floor if self.noise_floor else math.inf,
            "linear": self.linear,
            "border": self.border,
            "rows": self.rows,
            "eligible_rows": self.eligible_rows,
            "exact_sums": self.exact_sums,
            "saturated_pixels": self.saturated_pixels,
            "seconds": self.seconds,
            "timings": self.timings,
            "compression": self.compression,
            "precision": self.precision,
            "size_window": self.size_window,
            "geometry": self.geometry,
            "fitted_kernels": self.fitted_kernels,
        }


def fit_pairs(pairs: Pairs, *, max_ksize: int = 15, ksize: int | None = None, seed: int = 0,
              floor: float | None = None, space: Space | None = None) -> PairsFit:
    """Find the affine kernel, its size, the border rule and the linear verdict for ``pairs``.

    ``floor``: the noise floor to judge by (default: the outputs' storage's); ``space``: a colour
    space the tool works in, whose per-channel structure is then a candidate. A fit that is not
    linear at the storage's floor is tested for an 8-bit rounding inside the tool
    (:mod:`img2kernel.fit.roundings`) and, when one explains it, fitted again at that floor."""
    started = time.perf_counter()
    if not pairs.keys:
        raise ValueError("no pairs to fit")
    if resampling(pairs):  # outputs on their own grid: a resize's continuous kernels, not a kernel on the input's grid
        fit = fit_resample(pairs, seed=seed, floor=floor, started=started)
        fit.geometry = geometry_of(pairs.placements)
        return fit
    smallest_side = min(min(x.shape[:2]) for x in pairs.inputs)
    largest = ksize or max_ksize
    if largest > smallest_side:
        raise ValueError(
            f"a {largest}x{largest} kernel does not fit in the smallest image ({smallest_side} pixels); "
            "set a smaller ksize or max_ksize"
        )
    if ksize is None and max_ksize > FIRST_WINDOW:
        # Sizes up to FIRST_WINDOW first (their sums cost a twentieth of 15x15's); the larger ones
        # only when the largest of those still gains by the evidence.
        first = _fit_up_to(pairs, FIRST_WINDOW, None, seed, floor, space, started)
        if first.ksize < FIRST_WINDOW:
            first.size_window = {"searched": FIRST_WINDOW, "max_ksize": max_ksize}
            first.geometry = geometry_of(pairs.placements)
            return resize_if_as_good(pairs, first, seed, floor, started)
    fit = _fit_up_to(pairs, largest, ksize, seed, floor, space, started)
    fit.geometry = geometry_of(pairs.placements)
    return resize_if_as_good(pairs, fit, seed, floor, started)


def resize_if_as_good(pairs: Pairs, fit: PairsFit, seed: int, floor: float | None, started: float) -> PairsFit:
    """The fit of outputs that are an integer resize of their inputs (every s-th pixel, no crop), or
    the resize model of the same pairs on their own grid (fit.resample) where it explains them as
    well and names its resampler: its taps are then exact, and the tool's rounding between its
    passes is said, not taken for an offset. A tool that filters with a kernel no separable
    resampler is (a blur, then every other pixel) keeps its kernel."""
    if not pairs.placements or not all(p.stride != (1, 1) and all(p.origin[a] < p.stride[a] and p.end[a] < p.stride[a]
                                                                  for a in (0, 1)) for p in pairs.placements):
        return fit
    own = pairs.on_own_grid()
    try:
        resize = fit_resample(own, seed=seed, floor=floor, started=started)
    except ValueError:  # images too small for a resize's kernel: the kernel fit stands
        return fit
    if resize.linear and resize.model.identifies and as_good(resize.residual_rms, fit.residual_rms, fit.noise_floor):
        resize.geometry = geometry_of(own.placements)
        return resize
    return fit


def _fit_up_to(pairs: Pairs, largest: int, ksize: int | None, seed: int, floor: float | None, space: Space | None,
               started: float) -> PairsFit:
    """:func:`fit_pairs` with sizes searched up to ``largest`` (``ksize``: that size alone)."""
    luma = jpeg.luma_pairs(pairs)
    if luma is not None:
        found = fit_shared_from_luma(pairs, luma, largest, ksize, seed, started)
        if found.linear:
            return found
    sizes_to_try = [ksize] if ksize else list(range(1, largest + 1, 2))
    held_out = next((s for s in ("val", "test") if any(pairs.usable(i, s).any() for i in range(len(pairs.keys)))), "train")
    judged_by = floor
    value_step = pairs.output_step()  # one scan of the outputs serves the floor, the output step and the record
    floor = pairs.noise_floor(value_step) if floor is None else floor
    halo = largest // 2  # every size is scored on the same pixels: those of the largest
    timings: dict = {}
    grids = jpeg.grids_of(pairs)  # JPEG outputs are fitted through their compression

    def sums(k: int, cross_channel: bool):
        step = time.perf_counter()
        blocks, features = (1, pairs.c_in * k * k + 1) if cross_channel else (pairs.c_in, k * k + 1)
        if grids:
            equations = jpeg.jpeg_normal_equations(pairs.samples("train"), grids, k, input_storage=pairs.input_storage,
                                                   cross_channel=cross_channel)
        else:
            equations = normal_equations(
                pairs.samples("train"), k, input_storage=pairs.input_storage, output_storage=pairs.output_storage,
                max_rows=int(ROW_BUDGET / (blocks * features**2)), seed=seed, cross_channel=cross_channel)
        timings["normal_equations"] = timings.get("normal_equations", 0.0) + time.perf_counter() - step
        return equations

    def search(equations, structure: str, solve) -> tuple[list[dict], dict, dict]:
        step = time.perf_counter()
        sizes, models = [], {}
        for k in sizes_to_try:
            model = models[k] = AffineKernel(*solve(equations, k))
            train, held = equations.rms_residual(k, model.kernel, model.bias), heldout_rms(model, pairs, held_out, halo)
            sizes.append({"ksize": k, "structure": structure, "parameters": model.n_parameters, "train_rms": train,
                          "heldout_rms": held, "residual_rms": max(train, held)})
        values = equations.rows * pairs.c_out
        chosen = next(s for i, s in enumerate(sizes) if all(
            size_is_enough(s["residual_rms"], t["residual_rms"], t["parameters"] - s["parameters"], values, floor,
                           independent=not grids)
            for t in sizes[i + 1:]))
        timings["sizes"] = timings.get("sizes", 0.0) + time.perf_counter() - step
        return sizes, models, chosen

    def structure(equations, k: int, full: AffineKernel, full_row: dict):
        step = time.perf_counter()
        found = choose_structure(equations, k, full, full_row, pairs, held_out, halo, floor, space)
        timings["structure"] = timings.get("structure", 0.0) + time.perf_counter() - step
        return found

    full_solve = lambda equations, k: equations.solve(k)  # noqa: E731
    if pairs.c_in == pairs.c_out > 1:
        # Cheap structures first: the size from a kernel per channel (each channel's own block of
        # the sums), then the full cross-channel sums at that size only, to test whether the
        # channels mix. Only a tool whose channels do mix pays for the full system at every size
        # (and has its size found with it).
        equations = sums(largest, cross_channel=False)
        sizes, _, chosen = search(equations, "per-channel", lambda e, k: e.solve_structured(k, "per-channel"))
        equations = sums(chosen["ksize"], cross_channel=True)
        full = AffineKernel(*equations.solve(chosen["ksize"]))
        train, held = equations.rms_residual(chosen["ksize"], full.kernel, full.bias), heldout_rms(full, pairs, held_out, halo)
        full_row = {"train_rms": train, "heldout_rms": held, "residual_rms": max(train, held)}
        model, structures = structure(equations, chosen["ksize"], full, full_row)
        if next(s for s in structures if s["chosen"])["structure"] not in CHANNEL_WISE:
            equations = sums(largest, cross_channel=True) if chosen["ksize"] < largest else equations
            sizes, models, chosen = search(equations, "full", full_solve)
            model, structures = structure(equations, chosen["ksize"], models[chosen["ksize"]], chosen)
    else:
        equations = sums(largest, cross_channel=True)
        sizes, models, chosen = search(equations, "full", full_solve)
        model, structures = structure(equations, chosen["ksize"], models[chosen["ksize"]], chosen)
    chosen = {**chosen, "residual_rms": next(s["residual_rms"] for s in structures if s["chosen"])}
    compression = None if luma is None else {  # colour JPEGs whose luma is not one kernel's: fitted on pixels
        "kind": "jpeg-pixels", "quality": found.compression["quality"],
        "luma_linear": bool(found.residual_rms <= LINEAR_FACTOR * found.noise_floor)}
    if grids:
        compression = jpeg.describe(grids)
        if next(s for s in structures if s["chosen"])["structure"] == "full":
            step = time.perf_counter()
            kernel, bias, compression["refinement"] = jpeg.refine_in_intervals(
                model.kernel, model.bias, pairs.samples("train"), grids, seed)
            model = AffineKernel(kernel, bias)
            train, held = equations.rms_residual(model.ksize, kernel, bias), heldout_rms(model, pairs, held_out, halo)
            chosen = {**chosen, "train_rms": train, "heldout_rms": held, "residual_rms": max(train, held)}
            if model.c_in == model.c_out == 1 and model.ksize > 1:
                model, chosen = separable_in_intervals(model, chosen, equations, pairs, held_out, halo, floor, structures)
            timings["intervals"] = time.perf_counter() - step
    step = time.perf_counter()
    border = detect_border(model, pairs)
    timings["border"] = time.perf_counter() - step
    final = AffineKernel(model.kernel, model.bias, output=pairs.model_output(value_step))
    fit = PairsFit(
        model=final,
        ksize=chosen["ksize"],
        sizes=sizes,
        structures=structures,
        noise_floor=floor,
        residual_rms=chosen["residual_rms"],
        residual_split=held_out,
        linear=chosen["residual_rms"] <= LINEAR_FACTOR * floor,
        border=border,
        rows=equations.rows,
        eligible_rows=equations.eligible_rows,
        exact_sums=equations.exact,
        saturated_pixels=pairs.saturated_pixels(),
        seconds=time.perf_counter() - started,
        timings=timings,
        compression=compression,
        precision={"output_step": value_step, "intermediate": None},
    )
    if fit.linear or judged_by is not None or grids or luma is not None:
        return fit
    inside = roundings.intermediate_rounding(model, pairs, floor)
    if inside is None:
        return fit
    again = fit_pairs(pairs, max_ksize=largest, ksize=ksize, seed=seed, floor=inside["floor"],
                      space=space_named(inside["space"]))
    again.precision["intermediate"] = inside
    again.seconds = time.perf_counter() - started
    return again


CHANNEL_WISE = ("shared", "per-channel")  # structures whose output channel reads its own input channel only
# Sizes are searched up to this first; larger ones only when this one still beats the smaller by the
# evidence (a kernel with taps beyond 7x7 and none at its edge is not one tools use).
FIRST_WINDOW = 7
SEPARABLE = "separable (a column kernel times a row kernel)"


def separable_parameters(ksize: int) -> int:
    """Free parameters of a separable K x K kernel and its bias: u and v, less one shared scale, and the bias."""
    return 2 * ksize


def fit_shared_from_luma(pairs: Pairs, luma: Pairs, max_ksize: int, ksize: int | None, seed: int, started: float) -> PairsFit:
    """Colour pairs whose outputs are colour JPEGs, fitted through the files' luma (fit.jpeg).

    The kernel and its size come from the inputs' luma against the files' (a tool that applies
    one kernel to every channel maps one to the other with it). Then, at that size, the full
    kernel from the inputs' RGB to the files' luma is solved: the channels enter as the luma
    weights times one kernel when that kernel explains the files' luma as well as the full one
    does (the structures' tolerance). When both hold, the model applies the kernel to each
    channel; else the result is not linear and the caller fits the decoded pixels.
    """
    found = fit_pairs(jpeg.gray_of(luma), max_ksize=max_ksize, ksize=ksize, seed=seed)
    k, bias = found.model.kernel[0, 0], found.model.bias
    check = fit_pairs(luma, ksize=found.ksize, seed=seed)
    full = next(s for s in check.structures if s["structure"] == "full")
    as_luma = AffineKernel(jpeg.JFIF_LUMA[None, :, None, None] * k, bias)
    halo = found.ksize // 2
    train, held = heldout_rms(as_luma, luma, "train", halo), heldout_rms(as_luma, luma, check.residual_split, halo)
    shared = {"structure": "shared", "parameters": k.size + 1, "train_rms": train, "heldout_rms": held,
              "residual_rms": max(train, held)}
    channels_as_luma = as_good(shared["residual_rms"], full["residual_rms"], found.noise_floor)
    model = AffineKernel(np.eye(3)[:, :, None, None] * k, np.full(3, bias[0]))
    structures = [{**shared, "parameters": model.n_parameters, "chosen": True}] + [
        {**s, "structure": f"{s['structure']}, RGB to the files' luma", "chosen": False} for s in check.structures]
    linear = found.linear and channels_as_luma
    compression = {**found.compression, "plane": "luma of colour files", "channels_as_luma": bool(channels_as_luma)}
    border = detect_border(model, pairs) if linear else found.border
    return PairsFit(
        model=AffineKernel(model.kernel, model.bias, output=pairs.model_output()),
        ksize=found.ksize, sizes=found.sizes, structures=structures, noise_floor=found.noise_floor,
        residual_rms=found.residual_rms, residual_split=found.residual_split, linear=linear, border=border,
        rows=found.rows, eligible_rows=found.eligible_rows, exact_sums=False, saturated_pixels=pairs.saturated_pixels(),
        seconds=time.perf_counter() - started, timings={**found.timings, "channels": check.seconds}, compression=compression)


def separable_in_intervals(model: AffineKernel, chosen: dict, equations, pairs: Pairs, split: str, halo: int,
                           floor: float, structures: list[dict]) -> tuple[AffineKernel, dict]:
    """A JPEG fit's kernel held to its intervals, or its separable part when that explains the files
    as well (the structures' tolerance): a smooth kernel's finest detail is what the quantizer
    zeroes, and one column and one row kernel leave it no room. ``structures`` gains its row."""
    left, singular, right = np.linalg.svd(model.kernel[0, 0])
    kernel = (singular[0] * np.outer(left[:, 0], right[0]))[None, None]
    separable = AffineKernel(kernel, equations.bias_for(model.ksize, kernel))
    train, held = equations.rms_residual(model.ksize, kernel, separable.bias), heldout_rms(separable, pairs, split, halo)
    row = {"structure": f"{SEPARABLE}, held to the intervals", "parameters": separable_parameters(model.ksize), "train_rms": train,
           "heldout_rms": held, "residual_rms": max(train, held)}
    taken = as_good(row["residual_rms"], chosen["residual_rms"], floor)
    for other in structures:
        other["chosen"] = other["chosen"] and not taken
    structures.insert(0, {**row, "chosen": taken})
    return (separable, {**chosen, **row}) if taken else (model, chosen)


def choose_structure(equations, ksize: int, full: AffineKernel, full_row: dict, pairs: Pairs, split: str, halo: int,
                     floor: float, space: Space | None = None) -> tuple[AffineKernel, list[dict]]:
    """The simplest channel structure whose held-out residual is within the noise of the full model's.

    Candidates, fewest parameters first: a separable kernel (gray: a column kernel times a row
    kernel, as Gaussians, boxes and Sobels are), one kernel shared by every channel, a kernel per
    channel (both solved exactly from the same sums), a channel matrix times one kernel
    (the rank-1 part of the full fit: RGB to gray then a kernel, gray to RGB with gains),
    and the full cross-channel kernel; with a ``space`` the tool works in (fit.roundings), a
    kernel per channel of that space, or the space's gray then one kernel, too. Noise alone never makes a per-channel filter look
    cross-channel: a candidate is kept when its residual is within half the noise floor
    (in quadrature) of the best candidate's.
    """
    candidates = []
    if full.c_in == full.c_out > 1:
        for structure in CHANNEL_WISE:
            kernel, bias = equations.solve_structured(ksize, structure)
            candidates.append((structure, AffineKernel(kernel, bias)))
    if space is not None and equations.cross_channel and space.channels == 1:  # gray with the space's weights, one kernel
        within, bias = equations.within(space.matrix).solve(ksize)
        candidates.append((f"{space.name}, then one kernel", AffineKernel(within * space.matrix[0][None, :, None, None], bias)))
    elif space is not None and equations.cross_channel and full.c_out == space.channels:
        within, bias = equations.within(space.matrix, space.matrix).solve_structured(ksize, "per-channel")
        candidates.append((f"per-channel in {space.name}",
                           AffineKernel(space.kernel_to_rgb(within), np.linalg.inv(space.matrix) @ bias)))
    if full.c_in == full.c_out == 1 and ksize > 1 and not jpeg.grids_of(pairs):  # a Gaussian, a box, a Sobel: two 1-D kernels
        # (JPEG fits: from the kernel held to its intervals, separable_in_intervals)
        kernel, bias = equations.solve_separable(ksize, full.kernel[0, 0])
        candidates.append((SEPARABLE, AffineKernel(kernel, bias)))
    if full.c_in * full.c_out > 1:
        c_out, c_in, k, _ = full.kernel.shape
        u, sv, vt = np.linalg.svd(full.kernel.reshape(c_out * c_in, k * k), full_matrices=False)
        rank1 = (u[:, :1] * sv[:1]) @ vt[:1]
        candidates.append(("channel matrix x one kernel", AffineKernel(rank1.reshape(full.kernel.shape), full.bias)))
    rows = []
    for name, m in candidates:
        train, held = equations.rms_residual(ksize, m.kernel, m.bias), heldout_rms(m, pairs, split, halo)
        free = separable_parameters(ksize) if name == SEPARABLE else m.n_parameters
        rows.append({"structure": name, "parameters": free, "train_rms": train, "heldout_rms": held,
                     "residual_rms": max(train, held), "model": m})
    rows.append({"structure": "full", "parameters": full.n_parameters, "train_rms": full_row["train_rms"],
                 "heldout_rms": full_row["heldout_rms"], "residual_rms": full_row["residual_rms"], "model": full})
    best = min(r["residual_rms"] for r in rows)
    chosen = next(r for r in sorted(rows, key=lambda r: r["parameters"])
                  if as_good(r["residual_rms"], best, floor))
    table = [{**{k: v for k, v in r.items() if k != "model"}, "chosen": r is chosen} for r in rows]
    return chosen["model"], table


def heldout_rms(model: AffineKernel, pairs: Pairs, split: str, halo: int) -> float:
    """RMS of (prediction - output) over ``split``'s usable pixels at least ``halo`` from the edge.

    The same pixels for every model size (``halo`` of the largest), no border rule involved.
    JPEG outputs are compared through their compression (:func:`img2kernel.fit.jpeg.jpeg_residual`):
    the same units and floor.
    """
    grids = jpeg.grids_of(pairs)
    if grids:
        return jpeg.jpeg_residual(model, pairs, grids, split, halo)

    def blocks():
        for i, (x, y) in enumerate(zip(pairs.inputs, pairs.outputs)):
            inner = (slice(halo, y.shape[0] - halo), slice(halo, y.shape[1] - halo))
            mask = pairs.usable(i, split)[inner]
            if mask.any():
                yield x, y[inner], mask, Location(halo, halo, *y.shape[:2])

    return blocks_rms(model, blocks(), output="float")


def detect_border(model: AffineKernel, pairs: Pairs) -> dict:
    """Which border rule reproduces the outputs' edge ring best, with the RMS of each rule there.

    Returns ``{"rule": ..., "rms": {rule: value}, "ring_pixels": n}``; ``rule`` is
    ``"none needed"`` for a 1x1 kernel and ``"valid-mode output"`` when every output's
    ring is unknown (outputs cropped inside their inputs by at least the kernel's margin).
    """
    h = model.halo
    if h == 0:
        return {"rule": "none needed", "rms": {}, "ring_pixels": 0, "equivalent": [], "note": "a 1x1 kernel reads no pixel outside the image"}
    rules = [r for r in borders.RULES if r != "unfiltered" or model.c_in == model.c_out]
    sums = dict.fromkeys(rules, 0.0)
    count = 0
    for i, (x, y) in enumerate(zip(pairs.inputs, pairs.outputs)):
        use = pairs.usable(i, None)
        for r0, r1, c0, c1 in ring_strips(y.shape, h):
            keep = use[r0:r1, c0:c1]
            if not keep.any():
                continue
            target = np.asarray(y[r0:r1, c0:c1][keep], dtype=np.float64)
            count += target.size
            for rule in rules:
                sums[rule] += float(np.sum(np.square(ring_prediction(model, x, rule, (r0, r1, c0, c1))[keep] - target)))
    if count == 0:
        return {"rule": "valid-mode output", "rms": {}, "ring_pixels": 0, "equivalent": [],
                "note": "the outputs have no edge ring: every output pixel's window lies inside its input (a valid-mode or cropped output)"}
    return borders.best_rule(sums, count)


def ring_strips(shape: tuple[int, ...], halo: int) -> list[tuple[int, int, int, int]]:
    """(row0, row1, col0, col1) of four strips that cover an (H, W) image's outer ``halo`` ring once:
    the top and bottom rows, then the left and right columns between them."""
    height, width = shape[:2]
    top, bottom = min(halo, height), max(height - halo, min(halo, height))
    left, right = min(halo, width), max(width - halo, min(halo, width))
    strips = [(0, top, 0, width), (bottom, height, 0, width), (top, bottom, 0, left), (top, bottom, right, width)]
    return [s for s in strips if s[1] > s[0] and s[3] > s[2]]


def ring_prediction(model, image: np.ndarray, rule: str, strip: tuple[int, int, int, int]) -> np.ndarray:
    """(h, w, C_out) float64 prediction of one strip of the image under ``rule``: its halo read
    by the rule (the strip alone is padded, not the image), ``unfiltered`` the input itself."""
    r0, r1, c0, c1 = strip
    if rule == "unfiltered":
        values = np.asarray(image[r0:r1, c0:c1], dtype=np.float64)
    else:
        values = model.predict_valid(borders.tile_with_halo(image, r0, r1, c0, c1, model.halo, rule, np.float64), output="float")
    return values.reshape(r1 - r0, c1 - c0, -1)
