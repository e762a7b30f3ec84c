"""``img2kernel bench pipeline``: the first run, the no-op rerun, where each stage's time goes,
and large kernels (15x15, 31x31) against the least-squares oracle.

The workflow runs in a fresh temporary folder on a copy of the chosen configuration (the
sample one by default), with this checkout's Snakefile, so the figures are those of a first
``make run``. Per stage, each job's wall time comes from its Snakemake ``benchmark:`` file
and its split into start-up (interpreter, Snakemake's script preamble, module imports) and
work (the job's own code, and the imports it makes on its path) from the ``timing:`` line
that :func:`img2kernel.pipeline.logs.log_to` writes at the end of every job's log.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from img2kernel.pipeline.logs import TIMING
from img2kernel.report.page import stage_of

REPO = Path(__file__).resolve().parents[3]
# Stages in the order the pipeline runs them (the benchmark folders' names).
STAGE_ORDER = ["urls", "images", "store", "pairs", "targets", "train", "eval", "summary", "report"]
_TIMING = re.compile(TIMING + r" start-up ([\d.]+) s, work ([\d.]+) s, of which imports ([\d.]+) s")

# Large linear kernels trained on the run's own inputs store: two smooth, two that are not.
LARGE_KERNELS = [
    {"name": "gaussian_15", "kind": "gaussian", "ksize": 15, "sigma": 2.5},
    {"name": "random_15", "kind": "random", "ksize": 15, "seed": 15},
    {"name": "gaussian_31", "kind": "gaussian", "ksize": 31, "sigma": 5.0},
    {"name": "random_31", "kind": "random", "ksize": 31, "seed": 31},
]


def snakefile() -> Path:
    path = REPO / "Snakefile"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: `img2kernel bench pipeline` runs from a checkout of the repository")
    return path


def run_snakemake(workdir: Path, *args: str, cores: int = 8) -> float:
    """Run the workflow in ``workdir``; its wall-clock seconds. A failure raises with Snakemake's output."""
    command = [sys.executable, "-m", "snakemake", "-s", str(snakefile()), "-d", str(workdir), "--cores", str(cores), *args]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds


def stage_timings(workdir: Path) -> list[dict]:
    """Per stage: jobs, wall seconds (benchmark files), start-up, imports and the rest of the work (logs)."""
    rows = []
    benchmarks = Path(workdir) / "results" / "benchmarks"
    for path in sorted(benchmarks.rglob("*.tsv")):
        relative = path.relative_to(benchmarks)
        log = Path(workdir) / "results" / "logs" / relative.with_suffix(".log")
        found = _TIMING.findall(log.read_text()) if log.is_file() else []
        startup, work, imports = (float(v) for v in found[-1]) if found else (float("nan"),) * 3
        rows.append({"stage": stage_of(relative), "wall_s": float(pd.read_csv(path, sep="\t")["s"].iloc[-1]),
                     "startup_s": startup, "imports_s": imports, "work_s": work - imports})
    if not rows:
        return []
    order = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    rows.sort(key=lambda row: order.get(row["stage"], len(order)))
    table = pd.DataFrame(rows).groupby("stage", sort=False)
    summary = table.agg(jobs=("wall_s", "size"), wall_s=("wall_s", "sum"), startup_s=("startup_s", "sum"),
                        imports_s=("imports_s", "sum"), work_s=("work_s", "sum"), slowest_job_s=("wall_s", "max"))
    return summary.reset_index().round(2).to_dict("records")


def large_kernel_rows(inputs_store: Path, config_file: Path, scratch: Path, threads: int = 2) -> list[dict]:
    """Train each of ``LARGE_KERNELS`` as the pipeline would; time and error against the oracle."""
    from img2kernel.pipeline.config import check_config, check_filters, load_yaml, training_settings
    from img2kernel.sources.targets import compute_targets
    from img2kernel.fit.filter_job import train_filter

    config = check_config(load_yaml(config_file), str(config_file), base_dir=config_file.parent.parent, check_files=False)
    specs = check_filters({"filters": LARGE_KERNELS}, "img2kernel.bench.pipeline.LARGE_KERNELS", config["train"],
                          check_files=False)
    rows = []
    for spec in specs:
        targets = scratch / "targets" / spec["name"]
        compute_targets(inputs_store, targets, spec)
        info = train_filter(inputs_store, targets, spec, training_settings(config["train"], spec), device="cpu",
                            threads=threads).info
        error, oracle = info["kernel_errors"]["max_abs_rel"], info["oracle_errors"]["max_abs_rel"]
        rows.append({"filter": spec["name"], "train_s": round(info["seconds"], 2), "steps": info["steps"],
                     "refine_rounds": info["refine_rounds"], "kernel_max_abs_rel": f"{error:.2g}",
                     "oracle_max_abs_rel": f"{oracle:.2g}", "ratio_to_oracle": round(error / oracle, 2) if oracle else float("nan"),
                     "met": info["seconds"] <= 5.0 and error <= 2 * oracle})
    return rows


def bench_pipeline(config_dir: str | Path | None = None, cores: int = 8, keep: str | Path | None = None) -> dict:
    """First run, no-op dry run, stages and large kernels, in a fresh folder (kept at ``keep`` if given)."""
    config_dir = Path(config_dir) if config_dir else REPO / "config"
    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="img2kernel-bench-pipeline-"))
    try:
        if (workdir / "results").exists():
            raise FileExistsError(f"{workdir / 'results'} exists: the benchmark needs a fresh folder")
        shutil.copytree(config_dir, workdir / "config", dirs_exist_ok=True)
        first_run = run_snakemake(workdir, "--quiet", "all", cores=cores)
        noop = run_snakemake(workdir, "-n", "--quiet", "all", cores=cores)
        report = workdir / "results" / "report.html"
        return {
            "first_run_s": first_run,
            "noop_s": noop,
            "report_mb": report.stat().st_size / 1e6 if report.is_file() else float("nan"),
            "stages": stage_timings(workdir),
            "large_kernels": large_kernel_rows(workdir / "results" / "store" / "inputs", workdir / "config" / "config.yaml",
                                               workdir / "bench-large-kernels"),
            "workdir": str(workdir) if keep else None,
        }
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
