"""The benchmark commands run and print their figures (speed itself is not asserted: see README)."""

from __future__ import annotations

import re

import yaml

from img2kernel.bench.speed import bench_training, build_sample_store
from img2kernel.cli.main import main
from img2kernel.sources.targets import compute_targets
from conftest import REPO


def test_training_benchmark_compares_ours_with_the_public_recipe(tmp_path):
    inputs = build_sample_store(tmp_path / "inputs")
    spec = {"name": "sobel_x", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 3}
    compute_targets(inputs, tmp_path / "targets" / "sobel_x", {**spec, "output": "float"})
    (tmp_path / "filters.yaml").write_text(yaml.safe_dump({"filters": [spec]}))
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["filters"] = str(tmp_path / "filters.yaml")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))

    rows, magnitude = bench_training(inputs, tmp_path / "targets", tmp_path / "config.yaml", budget_seconds=0.5, device="cpu")
    assert magnitude == [] and [row["filter"] for row in rows] == ["sobel_x"]
    row = rows[0]
    assert row["ours_final_error"] < 1e-4 and float(row["ours_1e-04_s"]) < 5
    assert row["public_1e-04_s"] == "not in 0.5"  # the common recipe gets nowhere near in half a second
    assert row["speedup_at_1e-4"].startswith(">") and row["device"] == "cpu"


def test_apply_benchmark_prints_every_run(capsys):
    assert main(["bench", "apply", "--size", "300", "--tile", "64"]) == 0
    printed = capsys.readouterr().out
    for run in ("tiled apply to memory, tile 64, 1 thread", "img2kernel apply .npy to .npy", "cv2.filter2D, whole image",
                "np.load + cv2.filter2D"):
        assert run in printed
    assert "300x300 float32" in printed and "peak_anon_mb" in printed


def test_every_job_log_ends_with_its_start_up_work_and_imports(tmp_path, monkeypatch, capsys):
    from img2kernel.pipeline.logs import log_to

    (tmp_path / "slow_module_for_timing.py").write_text("import time\ntime.sleep(0.3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    log = tmp_path / "job.log"
    with capsys.disabled(), log_to(log) as logger:  # as in a job: the logger writes to descriptor 2
        import slow_module_for_timing  # noqa: F401

        logger.info("working")
    last = log.read_text().strip().splitlines()[-1]
    match = re.search(r"timing: start-up ([\d.]+) s, work ([\d.]+) s, of which imports ([\d.]+) s", last)
    assert match, last
    startup, work, imports = map(float, match.groups())
    assert startup > 0 and 0.3 <= imports <= work < 5


def test_a_process_age_is_within_the_time_its_parent_waited_for_it():
    import subprocess
    import sys
    import time

    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); time.sleep(0.4)\n"
            "from img2kernel.pipeline.logs import process_age; print(process_age())")
    started = time.perf_counter()
    printed = subprocess.run([sys.executable, "-c", code, str(REPO / "workflow")], capture_output=True, text=True,
                             check=True).stdout
    waited = time.perf_counter() - started
    # The start is known to a clock tick (10 ms); a whole-second boot-time rounding would show.
    assert 0.4 <= float(printed) <= waited + 0.05


def test_pipeline_benchmark_splits_each_stage_into_start_up_imports_and_work(tmp_path):
    from img2kernel.bench.pipeline import stage_timings

    jobs = {"train/a": (3.0, "1.000", "2.500", "1.500"), "train/b": (2.0, "1.000", "1.500", "1.000"),
            "report": (1.0, "0.500", "0.400", "0.100"), "urls/url_list": (0.5, "0.400", "0.050", "0.000")}
    for job, (wall, startup, work, imports) in jobs.items():
        benchmark = tmp_path / "results" / "benchmarks" / f"{job}.tsv"
        log = tmp_path / "results" / "logs" / f"{job}.log"
        benchmark.parent.mkdir(parents=True, exist_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        benchmark.write_text(f"s\th:m:s\tmax_rss\n{wall}\t0:00:0{int(wall)}\t100\n")
        log.write_text(f"x INFO timing: start-up {startup} s, work {work} s, of which imports {imports} s\n")
    rows = {row["stage"]: row for row in stage_timings(tmp_path)}
    assert [*rows] == ["urls", "train", "report"]  # pipeline order
    assert rows["train"] == {"stage": "train", "jobs": 2, "wall_s": 5.0, "startup_s": 2.0, "imports_s": 2.5,
                             "work_s": 1.5, "slowest_job_s": 3.0}
    assert rows["report"]["work_s"] == 0.3


def test_memory_benchmark_prints_each_peak_against_its_target(capsys):
    import numpy as np

    from img2kernel.bench.memory import bench_memory, print_memory

    np.ones(80_000_000).sum()  # this process's high-water mark above the target: a child must not report it
    result = bench_memory(side=256, workflow=False)
    print_memory(result)
    out = capsys.readouterr().out
    assert result["fit"]["status"] == 0 and 0 < result["fit"]["peak_mb"] < result["target_mb"]
    assert re.search(r"img2kernel fit +[\d.]+ s +[\d,]+ MB  met", out)
    for name in ("apply", "fit", "config check"):  # each refuses the bomb, naming it, in its own words
        assert result["bombs"][name]["status"] != 0 and "a.png: its header claims 32000x32000" in result["bombs"][name]["said"]


def test_jpeg_speed_benchmark_times_the_same_pixels_saved_both_ways():
    from img2kernel.bench.pairs import JPEG_SPEED_TARGET, bench_jpeg_speed

    rows = bench_jpeg_speed(count=2, side=128, runs=1)
    assert [r["tool"] for r in rows] == ["cv2.filter2D sharpen (4-neighbour)", "cv2.filter2D gaussian 5x5 sigma 1"]
    for row in rows:
        assert row["ratio"] == row["jpeg_q85_fit_s"] / row["lossless_fit_s"] > 0
        assert row["met"] == (row["ratio"] <= JPEG_SPEED_TARGET)
