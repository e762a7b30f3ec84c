"""Faults: a pipeline killed with SIGKILL mid-stage finishes on the next plain run, trusting nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from img2kernel.store.shards import Store
from img2kernel.models import load_model
from conftest import planned_jobs, real_images, snakemake, workflow_copy, write_workdir

pytestmark = pytest.mark.workflow


def photos(workdir: Path, count: int, size: tuple[int, int], scale: int = 1) -> str:
    folder = workdir / "photos"
    folder.mkdir()
    urls = []
    for i, image in enumerate(real_images(count, size=size)):
        if scale > 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"{i}.png"), image)
        urls.append((folder / f"{i}.png").resolve().as_uri())
    (workdir / "urls.txt").write_text("\n".join(urls) + "\n")
    return "urls.txt"


def run_and_kill(workdir: Path, target: str, ready, timeout: float = 120) -> None:
    """Start `snakemake --cores 2 target`, SIGKILL its whole process group as soon as `ready()` holds."""
    process = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(workflow_copy() / "Snakefile"), "-d", str(workdir), "--cores", "2", target],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if process.poll() is not None:
                raise AssertionError("snakemake finished before the kill point was reached")
            if time.monotonic() > deadline:
                raise AssertionError("kill point not reached in time")
            time.sleep(0.005)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_killed_while_writing_targets_then_during_training_the_next_run_finishes(tmp_path):
    """Two kills in one working directory: mid-shard in the targets stage, then mid-training.
    Each time the plain command, no --unlock, picks up the work: stale locks cleared,
    incomplete outputs rebuilt, nothing half-written trusted."""
    urls = photos(tmp_path, 3, (200, 240), scale=8)  # 1600x1920: a shard takes a while to write
    slow = {"max_steps": 400, "check_every": 1, "kernel_tol": 0.0}  # never "converged": runs all steps
    filters = [{"name": "blur_7", "kind": "gaussian", "ksize": 7, "sigma": 1.5, "train": slow}]
    write_workdir(tmp_path, filters, urls, train={"crop_size": 32})
    model = "results/models/blur_7.safetensors"
    targets = tmp_path / "results" / "store" / "targets"
    run_and_kill(tmp_path, model, lambda: targets.is_dir() and any(targets.glob("*/.*.partial")))
    assert not (targets / "blur_7" / "00000.tar").exists()

    log = tmp_path / "results" / "logs" / "train" / "blur_7.log"
    run_and_kill(tmp_path, model, lambda: log.is_file() and "/400" in log.read_text())
    assert not (tmp_path / model).exists()
    Store(targets / "blur_7")  # written whole by the second run, before training started

    result = snakemake(tmp_path, model)
    assert "removed the locks of an earlier run" in result.stderr + result.stdout
    results = tmp_path / "results"
    Store(results / "store" / "inputs")  # checksums of every shard
    Store(targets / "blur_7")
    model_file, _ = load_model(tmp_path / model)  # refuses non-finite parameters
    assert np.all(np.isfinite(model_file.kernel))
    assert not list(results.rglob("*.partial")), "a partial file was left in place"
    assert not list(results.rglob(".*.partial")), "a partial file was left in place"
    assert planned_jobs(tmp_path, model) == {}
