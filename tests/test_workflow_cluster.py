"""The whole workflow through `snakemake --executor cluster-generic`, every job in a sandbox.

tests/cluster/local_submit.py stands in for a batch system: each job runs as its own
detached process in a fresh folder holding only its declared inputs, and its outputs are
copied back. A job that read an undeclared file, or relied on the submitting process's
memory or environment, would fail here.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import cv2
import pytest

from conftest import REPO, planned_jobs, real_images, snakemake, write_workdir

pytestmark = pytest.mark.workflow

SUBMIT = REPO / "tests" / "cluster" / "local_submit.py"


def test_whole_workflow_runs_through_cluster_generic_one_sandboxed_process_per_job(tmp_path, image_server, monkeypatch):
    base_url, folder = image_server
    names = []
    for i, image in enumerate(real_images(6, size=(64, 56))):
        cv2.imwrite(str(folder / f"{i}.png"), image)
        names.append(f"{i}.png")
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "urls.txt").write_text("".join(f"{base_url}/{n}\n" for n in names))
    filters = [
        {"name": "sobel_x", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 3},
        {"name": "random_5", "kind": "random", "ksize": 5, "seed": 3},
    ]
    write_workdir(workdir, filters, "urls.txt", split={"val": 0.2, "test": 0.2})
    sandboxes = tmp_path / "sandboxes"
    monkeypatch.setenv("IMG2KERNEL_SANDBOXES", str(sandboxes))

    python = f"{sys.executable} {SUBMIT}"
    result = snakemake(
        workdir,
        "--profile", str(REPO / "profiles" / "cluster-generic"),
        "--cluster-generic-submit-cmd", python,
        "--cluster-generic-status-cmd", f"{python} --status",
        "--jobs", "4",
        # A cluster job gets the rule's threads (download: 8), not --cores: keep to this machine.
        "--set-threads", "download=1",
        "--seconds-between-status-checks", "1",
        "--latency-wait", "5",
    )
    assert (workdir / "results/report.html").is_file()

    records = [json.loads(p.read_text()) for p in sandboxes.glob("*.json")]
    rules = Counter(r["rule"] for r in records)
    assert rules == {"url_list": 1, "download": 1, "inputs_store": 1, "targets": 2, "train": 2, "evaluate": 2, "report": 1}
    assert all(r["state"] == "success" for r in records), [r for r in records if r["state"] != "success"]
    # One process per job, none of them the Snakemake that submitted it.
    pids = [r["pid"] for r in records]
    assert len(set(pids)) == len(records) and os.getpid() not in pids
    # Each sandbox was given its declared inputs and nothing else of the working directory.
    by_rule = {r["rule"]: r for r in records}
    assert by_rule["url_list"]["staged"] == ["urls.txt"]
    assert "results/images" not in by_rule["train"]["staged"]
    assert sorted(by_rule["train"]["staged"]) == sorted(
        ["results/store/inputs", f"results/store/targets/{Path(by_rule['train']['output'][0]).stem}"]
    )
    for record in records:  # every declared output came back from its sandbox
        for output in record["output"]:
            assert any(w == output or w.startswith(output + "/") for w in record["written"]), (output, record["written"])
    # The cluster run left a complete, up-to-date working directory.
    assert planned_jobs(workdir) == {}
    for name in ("sobel_x", "random_5"):
        evaluation = json.loads((workdir / f"results/eval/{name}.json").read_text())
        assert evaluation["kernel_errors"]["max_abs_rel"] < 1e-4, evaluation["kernel_errors"]
    assert "steps (100%) done" in result.stderr
