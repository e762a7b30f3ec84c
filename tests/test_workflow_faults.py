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

from img2kernel.store import Store
from img2kernel.train import load_kernels
from conftest import SNAKEFILE, planned_jobs, real_images, snakemake, write_workdir

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


def run_and_kill(workdir: Path, ready, timeout: float = 120) -> None:
    """Start `snakemake --cores 2`, SIGKILL its whole process group as soon as `ready()` holds."""
    process = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir), "--cores", "2"],
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


def assert_everything_verifies(workdir: Path, filters: list[str]) -> None:
    results = workdir / "results"
    Store(results / "store" / "inputs")  # checksums of every shard
    for name in filters:
        Store(results / "store" / "targets" / name)
        kernels, _ = load_kernels(results / "models" / f"{name}.safetensors")
        assert np.all(np.isfinite(kernels))
    assert not list(results.rglob("*.partial")), "a partial file was left in place"
    assert planned_jobs(workdir) == {}


def test_killed_during_training_the_next_run_finishes(tmp_path):
    urls = photos(tmp_path, 4, (40, 48))
    slow = {"max_steps": 400, "check_every": 1, "kernel_tol": 0.0}  # never "converged": runs all steps
    filters = [{"name": "sobel_x", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 3, "train": slow}]
    write_workdir(tmp_path, filters, urls)
    log = tmp_path / "results" / "logs" / "train" / "sobel_x.log"
    run_and_kill(tmp_path, lambda: log.is_file() and "/400" in log.read_text())
    assert not (tmp_path / "results" / "models" / "sobel_x.safetensors").exists()

    result = snakemake(tmp_path)  # the plain command, no --unlock
    assert "removed the locks of an earlier run" in result.stderr + result.stdout
    assert_everything_verifies(tmp_path, ["sobel_x"])


def test_killed_while_writing_targets_the_next_run_finishes(tmp_path):
    urls = photos(tmp_path, 3, (200, 240), scale=8)  # 1600x1920: a shard takes a while to write
    names = ["blur_7"]
    filters = [{"name": "blur_7", "kind": "gaussian", "ksize": 7, "sigma": 1.5}]
    write_workdir(tmp_path, filters, urls, train={"crop_size": 32})
    targets = tmp_path / "results" / "store" / "targets"
    run_and_kill(tmp_path, lambda: targets.is_dir() and any(targets.glob("*/.*.partial")))

    snakemake(tmp_path)
    assert_everything_verifies(tmp_path, names)
