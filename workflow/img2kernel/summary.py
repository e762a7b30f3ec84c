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
    "kernel_max_abs_rel",  # max |learned - true| / max |true|
    "oracle_max_abs_rel",  # the same for the least-squares oracle
    "kernel_max_abs_error",  # max |learned - true|, in the kernel's own units
    "test_psnr",
    "test_ssim",
    "linear_residual",
    "train_seconds",
    "steps",
    "stop_reason",
    "device",
    "verdict",
    "border",
    "split",  # the held-out split the PSNR and SSIM were measured on
    # For the plot: a pairs filter's residual in noise floors.
    "residual_in_floors",
]


def summary_table(evaluation_files: Sequence[str | Path]) -> pd.DataFrame:
    """One row per filter from the evaluate jobs' JSON files."""
    rows = []
    for path in evaluation_files:
        e = json.loads(Path(path).read_text())
        rows.append(
            {
                **{c: e.get(c) for c in COLUMNS},
                "model_size": model_size(e),
                "border": (e.get("border") or {}).get("rule", "reflect101 (ours)"),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def model_size(evaluation: dict) -> str:
    """'1x3x3 (9 weights)' for our filters' kernels; 'C_out x C_in x K x K + bias (N parameters)' for pairs."""
    if "channels" in evaluation:
        c = evaluation["channels"]
        k = evaluation["ksize"]
        return f"{c['output']}x{c['input']}x{k}x{k} + bias ({evaluation['parameters']} parameters)"
    k = evaluation["model_ksize"]
    return f"{evaluation['n_kernels']}x{k}x{k} ({evaluation['parameters']} weights)"


def write_summary(evaluation_files, csv_path, markdown_path, plot_path) -> pd.DataFrame:
    from .plots import summary_figure

    table = summary_table(evaluation_files)
    for path in (csv_path, markdown_path, plot_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False)
    Path(markdown_path).write_text(table.drop(columns=COLUMNS[-1:]).to_markdown(index=False, floatfmt=".3g") + "\n")
    summary_figure(table, plot_path)
    return table
