"""The training table, ``results/train/{filter}.csv``: one schema for every source.

A row is one step of the fit: a gradient step of our filters' training (``stage`` ``gradient
step``: losses relative to the target power, the kernel's error against the true one, the
learning rate) or one kernel size of the pairs' least-squares search (``stage`` ``kernel
size``: RMS residuals in the output's units). A column a stage does not measure is empty.
"""

from __future__ import annotations

from pathlib import Path

from img2kernel.pipeline.files import written_whole

COLUMNS = [
    "stage", "step", "seconds", "ksize", "parameters",
    "train_loss", "val_loss",  # relative MSE (gradient steps)
    "train_rms", "heldout_rms",  # RMS residual in output units (kernel sizes)
    "kernel_max_abs_error", "kernel_max_abs_rel", "kernel_change", "lr",
]
GRADIENT_STEP, KERNEL_SIZE = "gradient step", "kernel size"


def write_history(rows: list[dict], stage: str, path: str | Path, **constant) -> None:
    """Write ``rows`` (dicts of :data:`COLUMNS` fields) as the training table, each tagged with
    ``stage`` and the ``constant`` fields, written whole; a field outside the schema is refused."""
    import pandas as pd

    table = [{"stage": stage, **constant, **row} for row in rows]
    unknown = sorted({key for row in table for key in row} - set(COLUMNS))
    if unknown:
        raise ValueError(f"training table fields {unknown} are not in its schema")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path) as partial:
        pd.DataFrame(table, columns=COLUMNS).to_csv(partial, index=False)
