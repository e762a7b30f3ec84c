"""The training table, ``results/train/{filter}.csv``: one schema for every source.

A row is one step of the fit: a gradient step of our filters' training (``stage`` ``gradient
step``: losses relative to the target power, the kernel's error against the true one, the
learning rate) or one kernel size of the pairs' least-squares search (``stage`` ``kernel
size``: RMS residuals in the output's units). A column a stage does not measure is empty.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from img2kernel.pipeline.files import write_csv

COLUMNS = [
    "stage", "step", "seconds", "ksize", "parameters",
    "train_loss", "val_loss",  # relative MSE (gradient steps)
    "train_rms", "heldout_rms",  # RMS residual in output units (kernel sizes)
    "kernel_max_abs_error", "kernel_max_abs_rel", "kernel_change", "lr",
]
GRADIENT_STEP, KERNEL_SIZE = "gradient step", "kernel size"


def write_history(rows: list[dict], stage: str, path: str | Path, **constant) -> None:
    """Write ``rows`` (dicts of :data:`COLUMNS` fields) as the training table, each tagged with
    ``stage`` and the ``constant`` fields, written whole; a field outside the schema is refused.

    A field a row lacks, None or NaN is written empty.
    """
    table = [{"stage": stage, **constant, **row} for row in rows]
    unknown = sorted({key for row in table for key in row} - set(COLUMNS))
    if unknown:
        raise ValueError(f"training table fields {unknown} are not in its schema")
    write_csv(path, COLUMNS, ([row.get(name) for name in COLUMNS] for row in table))


def read_history(path: str | Path) -> dict[str, np.ndarray]:
    """The training table's numeric columns (every one of :data:`COLUMNS` but ``stage``), NaN where empty."""
    with open(path, newline="") as table:
        rows = list(csv.DictReader(table))
    return {name: np.array([float(row[name]) if row.get(name) else np.nan for row in rows])
            for name in COLUMNS if name != "stage"}
