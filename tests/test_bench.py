"""The benchmark commands run and print their figures (speed itself is not asserted: see README)."""

from __future__ import annotations

import yaml

from img2kernel.bench import bench_training, build_sample_store
from img2kernel.cli import main
from img2kernel.targets import compute_targets
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
