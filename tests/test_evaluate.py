"""Evaluation metrics, kernel alignment, and the report renderer (escaping, embedded images)."""

from __future__ import annotations

import math

import base64
import json
import re

import numpy as np
import pytest

from img2kernel.evaluate.generated import evaluate_filter, verdict
from img2kernel.evaluate.metrics import image_metrics
from img2kernel.sources.filters import build_filter
from img2kernel.evaluate.kernels import align, compare
from img2kernel.store.shards import ShardWriter


@pytest.fixture
def tiny_store(tmp_path, gray_images):
    """Inputs and sobel_x targets; every image in the test split."""
    filt = build_filter({"name": "sobel_x", "kind": "sobel", "dx": 1, "dy": 0, "ksize": 3, "output": "float"})
    with ShardWriter(tmp_path / "in" / "00000.tar") as inputs, ShardWriter(tmp_path / "tg" / "00000.tar") as targets:
        for i, image in enumerate(gray_images):
            inputs.add(f"{i:03d}", image, "test")
            targets.add(f"{i:03d}", filt.apply(image), "test")
    return tmp_path / "in", tmp_path / "tg", filt


def as_model(filt, kernels):
    return filt.model_of(kernels)


def info_for(filt, **extra):
    return {"filter": filt.spec, "linear_residual": 1e-15, "learned_val_residual": 0.0, "seconds": 0.1, "steps": 5,
            "stop_reason": "converged", "device": "cpu", **extra}


def test_perfect_kernel_gives_psnr_above_100_db_and_zero_error(tiny_store):
    inputs, targets, filt = tiny_store
    true = as_model(filt, np.stack(filt.kernels))
    result = evaluate_filter(inputs, targets, true, true, info_for(filt)).to_json()
    assert result["test_psnr"] > 100
    assert result["test_ssim"] == pytest.approx(1.0)
    assert result["kernel_max_abs_error"] == 0 and result["oracle_max_abs_error"] == 0
    assert result["verdict"] == "recovered"
    assert result["test_psnr_zeros_border"] < 60  # the same kernel with the wrong border loses the edges
    assert result["split_images"] == 3 and len(result["images"]) == 3


def test_max_images_evaluates_the_first_test_images_only(tiny_store):
    inputs, targets, filt = tiny_store
    true = as_model(filt, np.stack(filt.kernels))
    result = evaluate_filter(inputs, targets, true, true, info_for(filt), max_images=2).to_json()
    assert [m["key"] for m in result["images"]] == ["000", "001"] and result["split_images"] == 3


def test_perturbed_kernel_error_equals_the_perturbation(tiny_store):
    inputs, targets, filt = tiny_store
    perturbed = np.stack(filt.kernels).copy()
    perturbed[0, 0, 2] += 0.01
    result = evaluate_filter(inputs, targets, as_model(filt, perturbed), None, info_for(filt)).to_json()
    assert result["kernel_max_abs_error"] == pytest.approx(0.01, rel=1e-12)
    assert result["kernel_max_abs_rel"] == pytest.approx(0.005, rel=1e-12)
    assert result["test_psnr"] < 100
    assert result["verdict"].startswith("approximate")


def test_procrustes_aligns_a_rotated_and_reflected_pair():
    filt = build_filter({"name": "m", "kind": "sobel_magnitude", "ksize": 3})
    true = np.stack(filt.kernels)
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.diag([1, -1])
    rotated = np.einsum("ij,jkl->ikl", rotation, true)
    assert compare(rotated, true, "none", "float")["max_abs_error"] > 1
    np.testing.assert_allclose(align(rotated, true, "magnitude", "float"), true, atol=1e-12)
    image = np.random.default_rng(0).uniform(0, 255, (20, 24))
    np.testing.assert_allclose(filt.model_of(rotated).predict(image), filt.model_of(true).predict(image), rtol=1e-9, atol=1e-9)


def test_sign_is_aligned_only_for_saturated_abs_outputs():
    kernel = np.arange(9.0).reshape(1, 3, 3) - 4
    assert compare(-kernel, kernel, "none", "abs_uint8")["max_abs_error"] == 0
    assert compare(-kernel, kernel, "none", "float")["max_abs_error"] == 8


def test_metrics_and_verdicts():
    target = np.linspace(0, 100, 400).reshape(20, 20)
    assert image_metrics(target.copy(), target, 100.0)["psnr"] == float("inf")
    off_by_one = image_metrics(target + 1, target, 100.0)
    assert off_by_one["mse"] == pytest.approx(1) and off_by_one["psnr"] == pytest.approx(40.0)
    assert off_by_one["identical_fraction"] == 0 and off_by_one["max_abs_error"] == pytest.approx(1)
    masked = image_metrics(np.where(target > 50, target + 3, target), target, 100.0, mask=target <= 50)
    assert masked["mse"] == 0 and masked["pixels"] == int(np.sum(target <= 50))
    assert verdict(False, None, 0.04, "none", "float").startswith("not a linear filter")
    assert verdict(True, 1e-6, 1.0, "magnitude", "float") == (
        "recovered up to rotation of the pair; not one linear kernel (two kernels and a magnitude)"
    )
    assert verdict(True, 0.5, 1e-12, "none", "float").startswith("not recovered")


def test_report_escapes_names_and_embeds_every_image(tmp_path, tiny_store):
    """The schema allows no HTML in names, so the renderer is tested directly with one."""
    from img2kernel.report import plots
    from img2kernel.report.page import render_report
    from img2kernel.report.summary import write_summary

    inputs, targets, filt = tiny_store
    true = as_model(filt, np.stack(filt.kernels))
    evaluation = evaluate_filter(inputs, targets, true, true, info_for(filt)).to_json()
    evil = '<script>alert("x")</script>&'
    evaluation["filter"] = evil
    evaluation["spec"] = {**evaluation["spec"], "name": evil}
    eval_path = tmp_path / "eval" / "f.json"
    eval_path.parent.mkdir()
    eval_path.write_text(json.dumps(evaluation))
    plot_dir = tmp_path / "plots" / "f"
    plot_dir.mkdir(parents=True)
    history = tmp_path / "history.csv"
    history.write_text("step,seconds,train_loss,val_loss,kernel_max_abs_error,kernel_max_abs_rel,kernel_change,lr\n5,0.1,1e-3,2e-3,0.1,0.05,0.1,1\n10,0.2,1e-9,2e-9,1e-5,5e-6,1e-6,1\n")
    plots.kernels_figure(evaluation, plot_dir / "kernels.png")
    plots.training_figure(history, evil, plot_dir / "training.png")
    plots.images_figure([plots.image_preview("000", np.ones((8, 8)), np.ones((8, 8)), np.ones((8, 8)))], evil, plot_dir / "images.png")
    write_summary([eval_path], tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "summary.png")
    (tmp_path / "download.json").write_text(json.dumps({"attempted": 3, "downloaded": 2, "failed": 1, "failed_by_reason": {"<b>404</b>": 1}, "shards": ["00000.tar"], "resumed_shards": 0}))
    (tmp_path / "manifest.json").write_text(json.dumps({"images": 2, "splits": {"train": 1, "val": 0, "test": 1}, "skipped": {}, "dtype": "float32"}))
    bench = tmp_path / "benchmarks" / "train" / "f.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n1.5\t0:00:01\t100.0\t1\t1\t1\t0\t0\t1\t1\n")
    out = tmp_path / "report.html"
    html = render_report([eval_path], [plot_dir], tmp_path / "t.csv", tmp_path / "summary.png",
                         tmp_path / "download.json", tmp_path / "manifest.json", [bench], out)
    assert evil not in html and "<b>404</b>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;" in html
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == 4
    for source in sources:
        assert source.startswith("data:image/webp;base64,")
        payload = base64.b64decode(source.split(",", 1)[1])
        assert payload[:4] == b"RIFF" and payload[8:12] == b"WEBP"
    assert "http://" not in html and "https://" not in html  # opens without a network


@pytest.mark.parametrize("combine, output", [("none", "float"), ("magnitude", "float"), ("none", "abs_uint8")])
@pytest.mark.parametrize("border, rule", [("reflect", "reflect101"), ("zeros", "zero"), ("replicate", "replicate")])
def test_predict_is_the_trained_torch_models_function(combine, output, border, rule):
    """The numpy model that evaluation and apply run computes what the torch twin trained."""
    import torch

    from img2kernel.fit.learnable import LearnableKernel

    rng = np.random.default_rng(1)
    kernels = rng.standard_normal((2 if combine == "magnitude" else 1, 5, 5)) * 20
    image = rng.uniform(0, 255, (23, 31))
    model = LearnableKernel.from_kernels(kernels, combine, saturate=output == "abs_uint8", dtype=torch.float64)
    model.eps = 0.0
    with torch.no_grad():
        expected = model(torch.from_numpy(image)[None, None], border=border)[0, 0].numpy()
    if output == "abs_uint8":
        expected = np.rint(expected)
    spec = {"name": "k", "kind": "sobel_magnitude" if combine == "magnitude" else "sobel", "dx": 1, "dy": 0, "ksize": 3,
            "output": output}
    numpy_model = build_filter(spec).model_of(kernels)
    np.testing.assert_allclose(numpy_model.predict(image, rule), expected, rtol=1e-12, atol=1e-9)


def test_large_images_are_reduced_for_the_figure_and_ssim_takes_the_central_window():
    from img2kernel.report import plots
    from img2kernel.evaluate.metrics import SSIM_MAX_SIDE, central_window

    rng = np.random.default_rng(2)
    target = rng.uniform(0, 255, (2500, 3100)).astype(np.float32)
    prediction = target.astype(np.float64)
    prediction[0, 7] += 5.0  # one wrong pixel on the top edge
    preview = plots.image_preview("k", target, target, prediction)
    assert preview.factor == 4 and preview.input.shape == (625, 775) == preview.error.shape
    assert preview.error_max == pytest.approx(5.0) and preview.error[0, 1] == pytest.approx(5.0)  # kept by the block max
    assert np.count_nonzero(preview.error) == 1
    metrics = image_metrics(prediction, target, 255.0)
    window = central_window(target, SSIM_MAX_SIDE)
    assert window.shape == (SSIM_MAX_SIDE, SSIM_MAX_SIDE) and window[0, 0] == target[226, 526]
    assert metrics["ssim"] == pytest.approx(1.0) and metrics["mse"] == pytest.approx(25 / target.size)
    assert math.isnan(image_metrics(prediction, target, 255.0, ssim=False)["ssim"])


def test_kernel_csv_has_one_row_per_tap_centred_for_every_kernel_set(tmp_path):
    import pandas as pd

    from img2kernel.evaluate.kernels import write_kernels_csv

    true = np.arange(9.0).reshape(1, 3, 3)
    learned = np.pad(true, ((0, 0), (1, 1), (1, 1))) + 1e-9  # a 5x5 model around a 3x3 kernel
    evaluation = {"source": "generated", "true_kernels": true.tolist(), "learned_kernels": learned.tolist(),
                  "oracle_kernels": learned.tolist()}
    write_kernels_csv(evaluation, tmp_path / "k.csv")
    table = pd.read_csv(tmp_path / "k.csv")
    assert list(table.columns) == ["kernel", "dy", "dx", "true", "learned", "least_squares"]
    assert len(table) == 25 and table["dy"].min() == -2 and table["dx"].max() == 2
    centre = table[(table.dy == 0) & (table.dx == 0)].iloc[0]
    assert centre["true"] == 4.0 and centre["learned"] == 4.0 + 1e-9  # full precision, not rounded
    top_left = table[(table.dy == -1) & (table.dx == -1)].iloc[0]
    assert top_left["true"] == 0.0 and table[(table.dy == -1) & (table.dx == 1)].iloc[0]["true"] == 2.0

    pairs = {"source": "pairs", "kernel": np.arange(3 * 3 * 9.0).reshape(3, 3, 3, 3).tolist()}
    write_kernels_csv(pairs, tmp_path / "p.csv")
    table = pd.read_csv(tmp_path / "p.csv")
    assert list(table.columns) == ["c_out", "c_in", "dy", "dx", "learned"] and len(table) == 81
    row = table[(table.c_out == 2) & (table.c_in == 1) & (table.dy == 1) & (table.dx == -1)].iloc[0]
    assert row["learned"] == np.arange(81.0).reshape(3, 3, 3, 3)[2, 1, 2, 0]


def test_the_summary_says_what_each_filter_is_for_every_source():
    from img2kernel.report.summary import finding

    rank_row = {"model": "rank", "description": "3x3 median", "adequate": True, "residual_in_floors": 0.0}
    linear_row = {"model": "linear", "description": "3x3 affine kernel", "adequate": False, "residual_in_floors": 24.0}
    cnn_row = {"model": "cnn", "description": "small CNN", "adequate": False, "residual_in_floors": 7.4}
    ours = {"model": "linear", "model_description": "3x3 affine kernel, gray -> gray", "linear": True, "ladder": [], "kind": "sobel",
            "verdict": "approximate"}
    recovered = finding({**ours, "kernel_max_abs_rel": 2e-15, "verdict": "recovered"})
    assert recovered == {"what": "3x3 affine kernel, gray -> gray: the true sobel kernel", "status": "recovered", "tone": "ok",
                         "headline": "recovered"}
    assert finding({**ours, "kernel_max_abs_rel": 3e-3})["status"] == "approximate"
    assert finding({**ours, "kernel_max_abs_rel": 0.5})["tone"] == "bad"
    median = {"model": "rank", "model_description": "3x3 median, rounded and clipped to 8 bits", "linear": False,
              "kernel_max_abs_rel": None, "ladder": [linear_row, rank_row], "verdict": "not a linear filter: ...; it is a 3x3 median"}
    assert finding(median) == {"what": "3x3 median", "status": "found", "tone": "ok",
                               "headline": "found: not a linear filter: ...; it is a 3x3 median"}
    pairs = {"model": "linear", "model_description": "3x3 affine kernel", "linear": True, "ladder": [{**linear_row, "adequate": True}],
             "identification": {"text": "Pillow EMBOSS x 1, flipped up-down"}, "verdict": "linear: Pillow EMBOSS"}
    assert finding(pairs)["status"] == "linear" and finding(pairs)["what"] == "Pillow EMBOSS x 1, flipped up-down"
    bilateral = {"model": "cnn", "model_description": "small CNN", "linear": False, "ladder": [linear_row, cnn_row], "verdict": "v"}
    assert finding(bilateral) == {"what": "small CNN (7.4x the noise floor)", "status": "best fit", "tone": "warn", "headline": "best fit: v"}
    unsharp = {"model": "linear", "model_description": "7x7 affine kernel", "linear": True, "ladder": [{**linear_row, "residual_in_floors": 5.0}, cnn_row], "verdict": "v"}
    assert finding(unsharp)["what"] == "3x3 affine kernel (5x the noise floor)" and finding(unsharp)["tone"] == "warn"


def test_every_source_writes_the_same_evaluation_record(tiny_store, tmp_path):
    from img2kernel.evaluate.record import SCORES, Evaluation

    inputs, targets, filt = tiny_store
    true = as_model(filt, np.stack(filt.kernels))
    record = evaluate_filter(inputs, targets, true, true, info_for(filt))
    assert isinstance(record, Evaluation)
    written = record.write(tmp_path / "e.json")
    assert json.loads((tmp_path / "e.json").read_text()) == json.loads(json.dumps(written))
    assert set(SCORES) <= set(written) and written["test_identical_fraction"] <= 1
    with pytest.raises(ValueError, match="may not redefine"):
        Evaluation(**{**record.__dict__, "evidence": {"test_psnr": 1.0}}).to_json()
