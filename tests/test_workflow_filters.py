"""Targets through Snakemake: exact per-filter targets, and reruns limited to the edited filter."""

from __future__ import annotations

import contextlib
import json
import os

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from img2kernel.sources.filters import build_filter
from img2kernel.store.shards import Store
from img2kernel.models import load_model
from conftest import clone_workdir, planned_jobs, real_images, snakemake, workflow_copy, write_workdir

pytestmark = pytest.mark.workflow

# Rules that run once per filter, and those that run once over all filters.
PER_FILTER_RULES = {"targets", "train", "evaluate"}
AGGREGATE_RULES = {"report"}

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
    # Declared cores beyond the machine's: jobs run side by side, and none writes another's file.
    snakemake(workdir, "--cores", "8")
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
    snakemake(workdir, "results/store/targets/random_3")
    assert Store(workdir / "results/store/targets/random_3").shards[0].meta["filter"]["seed"] == 2
    assert planned_jobs(workdir, "results/store/targets/random_3") == {}


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
    assert table[0].startswith("filter,kind,ksize,model,model_size,kernel_max_abs_rel,oracle_max_abs_rel,kernel_max_abs_error")
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


def edit_config(workdir, edit):
    path = workdir / "config" / "config.yaml"
    document = yaml.safe_load(path.read_text())
    edit(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def test_nothing_changed_means_nothing_to_do(built):
    assert planned_jobs(built) == {}


def test_removing_a_filter_reruns_only_the_report(built, tmp_path):
    workdir = clone_workdir(built, tmp_path / "w")
    edit_filters(workdir, lambda f: f.pop(1))
    assert set(planned_jobs(workdir)) == {("report", None)}
    snakemake(workdir)
    report = (workdir / "results" / "report.html").read_text()
    assert "random_3" not in report and "sobel_x" in report
    assert "random_3" not in (workdir / "results" / "tables" / "kernels.csv").read_text()


def test_a_training_default_reruns_every_train_and_evaluate_job_only(built, tmp_path):
    workdir = clone_workdir(built, tmp_path / "w")
    edit_config(workdir, lambda c: c["train"].update(crops=6))
    expected = {(rule, spec["name"]) for rule in ("train", "evaluate") for spec in FILTERS}
    assert set(planned_jobs(workdir)) == expected | {("report", None)}


def test_the_evaluation_cap_reruns_every_evaluate_job_only(built, tmp_path):
    workdir = clone_workdir(built, tmp_path / "w")
    edit_config(workdir, lambda c: c.setdefault("eval", {}).update(max_images=1))
    expected = {("evaluate", spec["name"]) for spec in FILTERS}
    assert set(planned_jobs(workdir)) == expected | {("report", None)}


def test_a_per_filter_training_override_reruns_that_filter_only(built, tmp_path):
    workdir = clone_workdir(built, tmp_path / "w")
    edit_filters(workdir, lambda f: f[0].update(train={"crops": 6}))
    assert set(planned_jobs(workdir)) == {("train", "sobel_x"), ("evaluate", "sobel_x"), ("report", None)}


def test_a_new_data_source_reruns_everything(built, tmp_path):
    workdir = clone_workdir(built, tmp_path / "w")
    urls = (workdir / "urls.txt").read_text().split()
    (workdir / "other_urls.txt").write_text("\n".join(urls[:3]) + "\n")
    edit_config(workdir, lambda c: c["data"].update(urls="other_urls.txt"))
    jobs = planned_jobs(workdir)
    per_filter = {(rule, spec["name"]) for rule in PER_FILTER_RULES for spec in FILTERS}
    assert set(jobs) == per_filter | {("url_list", None), ("download", None), ("inputs_store", None), ("report", None)}


def test_a_corrupted_shard_fails_the_next_job_naming_it(built, tmp_path):
    workdir = clone_workdir(built, tmp_path / "w")
    shard = workdir / "results" / "store" / "targets" / "sobel_x" / "00000.tar"
    index = json.loads((shard.parent / "00000.tar.index.json").read_text())
    offset = index["entries"][0]["offset"] + 8
    with open(shard, "r+b") as handle:
        handle.seek(offset)
        value = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([value ^ 0xFF]))
    result = snakemake(workdir, "--forcerun", "results/models/sobel_x.safetensors", check=False)
    assert result.returncode != 0
    log = (workdir / "results" / "logs" / "train" / "sobel_x.log").read_text()
    assert "results/store/targets/sobel_x/00000.tar: member" in log and "corrupted" in log
    assert "--forcerun results/store/targets/sobel_x" in log
    assert not (workdir / "results" / "models" / "sobel_x.safetensors").exists()
    # Following the message repairs it.
    snakemake(workdir, "--forcerun", "results/store/targets/sobel_x", "results/models/sobel_x.safetensors")
    assert load_model(workdir / "results" / "models" / "sobel_x.safetensors")[0].kernel.shape == (1, 1, 3, 3)


def test_code_edits_rerun_exactly_the_stages_that_run_that_code(built, tmp_path):
    """Snakemake sees scripts by mtime; `code()` inputs add the package modules. The edits go
    to the session's copy of the workflow and are put back, mtimes included."""
    workdir = clone_workdir(built, tmp_path / "w")
    repo = workflow_copy()
    per_filter = lambda *rules: {(rule, spec["name"]) for rule in rules for spec in FILTERS}  # noqa: E731

    @contextlib.contextmanager
    def edited(relative):
        path = repo / relative
        text, stat = path.read_text(), path.stat()
        path.write_text(text + "\n# edited\n")
        try:
            yield
        finally:
            path.write_text(text)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    with edited("workflow/img2kernel/report/plots.py"):
        assert set(planned_jobs(workdir)) == per_filter("evaluate") | {("report", None)}
    with edited("workflow/scripts/train.py"):
        assert set(planned_jobs(workdir)) == per_filter("train", "evaluate") | {("report", None)}
    assert planned_jobs(workdir) == {}


@pytest.mark.parametrize(
    "deleted, expected",
    [
        ("results/models/sobel_x.safetensors", {("train", "sobel_x"), ("evaluate", "sobel_x")}),
        ("results/store/targets/sobel_x", {("targets", "sobel_x"), ("train", "sobel_x"), ("evaluate", "sobel_x")}),
        ("results/eval/sobel_x.json", {("evaluate", "sobel_x")}),
        ("results/plots/random_3/images.png", {("evaluate", "random_3")}),
        ("results/tables/kernels.md", set()),
    ],
)
def test_a_deleted_output_is_rebuilt_with_only_what_depends_on_it(built, tmp_path, deleted, expected):
    import shutil

    workdir = clone_workdir(built, tmp_path / "w")
    path = workdir / deleted
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert set(planned_jobs(workdir)) == expected | {("report", None)}
    snakemake(workdir)
    assert path.exists() and planned_jobs(workdir) == {}


def photo_urls(folder, count, size=(40, 48)) -> str:
    """``count`` real photos saved in ``folder``; their file:// URLs, one per line."""
    folder.mkdir(parents=True, exist_ok=True)
    urls = []
    for i, image in enumerate(real_images(count, size=size)):
        cv2.imwrite(str(folder / f"{i}.png"), image)
        urls.append((folder / f"{i}.png").resolve().as_uri())
    return "\n".join(urls) + "\n"


def test_a_project_moved_to_another_folder_has_nothing_to_do(tmp_path):
    """The project as users have it: the workflow inside the working directory (a clone)."""
    import shutil

    project = tmp_path / "first" / "img2kernel"
    shutil.copytree(workflow_copy(), project, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "urls.txt").write_text(photo_urls(project / "photos", 3))
    write_workdir(project, FILTERS[:1], "urls.txt")
    snakemake(project, snakefile=project / "Snakefile")
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(project, moved, symlinks=True, copy_function=shutil.copy2)
    assert planned_jobs(moved, snakefile=moved / "Snakefile") == {}
    shutil.rmtree(project)  # the original gone too: the copy stands alone (its URL list is on disk)
    assert planned_jobs(moved, snakefile=moved / "Snakefile") == {}


def test_one_image_is_enough_split_by_tiles(tmp_path):
    (tmp_path / "urls.txt").write_text(photo_urls(tmp_path / "photos", 1, size=(80, 96)))
    write_workdir(tmp_path, FILTERS[:1], "urls.txt")
    snakemake(tmp_path)
    manifest = json.loads((tmp_path / "results/store/inputs/manifest.json").read_text())
    assert manifest["images"] == 4 and manifest["split_by"].startswith("2 x 2 disjoint tiles")
    evaluation = json.loads((tmp_path / "results/eval/sobel_x.json").read_text())
    assert evaluation["split"] == "test" and evaluation["kernel_max_abs_rel"] < 1e-4
    assert "split by 2 x 2 disjoint tiles" in (tmp_path / "results/report.html").read_text()


def test_with_no_test_split_the_metrics_say_val(tmp_path):
    (tmp_path / "urls.txt").write_text(photo_urls(tmp_path / "photos", 4))
    write_workdir(tmp_path, FILTERS[:1], "urls.txt", split={"val": 0.25, "test": 0.0, "seed": 0})
    snakemake(tmp_path)
    evaluation = json.loads((tmp_path / "results/eval/sobel_x.json").read_text())
    assert evaluation["split"] == "val"
    assert "val PSNR, reflect border" in (tmp_path / "results/report.html").read_text()
    assert pd.read_csv(tmp_path / "results/tables/kernels.csv")["split"].tolist() == ["val"]
