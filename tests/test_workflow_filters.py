"""Targets through Snakemake: exact per-filter targets, and reruns limited to the edited filter."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from img2kernel.filters import build_filter
from img2kernel.store import Store
from conftest import clone_workdir, planned_jobs, real_images, snakemake, write_workdir

pytestmark = pytest.mark.workflow

# Rules that run once per filter, and those that run once over all filters.
PER_FILTER_RULES = {"targets", "train", "evaluate"}
AGGREGATE_RULES = {"summary", "report"}

FILTERS = [
    {"name": "sobel_x", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 3},
    {"name": "random_3", "kind": "random", "ksize": 3, "seed": 1},
]


def expected_jobs(name: str) -> set:
    return {(rule, name) for rule in PER_FILTER_RULES} | {(rule, None) for rule in AGGREGATE_RULES}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A working directory with four small real photos as file:// URLs, built once."""
    workdir = tmp_path_factory.mktemp("built")
    (workdir / "photos").mkdir()
    urls = []
    for i, image in enumerate(real_images(4, size=(40, 48))):
        path = workdir / "photos" / f"{i}.png"
        cv2.imwrite(str(path), image)
        urls.append(path.resolve().as_uri())
    (workdir / "urls.txt").write_text("\n".join(urls) + "\n")
    write_workdir(workdir, FILTERS, "urls.txt")
    snakemake(workdir)
    return workdir


def edit_filters(workdir, edit):
    path = workdir / "config" / "filters.yaml"
    document = yaml.safe_load(path.read_text())
    edit(document["filters"])
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def test_targets_are_the_filter_applied_to_every_input(built):
    inputs = Store(built / "results/store/inputs")
    assert len(inputs) == 4
    for spec in FILTERS:
        targets = Store(built / f"results/store/targets/{spec['name']}")
        assert targets.keys() == inputs.keys()
        filt = build_filter({"output": "float", "distribution": "normal", "normalization": "none", **spec})
        for key in inputs.keys():
            assert targets.split_of(key) == inputs.split_of(key)
            np.testing.assert_array_equal(targets.array(key), filt.apply(inputs.array(key)))
    assert planned_jobs(built) == {}


def test_adding_a_filter_schedules_only_its_jobs(built, tmp_path):
    workdir = clone_workdir(built, tmp_path / "w")
    edit_filters(workdir, lambda f: f.append({"name": "laplacian", "kind": "laplacian", "ksize": 3}))
    assert set(planned_jobs(workdir)) == expected_jobs("laplacian")


def test_editing_a_seed_reruns_only_that_filter(built, tmp_path):
    workdir = clone_workdir(built, tmp_path / "w")
    edit_filters(workdir, lambda f: f[1].update(seed=2))
    assert set(planned_jobs(workdir)) == expected_jobs("random_3")
    snakemake(workdir)
    kernel = Store(workdir / "results/store/targets/random_3").shards[0].meta["filter"]
    assert kernel["seed"] == 2
    assert planned_jobs(workdir) == {}


def test_formatting_only_edits_schedule_nothing(built, tmp_path):
    workdir = clone_workdir(built, tmp_path / "w")
    path = workdir / "config" / "filters.yaml"
    document = yaml.safe_load(path.read_text())
    reordered = {"filters": [dict(reversed(list(f.items()))) for f in document["filters"]]}
    path.write_text("# a comment\n\n" + yaml.safe_dump(reordered, sort_keys=False, indent=4))
    assert planned_jobs(workdir) == {}


def test_bad_filter_stops_before_any_job_and_touches_nothing(built, tmp_path):
    workdir = clone_workdir(built, tmp_path / "w")
    before = {p: p.stat().st_mtime_ns for p in (workdir / "results").rglob("*")}
    edit_filters(workdir, lambda f: f[0].update(ksize=4))
    result = snakemake(workdir, check=False)
    assert result.returncode != 0
    assert "config/filters.yaml: filter 'sobel_x' (entry 1): field 'ksize': 4 is not one of" in result.stderr + result.stdout
    after = {p: p.stat().st_mtime_ns for p in (workdir / "results").rglob("*")}
    assert after == before


def test_report_names_every_filter_and_loads_in_headless_chromium(built, tmp_path):
    from browser import chromium, image_check, screenshot

    report = built / "results" / "report.html"
    html = report.read_text()
    for spec in FILTERS:
        assert spec["name"] in html
    table = (built / "results" / "tables" / "kernels.csv").read_text().splitlines()
    assert table[0].startswith("filter,kind,ksize,model_size,kernel_max_abs_error,kernel_rel_error,oracle_max_abs_error")
    assert len(table) == 1 + len(FILTERS)
    assert planned_jobs(built, "results/report.html") == {}

    binary = chromium()
    if binary is None:
        pytest.skip("no Chromium on this machine (Debian package 'chromium'; .ci/run installs it): "
                    "report not checked in a browser")
    images, failed = image_check(binary, report)
    assert images == 3 * len(FILTERS) + 1 and failed == 0
    shot = screenshot(binary, report, tmp_path / "report.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
