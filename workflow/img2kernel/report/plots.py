"""Plots for the report (matplotlib, Agg, PNG): kernels, training curves, test images, summary."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from img2kernel.report import SHOWN_WIDTH  # noqa: E402

if TYPE_CHECKING:  # pandas costs 0.3 s to import; only the summary uses it
    import pandas as pd

DPI = 110  # figures are drawn at most SHOWN_WIDTH pixels wide, as the page shows them
# zlib level 1: these PNGs are intermediate (the report re-encodes them as WebP), and
# level 6 (the default) spends a third of an evaluation job's figure time compressing.
PNG_COMPRESS_LEVEL = 1


def save(fig, path) -> None:
    fig.savefig(path, dpi=DPI, pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})


ANNOTATED_MAX = 9  # kernels up to 9x9 carry their numbers in the cells; larger ones only colours


def _annotated(ax, kernel: np.ndarray, vmax: float, title: str) -> None:
    image = ax.imshow(kernel, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    size = kernel.shape[0]
    if size > ANNOTATED_MAX:
        ax.set_title(f"{title} ({size}x{size})", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        return image
    fontsize = max(5, 11 - size)
    for (row, col), value in np.ndenumerate(kernel):
        text = "0" if value == 0 else f"{value:.3g}" if abs(value) >= 1e-3 else f"{value:.0e}"
        ax.text(col, row, text, ha="center", va="center", fontsize=fontsize,
                color="white" if abs(value) > 0.6 * vmax else "black")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def kernels_figure(evaluation: dict, path: str | Path) -> None:
    """True, learned and difference kernels, one row per kernel, one colour scale."""
    learned = np.asarray(evaluation["learned_kernels"])
    true = np.asarray(evaluation["true_kernels"]) if evaluation["true_kernels"] is not None else None
    oracle = np.asarray(evaluation["oracle_kernels"]) if evaluation["oracle_kernels"] is not None else None
    rows = learned.shape[0]
    panels = [("learned", learned)]
    if true is not None:
        panels = [("true", true), ("learned (aligned)" if evaluation["n_kernels"] > 1 or evaluation["spec"].get("output") == "abs_uint8" else "learned", learned), ("learned - true", learned - true)]
    elif oracle is not None:
        panels.append(("least-squares fit", oracle))
    vmax = max(float(np.max(np.abs(p))) for _, p in panels) or 1.0
    fig, axes = plt.subplots(rows, len(panels), figsize=(2.6 * len(panels) + 0.8, 2.6 * rows + 0.4), squeeze=False)
    for r in range(rows):
        for c, (title, stack) in enumerate(panels):
            image = _annotated(axes[r, c], stack[r], vmax, title + (f" #{r + 1}" if rows > 1 else ""))
    fig.colorbar(image, ax=axes, shrink=0.8)
    fig.suptitle(f"{evaluation['filter']}: {evaluation['verdict']}", fontsize=10)
    save(fig, path)
    plt.close(fig)


def training_figure(history_csv: str | Path, name: str, path: str | Path) -> None:
    """Train and val loss and kernel error against steps and seconds, log scale."""
    from img2kernel.fit.history import read_history

    history = read_history(history_csv)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, x in zip(axes, ("step", "seconds")):
        for column, label in (("train_loss", "train loss"), ("val_loss", "val loss"), ("kernel_max_abs_rel", "kernel max-abs error / largest tap")):
            shown = history[column] > 0  # NaN (not measured at that step) and exact zeros left out
            if shown.any():
                ax.plot(history[x][shown], history[column][shown], marker=".", markersize=4, label=label)
        ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("relative MSE / relative error")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{name}: training (loss relative to target power)", fontsize=10)
    # Fixed margins for this fixed size: tight_layout measured every label, half a second a job.
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.88, wspace=0.18)
    save(fig, path)
    plt.close(fig)


# Longest side of an image as the test-image figure shows it: a 100-megapixel scan is
# reduced before plotting (and before it is kept), so the figure costs the same for any size.
PREVIEW_SIDE = 1024


@dataclass(frozen=True)
class ImagePreview:
    """One test image as the figure shows it, at most PREVIEW_SIDE on its longest side.

    ``factor``: how many pixels of the image one preview pixel stands for, per side.
    Input, target and prediction are area averages; ``error`` keeps the maximum of each
    block, so a one-pixel error (a wrong border) stays visible at any reduction.
    """

    key: str
    shape: tuple[int, int]
    factor: int
    input: np.ndarray
    target: np.ndarray
    prediction: np.ndarray
    error: np.ndarray
    error_max: float


def image_preview(key: str, image: np.ndarray, target: np.ndarray, prediction: np.ndarray,
                  side: int = PREVIEW_SIDE) -> ImagePreview:
    """Reduce input, target and prediction for the figure; see :class:`ImagePreview`.

    Each is (H, W) or (H, W, C) (colour shown as the mean of its channels); a target's unknown
    (NaN) pixels show the prediction. Read a band of rows at a time, so a large image costs
    the preview, not float64 copies of itself.
    """
    from skimage.measure import block_reduce

    height, width = image.shape[:2]
    factor = max(1, -(-max(height, width) // side))
    rows = max(1, (1 << 20) // max(1, width) // factor) * factor  # whole blocks of rows per band
    parts: dict[str, list[np.ndarray]] = {"input": [], "target": [], "prediction": [], "error": []}
    for r0 in range(0, height, rows):
        band = {name: _gray(array[r0 : r0 + rows]) for name, array in
                (("input", image), ("target", target), ("prediction", prediction))}
        band["target"] = np.where(np.isfinite(band["target"]), band["target"], band["prediction"])
        band["error"] = np.abs(band["prediction"] - band["target"])
        for name, values in band.items():
            # Partial blocks at the last row and column are padded with NaN, which nanmean/nanmax skip.
            how = np.nanmax if name == "error" else np.nanmean
            reduced = values if factor == 1 else block_reduce(values, (factor, factor), how, cval=np.nan)
            parts[name].append(reduced.astype(np.float32))
    out = {name: np.concatenate(values, axis=0) for name, values in parts.items()}
    return ImagePreview(key, (height, width), factor, out["input"], out["target"], out["prediction"], out["error"],
                        float(np.max(out["error"])))


def _gray(array: np.ndarray) -> np.ndarray:
    """(h, W) float64 of an (h, W) or (h, W, C) band: the only channel, or the channels' mean."""
    values = np.asarray(array, dtype=np.float64)
    if values.ndim == 3:
        values = values[..., 0] if values.shape[2] == 1 else values.mean(axis=2)
    return values


def images_figure(rows: list[ImagePreview], name: str, path: str | Path) -> None:
    """Per test image: input, target, prediction, absolute error (see :func:`image_preview`)."""
    fig, axes = plt.subplots(len(rows), 4, figsize=(SHOWN_WIDTH / DPI, 3 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        low, high = float(np.min(row.target)), float(np.max(row.target))
        scale = "" if row.factor == 1 else f", shown 1/{row.factor}"
        panels = [
            (f"input {row.key} {row.shape[1]}x{row.shape[0]}{scale}", row.input, "gray", None),
            ("target", row.target, "gray", (low, high)),
            ("prediction", row.prediction, "gray", (low, high)),
            (f"|error| (max {row.error_max:.2g}{', block max' if row.factor > 1 else ''})", row.error, "magma", None),
        ]
        for c, (title, array, cmap, limits) in enumerate(panels):
            ax = axes[r, c]
            shown = ax.imshow(array, cmap=cmap, vmin=limits[0] if limits else None, vmax=limits[1] if limits else None)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
            if c == 3:
                fig.colorbar(shown, ax=ax, shrink=0.8)
    fig.suptitle(f"{name}: test images", fontsize=10)
    height = 3 * len(rows)  # inches: fixed margins (the panels have no axes; tight_layout cost a second)
    fig.subplots_adjust(left=0.01, right=0.97, bottom=0.1 / height, top=1 - 0.55 / height, wspace=0.04, hspace=0.14)
    save(fig, path)
    plt.close(fig)


def pairs_kernels_figure(evaluation: dict, path: str | Path) -> None:
    """A pairs filter's kernel: one panel per (output, input) channel pair, one colour scale."""
    kernel = np.asarray(evaluation["kernel"])
    c_out, c_in, size, _ = kernel.shape
    names = {1: ["gray"], 3: ["R", "G", "B"]}
    vmax = float(np.max(np.abs(kernel))) or 1.0
    fig, axes = plt.subplots(c_out, c_in, figsize=(2.8 * c_in + 1.0, 2.8 * c_out + 0.9), squeeze=False)
    for o in range(c_out):
        for i in range(c_in):
            title = f"{names.get(c_out, range(c_out))[o]} <- {names.get(c_in, range(c_in))[i]}" if c_in * c_out > 1 else f"{size}x{size} kernel"
            image = _annotated(axes[o, i], kernel[o, i], vmax, title)
    fig.colorbar(image, ax=axes, shrink=0.8)
    bias = ", ".join(f"{b:+.4g}" for b in evaluation["bias"])
    fig.suptitle(f"{evaluation['filter']}: {evaluation['identification']['text']}\nbias {bias}", fontsize=9)
    save(fig, path)
    plt.close(fig)


def sizes_figure(evaluation: dict, path: str | Path) -> None:
    """Held-out residual per kernel size against the noise floor, and the edge-ring residual per border rule."""
    sizes = {key: np.array([row[key] for row in evaluation["sizes"]]) for key in ("ksize", "train_rms", "heldout_rms")}
    floor = evaluation["noise_floor"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    ax.plot(sizes["ksize"], np.maximum(sizes["train_rms"], 1e-30), marker=".", label="train RMS residual")
    ax.plot(sizes["ksize"], np.maximum(sizes["heldout_rms"], 1e-30), marker="o", label="held-out RMS residual")
    ax.axhline(floor, color="red", linestyle="--", linewidth=1, label=f"noise floor {floor:.3g}")
    ax.axvline(evaluation["ksize"], color="gray", linestyle=":", label=f"chosen {evaluation['ksize']}x{evaluation['ksize']}")
    ax.set_yscale("log")
    ax.set_xlabel("kernel size K")
    ax.set_xticks(sizes["ksize"])
    ax.set_ylabel("RMS (output units)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    rms = evaluation["border"].get("rms", {})
    if rms:
        names = list(rms)
        ax.bar(range(len(names)), [max(rms[n], 1e-30) for n in names],
               color=["tab:green" if n == evaluation["border"]["rule"] else "tab:gray" for n in names])
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20)
        ax.set_yscale("log")
        ax.axhline(floor, color="red", linestyle="--", linewidth=1)
        ax.set_ylabel("edge-ring RMS")
    else:
        ax.text(0.5, 0.5, evaluation["border"]["rule"], ha="center", va="center")
        ax.axis("off")
    ax.set_title(f"border: {evaluation['border']['rule']}", fontsize=10)
    fig.suptitle(f"{evaluation['filter']}: kernel size and border rule", fontsize=10)
    # Fixed margins for this fixed size (room for the rotated rule names): tight_layout measured
    # every label, half a second of a pairs evaluation.
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.17, top=0.86, wspace=0.22)
    save(fig, path)
    plt.close(fig)


def evaluation_figures(evaluation: dict, model, examples: list, kernels_png, training_png, images_png, *,
                       kernels: Callable[[dict, Path], None] | None, training: Callable[[Path], None]) -> None:
    """An evaluation's three figures, for any source: its kernels (``kernels``, or the model's own
    panels when it has no kernel stack to draw), its fit (``training``), held-out images."""
    for path in (kernels_png, training_png, images_png):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    if kernels is not None:
        kernels(evaluation, kernels_png)
    else:
        model_figure(model, f"{evaluation['filter']}: {evaluation['model_description']}", kernels_png,
                     fitted=evaluation.get("fitted_kernels"))
    training(training_png)
    images_figure(examples, evaluation["filter"], images_png)


def summary_figure(table: pd.DataFrame, path: str | Path) -> None:
    """Kernel error per filter of our own (learned beside the least-squares oracle), and for
    your own pairs the residual in noise floors of the best kernel and of the chosen model, beside
    the threshold; log scales (an exact fit sits at the axis' floor)."""
    from img2kernel.thresholds import LINEAR_FACTOR

    ours = table[table["kernel_max_abs_rel"].notna()]
    pairs = table[table["residual_in_floors"].notna()] if "residual_in_floors" in table else table.iloc[:0]
    panels = [p for p in (("ours", ours), ("pairs", pairs)) if len(p[1])] or [("ours", ours)]
    widths = [max(4.0, 0.7 * len(rows) + 2) for _, rows in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(min(sum(widths), SHOWN_WIDTH / DPI), 4), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    floor = 1e-16  # an exact zero has no place on a log axis
    for ax, (kind, rows), width in zip(axes[0], panels, widths):
        # a title wrapped to its panel's width (about 11 characters an inch at this size)
        title = lambda text: ax.set_title(textwrap.fill(text, int(width * 11)))  # noqa: E731
        positions = np.arange(len(rows))
        if kind == "ours":
            ax.bar(positions - 0.2, np.maximum(rows["kernel_max_abs_rel"].astype(float), floor), 0.4, label="learned (trained)")
            ax.bar(positions + 0.2, np.maximum(rows["oracle_max_abs_rel"].astype(float), floor), 0.4, label="least-squares oracle")
            ax.axhline(1e-4, color="red", linestyle="--", linewidth=1, label="1e-4 target")
            ax.set_ylabel("max |learned - true| / max |true|")
            title("Kernel error per filter")
        else:
            chosen = rows["model_residual_in_floors"].astype(float).fillna(rows["residual_in_floors"].astype(float))
            ax.bar(positions - 0.2, np.maximum(rows["residual_in_floors"].astype(float), floor), 0.4, label="best kernel")
            ax.bar(positions + 0.2, np.maximum(chosen, floor), 0.4, label="chosen model")
            ax.axhline(LINEAR_FACTOR, color="red", linestyle="--", linewidth=1, label=f"explained up to {LINEAR_FACTOR:g}")
            ax.set_ylabel("held-out RMS / noise floor")
            title("Your pairs: residual of the best kernel and of the chosen model")
        ax.set_yscale("log")
        ax.set_xticks(positions)
        ax.set_xticklabels(rows["filter"], rotation=30, ha="right")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", which="major", alpha=0.3)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def model_panels(model) -> tuple[list[tuple[str, np.ndarray]], tuple[np.ndarray, np.ndarray] | None]:
    """What a model shows of itself: its 2-D weight arrays (kernels, a footprint, a skip kernel;
    a stack of at most 9 slices), and its pointwise curve (knots, values) if it has one."""
    tensors = model.tensors()
    panels = []
    for name, value in tensors.items():
        value = np.asarray(value)
        if value.ndim >= 2 and value.shape[-1] == value.shape[-2] and value.shape[-1] > 1:
            flat = value.reshape(-1, *value.shape[-2:])
            if len(flat) <= 9:
                panels += [(name if len(flat) == 1 else f"{name} {i}", flat[i]) for i in range(len(flat))]
    curve = (np.asarray(tensors["knots"]), np.asarray(tensors["values"])) if "knots" in tensors else None
    return panels, curve


FIELD_POINTS = 33  # positions per side at which a gain map is drawn


def field_figure(model, title: str, path: str | Path) -> None:
    """A model that varies across the image (:mod:`img2kernel.models.field`) drawn: its gain over
    the image and, for kernels wider than 1x1, the kernel at the corners, edges and centre (each
    titled with its blur width where it is a blur)."""
    from img2kernel.models.field import blur_sigma

    survey = model.survey(FIELD_POINTS)
    wide = model.ksize > 1
    fig = plt.figure(figsize=(SHOWN_WIDTH / DPI if wide else 6.0, 4.6))
    grid = fig.add_gridspec(3, 7 if wide else 3, left=0.08, right=0.92, bottom=0.08, top=0.78, wspace=0.35, hspace=0.6)
    ax = fig.add_subplot(grid[:, :3])
    gains = survey["gains"]
    middle = float(np.mean(gains))
    # A gain that hardly changes is drawn on a scale of at least +-2%: its last digits are not a map.
    low, high = min(float(gains.min()), middle - 0.02 * abs(middle)), max(float(gains.max()), middle + 0.02 * abs(middle))
    shown = ax.imshow(gains, extent=(0, 1, 1, 0), cmap="viridis", vmin=low, vmax=high, interpolation="bilinear")
    ax.set_title("gain (sum of the taps) across the image", fontsize=9)
    ax.set_xlabel("column / width", fontsize=8)
    ax.set_ylabel("row / height", fontsize=8)
    fig.colorbar(shown, ax=ax, shrink=0.8)
    if wide:
        kernels = survey["kernels"]
        vmax = float(np.max(np.abs(kernels))) or 1.0
        names = (("top left", "top", "top right"), ("left", "centre", "right"), ("bottom left", "bottom", "bottom right"))
        axes = []
        for r in range(3):
            for c in range(3):
                kax = fig.add_subplot(grid[r, 4 + c])
                image = kax.imshow(kernels[r, c], cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
                sigma = blur_sigma(kernels[r, c])
                kax.set_title(names[r][c] + (f"\nsigma {sigma:.2f}" if sigma is not None else ""), fontsize=7)
                kax.set_xticks([])
                kax.set_yticks([])
                axes.append(kax)
        fig.colorbar(image, ax=axes, shrink=0.8)
    fig.suptitle(textwrap.fill(title, 110 if wide else 60), fontsize=9)
    save(fig, path)
    plt.close(fig)


def profiles_figure(model, title: str, path: str | Path, fitted: dict | None = None) -> None:
    """A model made of 1-D functions (a resize's kernel per axis) drawn: each function over its
    offsets in input pixels, the named resampler's curve beside it where one matches, and the taps
    as fitted (``fitted``: {axis: {offsets, taps}}, where a named resampler replaced them)."""
    shown = model.profiles()
    fig, axes = plt.subplots(1, len(shown), figsize=(SHOWN_WIDTH / DPI, 3.6), squeeze=False)
    for ax, (name, x, values, reference), axis in zip(axes[0], shown, ("rows", "columns")):
        ax.axhline(0, color="gray", linewidth=0.6)
        ax.plot(x, values, color="tab:blue", linewidth=1.2, label="the model's kernel")
        if reference is not None:
            ax.plot(x, reference, color="tab:orange", linestyle="--", linewidth=1.2, label="named resampler")
        if fitted and axis in fitted:
            ax.plot(fitted[axis]["offsets"], fitted[axis]["taps"], linestyle="none", marker="o", markersize=2.5,
                    color="black", label="fitted taps (each a phase's)")
        ax.set_title(textwrap.fill(name, 60), fontsize=9)
        ax.set_xlabel("offset from the output pixel's centre (input pixels)", fontsize=8)
        ax.set_ylabel("weight", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(textwrap.fill(title, 150), fontsize=9)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.72, wspace=0.25)
    save(fig, path)
    plt.close(fig)


def model_figure(model, title: str, path: str | Path, fitted: dict | None = None) -> None:
    """A ladder model drawn: its weight panels (one colour scale each) and its curve; a model
    that varies across the image, its map (:func:`field_figure`); one made of 1-D functions,
    those and the ``fitted`` taps (:func:`profiles_figure`)."""
    if model.varies:
        return field_figure(model, title, path)
    if model.profiles():
        return profiles_figure(model, title, path, fitted)
    panels, curve = model_panels(model)
    count = len(panels) + (1 if curve is not None else 0)
    fig, axes = plt.subplots(1, max(count, 1), figsize=(2.8 * max(count, 1) + 1.0, 3.4), squeeze=False)
    for ax, (name, array) in zip(axes[0], panels):
        vmax = float(np.max(np.abs(array))) or 1.0
        image = _annotated(ax, array, vmax, name)
        fig.colorbar(image, ax=ax, shrink=0.7)
    if curve is not None:
        ax = axes[0][len(panels)]
        ax.plot(curve[0], curve[1], marker=".", color="tab:blue")
        ax.set_title("curve g (knots)", fontsize=10)
        ax.set_xlabel("kernel response")
        ax.set_ylabel("output")
        ax.grid(True, alpha=0.3)
    if count == 0:
        axes[0][0].axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)
