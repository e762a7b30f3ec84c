"""``img2kernel bench pipeline``: the waits a user has, each against its target (the first run,
the README's pairs example, ``img2kernel fit`` on one gray and five colour pairs, the no-op
rerun against a trivial workflow of as many jobs), where each stage's time goes, and large
kernels (15x15, 31x31) against the least-squares oracle.

The workflow runs in fresh temporary folders on a copy of the chosen configuration (the
sample one by default), with this checkout's Snakefile, so the figures are those of a first
``make run``; each wait is measured ``runs`` times and printed with its spread. Per stage,
each job's wall time comes from its Snakemake ``benchmark:`` file and its split into start-up (interpreter, Snakemake's script preamble, module imports) and
work (the job's own code, and the imports it makes on its path) from the ``timing:`` line
that :func:`img2kernel.pipeline.logs.log_to` writes at the end of every job's log.
"""

from __future__ import annotations

import re
import shutil
import statistics
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
STAGE_ORDER = ["urls", "images", "store", "pairs", "targets", "train", "eval", "report"]
_TIMING = re.compile(TIMING + r" start-up ([\d.]+) s, work ([\d.]+) s, of which imports ([\d.]+) s")

# Large linear kernels trained on the run's own inputs store: two smooth, two that are not.
LARGE_KERNELS = [
    {"name": "gaussian_15", "kind": "gaussian", "ksize": 15, "sigma": 2.5},
    {"name": "random_15", "kind": "random", "ksize": 15, "seed": 15},
    {"name": "gaussian_31", "kind": "gaussian", "ksize": 31, "sigma": 5.0},
    {"name": "random_31", "kind": "random", "ksize": 31, "seed": 31},
]


# What a user waits for (issue-level targets, seconds; the no-op as a ratio to a trivial workflow).
TARGETS = {"first_run_s": 50.0, "pairs_example_s": 8.0, "fit_gray_s": 1.5, "fit_colour_s": 5.0, "noop_ratio": 1.3}
# The README's worked example: its pairs entry, fitted from examples/make_pairs.py's files.
PAIRS_EXAMPLE = """filters:
  - name: emboss_tool
    kind: pairs
    inputs: pairs/before
    outputs: pairs/after
"""


def snakefile() -> Path:
    path = REPO / "Snakefile"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: `img2kernel bench pipeline` runs from a checkout of the repository")
    return path


def _timed(command: list[str]) -> float:
    """Run ``command``; its wall-clock seconds. A failure raises with its output."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return seconds


def run_snakemake(workdir: Path, *args: str, cores: int = 8, workflow: Path | None = None) -> float:
    """Run the workflow (this checkout's unless ``workflow``) in ``workdir``; its wall-clock seconds."""
    return _timed([sys.executable, "-m", "snakemake", "-s", str(workflow or snakefile()), "-d", str(workdir),
                   "--cores", str(cores), *args])


def spread(seconds: list[float], target: float) -> dict:
    """Median, fastest and slowest of repeated measurements, against ``target`` (met by the median)."""
    median = statistics.median(seconds)
    return {"median": median, "min": min(seconds), "max": max(seconds), "runs": len(seconds), "target": target,
            "met": median <= target}


def trivial_workflow(folder: Path, jobs: int) -> Path:
    """A workflow of ``jobs`` jobs that each touch a file, built once; its Snakefile (the no-op baseline)."""
    folder.mkdir(parents=True, exist_ok=True)
    workflow = folder / "Snakefile"
    workflow.write_text(f"rule all:\n    input: expand('out/{{i}}.txt', i=range({jobs - 1}))\n\n"
                        "rule touch:\n    output: 'out/{i}.txt'\n    shell: 'touch {output}'\n")
    run_snakemake(folder, "--quiet", workflow=workflow)
    return workflow


def noop_ratio(workdir: Path, cores: int, runs: int, scratch: Path) -> dict:
    """Dry runs of the built workflow and of a trivial one with as many jobs, interleaved so both see the
    same machine; seconds of each and their ratio's spread."""
    jobs = sum(1 for _ in (workdir / "results" / "benchmarks").rglob("*.tsv")) + 1  # every rule has a benchmark, and `all`
    baseline = trivial_workflow(scratch / "trivial-workflow", jobs)
    ours, trivial = [], []
    for _ in range(runs):
        ours.append(run_snakemake(workdir, "-n", "--quiet", "all", cores=cores))
        trivial.append(run_snakemake(baseline.parent, "-n", "--quiet", cores=cores, workflow=baseline))
    return {"jobs": jobs, "noop_s": statistics.median(ours), "trivial_s": statistics.median(trivial),
            "ratio": spread([a / b for a, b in zip(ours, trivial)], TARGETS["noop_ratio"])}


def pairs_example(folder: Path, config_dir: Path) -> Path:
    """The README's worked example in ``folder``: the configuration, examples/make_pairs.py's pairs, the entry."""
    shutil.copytree(config_dir, folder / "config", dirs_exist_ok=True)
    _timed([sys.executable, str(REPO / "examples" / "make_pairs.py"), str(folder / "pairs")])
    (folder / "config" / "my_filters.yaml").write_text(PAIRS_EXAMPLE)
    return folder


def _img2kernel() -> list[str]:
    """The command a user types: the console script next to this interpreter."""
    script = Path(sys.executable).parent / "img2kernel"
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from img2kernel.cli.main import main; main()"]


def fit_pairs(folder: Path) -> dict[str, list[str]]:
    """Arguments of ``img2kernel fit`` for the two waits: one 512x512 gray pair (scikit-image's camera through
    Pillow's EMBOSS) and the README example's five colour pairs (in ``folder``/pairs)."""
    import skimage.data
    from PIL import Image, ImageFilter

    gray = Image.fromarray(skimage.data.camera())
    gray.save(folder / "camera.png")
    gray.filter(ImageFilter.EMBOSS).save(folder / "camera_emboss.png")
    colour = [str(path) for name in sorted((folder / "pairs" / "before").glob("*.png"))
              for path in (name, folder / "pairs" / "after" / name.name)]
    return {"fit_gray_s": [str(folder / "camera.png"), str(folder / "camera_emboss.png")], "fit_colour_s": colour}


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


def bench_pipeline(config_dir: str | Path | None = None, cores: int = 8, keep: str | Path | None = None,
                   runs: int = 3) -> dict:
    """The waits (each ``runs`` times, fresh folders), no-op ratio, stages and large kernels; the first
    run's folder is kept at ``keep`` if given."""
    config_dir = Path(config_dir) if config_dir else REPO / "config"
    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="img2kernel-bench-pipeline-"))
    scratch = Path(tempfile.mkdtemp(prefix="img2kernel-bench-scratch-"))
    try:
        if (workdir / "results").exists():
            raise FileExistsError(f"{workdir / 'results'} exists: the benchmark needs a fresh folder")

        def first_run(i: int) -> float:
            folder = workdir if i == 0 else scratch / f"first-run-{i}"
            shutil.copytree(config_dir, folder / "config", dirs_exist_ok=True)
            seconds = run_snakemake(folder, "--quiet", "all", cores=cores)
            if i:
                shutil.rmtree(folder)
            return seconds

        waits = {"first_run_s": [first_run(i) for i in range(runs)]}
        example = [pairs_example(scratch / f"pairs-example-{i}", config_dir) for i in range(runs)]
        waits["pairs_example_s"] = [run_snakemake(folder, "--quiet", "--config", "filters=config/my_filters.yaml",
                                                  cores=cores) for folder in example]
        for name, files in fit_pairs(example[0]).items():
            fit = [*_img2kernel(), "fit", *files, "-o", str(scratch / f"{name}.safetensors")]
            waits[name] = [_timed(fit) for _ in range(runs)]
        report = workdir / "results" / "report.html"
        return {
            "waits": {name: spread(seconds, TARGETS[name]) for name, seconds in waits.items()},
            "noop": noop_ratio(workdir, cores, runs, scratch),
            "report_mb": report.stat().st_size / 1e6 if report.is_file() else float("nan"),
            "stages": stage_timings(workdir),
            "large_kernels": large_kernel_rows(workdir / "results" / "store" / "inputs", workdir / "config" / "config.yaml",
                                               scratch / "bench-large-kernels"),
            "workdir": str(workdir) if keep else None,
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
