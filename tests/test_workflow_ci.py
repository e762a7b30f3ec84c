"""The catalog's conventions: `snakemake --lint` is clean, and the small `.test/` configuration
runs end to end (our filters from a few sample photos and two pairs filters made by Pillow,
one linear and one the ladder explains)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, planned_jobs, snakemake, workflow_copy

pytestmark = pytest.mark.workflow


def test_the_workflow_passes_snakemakes_linter(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "-s", str(workflow_copy() / "Snakefile"), "-d", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0 and "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr, (
        result.stdout[-3000:] + result.stderr[-3000:])


def test_the_test_configuration_runs_end_to_end(tmp_path):
    workdir = tmp_path / "test"
    shutil.copytree(REPO / ".test", workdir)
    snakemake(workdir)
    results = workdir / "results"
    assert json.loads((results / "eval" / "sobel_x.json").read_text())["verdict"] == "recovered"
    assert json.loads((results / "eval" / "median_3.json").read_text())["verdict"].startswith("not a linear filter")
    jpeg = json.loads((results / "eval" / "gaussian_jpeg.json").read_text())  # JPEG q85 targets, fitted through it
    assert jpeg["verdict"].endswith(", within JPEG q85 compression") and jpeg["model"] == "linear", jpeg["verdict"]
    assert jpeg["kernel_max_abs_rel"] <= 0.02 and 2 * jpeg["kernel_max_abs_rel"] < jpeg["oracle_max_abs_rel"]
    assert jpeg["compression_note"].startswith("the outputs are JPEG q85 files")
    pairs = json.loads((results / "eval" / "pillow_edges.json").read_text())
    assert pairs["linear"] and pairs["border"]["rule"] == "unfiltered"
    assert pairs["identification"]["kernel"]["name"] == "sobel_y (ksize 3)"
    median = json.loads((results / "eval" / "pillow_median.json").read_text())
    assert median["model"] == "rank" and median["model_description"].startswith("3x3 median")
    assert median["test_identical_fraction"] > 0.99
    assert (results / "report.html").is_file() and planned_jobs(workdir) == {}
