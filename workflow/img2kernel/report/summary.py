"""The kernel comparison table over all filters (CSV for scripts, markdown for people)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import pandas as pd

COLUMNS = [
    "filter",
    "kind",
    "ksize",
    "model",  # the ladder's choice: linear, curve, magnitude, rank or cnn
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
    # For the plot only (not in kernels.md): a pairs filter's residual in noise floors, of its
    # best kernel and of the model the ladder chose.
    "residual_in_floors",
    "model_residual_in_floors",
]
PLOT_ONLY = ["residual_in_floors", "model_residual_in_floors"]


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
                "model_residual_in_floors": (chosen_row(e) or {}).get("residual_in_floors") if "residual_in_floors" in e else None,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def model_size(evaluation: dict) -> str:
    """'1x3x3 (9 weights)' for our filters' kernels; 'C_out x C_in x K x K + bias (N parameters)' for pairs;
    the parameter count and window of any other model the ladder chose."""
    kernel = evaluation.get("kernel") if "channels" in evaluation else evaluation.get("learned_kernels")
    if kernel is None:  # a rank, curve or CNN model: no kernel stack to count
        k = evaluation["model_ksize"]
        return f"{k}x{k} window ({evaluation['parameters']} weights)"
    if "channels" in evaluation:
        c = evaluation["channels"]
        k = evaluation["ksize"]
        return f"{c['output']}x{c['input']}x{k}x{k} + bias ({evaluation['parameters']} parameters)"
    k = evaluation["model_ksize"]
    return f"{evaluation['n_kernels']}x{k}x{k} ({evaluation['parameters']} weights)"


def chosen_row(evaluation: dict) -> dict | None:
    """The ladder's row of the model the evaluation reports (None when no ladder was climbed)."""
    return next((row for row in evaluation.get("ladder") or [] if row["model"] == evaluation["model"]), None)


def finding(evaluation: dict) -> dict:
    """What a filter is, in a few words, and how sure: the report's summary row for any source.

    ``status``: ``recovered`` / ``approximate`` / ``not recovered`` (our filters, whose true
    kernels are known, by the kernel error), ``linear`` (your pairs, one kernel within the
    noise floor), ``found`` (a structured model reproduces them within the noise floor),
    ``best fit`` (no model does: the closest one, with its residual). ``tone``: ok, warn or bad.
    """
    from img2kernel.thresholds import APPROXIMATE, RECOVERED

    chosen = chosen_row(evaluation)
    what = chosen["description"] if chosen else evaluation["model_description"]
    identification = (evaluation.get("identification") or {}).get("text")
    if evaluation.get("linear") and identification and not identification.startswith("no known"):
        what = identification
    error = evaluation.get("kernel_max_abs_rel")
    if error is not None and not (isinstance(error, float) and math.isnan(error)):
        status = "recovered" if error <= RECOVERED else "approximate" if error <= APPROXIMATE else "not recovered"
        kernels = "kernels" if (evaluation.get("n_kernels") or 1) > 1 else "kernel"
        what = f"{what}: {'the' if status == 'recovered' else 'near the' if status == 'approximate' else 'not the'} true {evaluation['kind']} {kernels}"
        tone = {"recovered": "ok", "approximate": "warn"}.get(status, "bad")
    elif chosen is None or chosen.get("adequate"):
        status, tone = ("linear" if evaluation.get("linear") else "found"), "ok"
    else:
        status, tone = "best fit", "warn"
        what = f"{what} ({chosen['residual_in_floors']:.3g}x the noise floor)"
    verdict = evaluation["verdict"]
    headline = verdict if verdict.startswith(status) else f"{status}: {verdict}"
    return {"what": what, "status": status, "tone": tone, "headline": headline}


def write_summary(evaluation_files, csv_path, markdown_path, plot_path) -> pd.DataFrame:
    from img2kernel.report.plots import summary_figure

    table = summary_table(evaluation_files)
    for path in (csv_path, markdown_path, plot_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False)
    Path(markdown_path).write_text(table.drop(columns=PLOT_ONLY).to_markdown(index=False, floatfmt=".3g") + "\n")
    summary_figure(table, plot_path)
    return table
