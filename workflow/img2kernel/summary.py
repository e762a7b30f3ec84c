"""The kernel comparison table over all filters (CSV for scripts, markdown for people)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pandas as pd

COLUMNS = [
    "filter",
    "kind",
    "ksize",
    "model_size",
    "kernel_max_abs_error",
    "kernel_rel_error",
    "oracle_max_abs_error",
    "test_psnr",
    "test_ssim",
    "linear_residual",
    "train_seconds",
    "steps",
    "stop_reason",
    "device",
    "verdict",
    # For the plot: errors relative to the largest true tap.
    "kernel_rel_max_abs_error",
    "oracle_rel_max_abs_error",
]


def summary_table(evaluation_files: Sequence[str | Path]) -> pd.DataFrame:
    """One row per filter from the evaluate jobs' JSON files."""
    rows = []
    for path in evaluation_files:
        e = json.loads(Path(path).read_text())
        rows.append(
            {
                **{c: e.get(c) for c in COLUMNS},
                "model_size": f"{e['n_kernels']}x{e['model_ksize']}x{e['model_ksize']} ({e['parameters']} weights)",
                "oracle_rel_max_abs_error": (e["oracle_errors"] or {}).get("rel_max_abs_error"),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def write_summary(evaluation_files, csv_path, markdown_path, plot_path) -> pd.DataFrame:
    from .plots import summary_figure

    table = summary_table(evaluation_files)
    for path in (csv_path, markdown_path, plot_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False)
    Path(markdown_path).write_text(table.drop(columns=COLUMNS[-2:]).to_markdown(index=False, floatfmt=".3g") + "\n")
    summary_figure(table, plot_path)
    return table
