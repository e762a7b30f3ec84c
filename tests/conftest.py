"""Shared fixtures: small real images, a loopback image server, and a Snakemake runner."""

from __future__ import annotations

import atexit
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

# Every temporary file of the session (this process's and every Snakemake job's, wandb's
# folders that img2dataset's import makes among them) goes into one folder, removed at the
# end: registered first, so it runs after every other exit handler.
SESSION_TMP = tempfile.mkdtemp(prefix="img2kernel-tests-")
atexit.register(shutil.rmtree, SESSION_TMP, ignore_errors=True)
os.environ["TMPDIR"] = tempfile.tempdir = SESSION_TMP


def real_images(count: int = 3, size: tuple[int, int] = (96, 80)) -> list[np.ndarray]:
    """Crops of scikit-image's sample photos as uint8 grayscale (real texture, small)."""
    from img2kernel.sources.downloads import sample_image_paths

    images = []
    for path in sample_image_paths():
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is not None and image.shape[0] >= size[0] and image.shape[1] >= size[1]:
            top, left = (image.shape[0] - size[0]) // 2, (image.shape[1] - size[1]) // 2
            images.append(image[top : top + size[0], left : left + size[1]])
        if len(images) == count:
            return images
    raise RuntimeError("not enough sample photos")


@pytest.fixture(scope="session")
def gray_images() -> list[np.ndarray]:
    """Three float32 grayscale crops of real photos, integer-valued 0..255."""
    return [im.astype(np.float32) for im in real_images(3)]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def image_server(tmp_path):
    """A loopback HTTP server over a folder; yields (base_url, folder)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = lambda *a, **k: _QuietHandler(*a, directory=str(folder), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


def write_workdir(workdir: Path, filters: list[dict], urls: str, **config_overrides) -> Path:
    """A user's working directory: config/config.yaml and config/filters.yaml."""
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    config = {
        "data": {"urls": urls, "min_side": 8, "retries": 0, "timeout": 5},
        "split": {"val": 0.25, "test": 0.25, "seed": 0},
        "train": {"crop_size": 16, "crops": 8, "val_crops": 8, "max_steps": 60},
    }
    for section, values in config_overrides.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (workdir / "config" / "filters.yaml").write_text(yaml.safe_dump({"filters": filters}, sort_keys=False))
    return workdir


_workflow_copy: Path | None = None


def workflow_copy() -> Path:
    """This repository's workflow (Snakefile, workflow/, profiles/, envs/), copied once per
    session: the workflow tests run this copy, so one of them may edit its code (and put it
    back) without touching the checkout."""
    global _workflow_copy
    if _workflow_copy is None:
        root = Path(tempfile.mkdtemp(prefix="img2kernel-workflow-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
        for part in ("Snakefile", "workflow", "profiles", "envs"):
            source = REPO / part
            if source.is_dir():
                shutil.copytree(source, root / part, ignore=ignore)
            else:
                shutil.copy2(source, root / part)
        _workflow_copy = root
    return _workflow_copy


def snakemake(workdir: Path, *args: str, check: bool = True, snakefile: Path | None = None) -> subprocess.CompletedProcess:
    """Run the workflow (see :func:`workflow_copy`) in ``workdir``; the default profile applies."""
    snakefile = snakefile or workflow_copy() / "Snakefile"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir), "--cores", "2", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


_JOB = re.compile(r"^(?:local)?rule (\w+):\s*$")
_WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")


def planned_jobs(workdir: Path, *targets: str, snakefile: Path | None = None) -> Counter:
    """Jobs a dry run schedules, as Counter{(rule, filter or None): n}; `all` is left out."""
    out = snakemake(workdir, "-n", *targets, snakefile=snakefile).stdout
    jobs: Counter = Counter()
    rule, wildcard = None, None
    for line in out.splitlines() + ["rule _end:"]:
        match = _JOB.match(line)
        if match:
            if rule is not None and rule != "all":
                jobs[(rule, wildcard)] += 1
            rule, wildcard = match.group(1), None
            continue
        match = _WILDCARDS.match(line)
        if match and rule is not None:
            found = re.search(r"filter=([a-z0-9_]+)", match.group(1))
            wildcard = found.group(1) if found else None
    return jobs


def clone_workdir(source: Path, dest: Path) -> Path:
    """Copy a built working directory, timestamps and Snakemake's records included."""
    shutil.copytree(source, dest, symlinks=True, copy_function=shutil.copy2)
    return dest
