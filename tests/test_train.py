"""Training: exact recovery from valid crops, determinism, the magnitude pair, and the border bias."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from img2kernel.sources.filters import build_filter
from img2kernel.evaluate.kernels import center, compare
from img2kernel.fit.learnable import LearnableKernel
from img2kernel.store.shards import ShardWriter
from img2kernel.store.crops import CropSampler
from img2kernel.models import AffineKernel, load_model
from img2kernel.fit.gradient import Crops, TrainingError, fit
from img2kernel.fit.filter_job import save_outcome, train_filter

SETTINGS = {
    "optimizer": "lbfgs",
    "ksize": None,
    "crop_size": 32,
    "crops": 16,
    "val_crops": 8,
    "lr": None,
    "history": 100,
    "max_steps": 400,
    "check_every": 5,
    "refresh_every": 0,
    "rel_tol": 1e-10,
    "kernel_tol": 1e-6,
    "dtype": "float32",
    "seed": 0,
}


def crops_for(filt, images, ksize, n=16, size=32, seed=0, halo=None):
    """Crops with a halo of ksize // 2 and their targets, computed by the filter on whole images."""
    targets = [filt.apply(im) for im in images]
    sampler = CropSampler(images, size, ksize // 2 if halo is None else halo, targets, seed=seed)
    return sampler.sample(n)


def spec(**fields):
    return {"name": "f", "output": "float", **fields}


def learn(filt, images, ksize=None, seed=0, settings=None, **kwargs):
    ksize = ksize or filt.ksize
    settings = {**SETTINGS, **(settings or {})}
    train = Crops.from_arrays(*crops_for(filt, images, ksize, seed=seed))
    val = Crops.from_arrays(*crops_for(filt, images, ksize, n=8, seed=seed + 100))
    n = len(filt.kernels) if filt.kernels is not None else 1
    model = LearnableKernel(ksize, n, filt.combine, filt.output == "abs_uint8", seed=seed)
    true = np.stack(filt.kernels) if filt.kernels is not None else None
    return fit(model, train, val, settings, true_kernels=true, filt=filt, **kwargs)


@pytest.fixture(scope="module")
def noise_images():
    rng = np.random.default_rng(5)
    return [np.round(rng.uniform(0, 255, (80, 90))).astype(np.float32) for _ in range(3)]


def test_recovers_sobel_3x3_from_synthetic_images(noise_images):
    filt = build_filter(spec(kind="sobel", dx=1, dy=0, ksize=3))
    result = learn(filt, noise_images)
    errors = compare(result.kernels, np.stack(filt.kernels), "none", "float")
    assert errors["max_abs_rel"] < 1e-5
    assert result.stop_reason == "converged"


def test_recovers_random_5x5_from_real_images(gray_images):
    filt = build_filter(spec(kind="random", ksize=5, seed=3, distribution="normal", normalization="none"))
    result = learn(filt, gray_images)
    assert compare(result.kernels, np.stack(filt.kernels), "none", "float")["max_abs_rel"] < 1e-4


def test_larger_model_puts_outer_taps_to_zero(gray_images):
    filt = build_filter(spec(kind="sobel", dx=1, dy=0, ksize=3))
    result = learn(filt, gray_images, ksize=5)
    learned = result.kernels[0]
    assert learned.shape == (5, 5)
    outer = learned.copy()
    outer[1:4, 1:4] = 0
    assert np.max(np.abs(outer)) < 1e-4 * 2  # largest true tap is 2
    np.testing.assert_allclose(learned[1:4, 1:4], filt.kernels[0], atol=2e-4)


def test_asymmetric_kernel_is_learned_unflipped(gray_images):
    kernel = [[0, 1, 2], [-1, 0, 3], [-2, -3, 0.5]]
    filt = build_filter(spec(kind="custom", kernel=kernel))
    learned = learn(filt, gray_images).kernels[0]
    np.testing.assert_allclose(learned, kernel, atol=1e-4)
    assert np.max(np.abs(learned - np.flip(kernel))) > 1  # a convolution would have learned this


def test_same_seed_same_kernel_other_seed_same_answer(gray_images):
    filt = build_filter(spec(kind="random", ksize=3, seed=1, distribution="normal", normalization="none"))
    first, again = learn(filt, gray_images), learn(filt, gray_images)
    np.testing.assert_array_equal(first.kernels, again.kernels)
    assert [h["train_loss"] for h in first.history] == [h["train_loss"] for h in again.history]
    other = learn(filt, gray_images, seed=7)
    assert other.history[0]["train_loss"] != first.history[0]["train_loss"]  # another start and other crops...
    np.testing.assert_allclose(other.kernels, first.kernels, atol=1e-4 * np.abs(filt.kernels[0]).max())  # ...same kernel


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_magnitude_pair_is_recovered_up_to_rotation(gray_images, seed):
    filt = build_filter(spec(kind="sobel_magnitude", ksize=3))
    result = learn(filt, gray_images, seed=seed)
    raw = compare(result.kernels, np.stack(filt.kernels), "none", "float")["max_abs_rel"]
    aligned = compare(result.kernels, np.stack(filt.kernels), "magnitude", "float")["max_abs_rel"]
    assert aligned < 1e-4  # the product's figure for a recovered kernel
    assert aligned <= raw


def test_zero_padded_crops_are_biased_valid_crops_are_not(gray_images):
    """Same optimiser, same data: only the border handling differs."""
    filt = build_filter(spec(kind="sobel", dx=1, dy=0, ksize=5))
    true = np.stack(filt.kernels)
    valid = learn(filt, gray_images)
    assert compare(valid.kernels, true, "none", "float")["max_abs_rel"] < 1e-4

    # Crops without a halo, padded with zeros by the model: what the common recipe does.
    inputs, targets = crops_for(filt, gray_images, 5, halo=0)
    model = LearnableKernel(5)
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=200, history_size=100, line_search_fn="strong_wolfe")
    x, y = torch.from_numpy(inputs)[:, None], torch.from_numpy(targets)[:, None]

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x, border="zeros"), y) / float(np.mean(targets**2))
        loss.backward()
        return loss

    for _ in range(3):
        optimizer.step(closure)
    assert compare(model.kernels(), true, "none", "float")["max_abs_rel"] > 1e-2


def test_saturated_abs_output_is_learned_up_to_sign(gray_images):
    filt = build_filter({**spec(kind="sobel", dx=1, dy=0, ksize=3), "output": "abs_uint8"})
    result = learn(filt, gray_images)
    assert compare(result.kernels, np.stack(filt.kernels), "none", "abs_uint8")["max_abs_rel"] < 1e-3


def test_divergence_is_caught_and_no_nan_kernel_is_returned(gray_images):
    filt = build_filter(spec(kind="sobel", dx=1, dy=0, ksize=3))
    with pytest.raises(TrainingError, match=r"diverged \(non-finite loss\) 6 times, last at step \d+ with lr 3.125e\+28; set a smaller train.lr"):
        learn(filt, gray_images, settings={"optimizer": "adam", "lr": 1e30, "max_steps": 50})
    # A step that goes non-finite restores the last good kernel and halves the rate; training
    # then goes on to the right kernel. The probe poisons the kernel after steps 3 and 6.
    def poison(step, seconds, model):
        if step in (3, 6):
            with torch.no_grad():
                model.weight.fill_(float("nan"))
        return False

    result = learn(filt, gray_images, probe=poison)
    assert result.recoveries == 2 and result.lr == 0.25  # L-BFGS's 1, halved twice
    assert [row["lr"] for row in result.history][:3] == [1.0, 1.0, 1.0] and result.history[-1]["lr"] == 0.25
    assert np.all(np.isfinite(result.kernels)) and all(np.isfinite(row["train_loss"]) for row in result.history)
    assert compare(result.kernels, np.stack(filt.kernels), "none", "float")["max_abs_rel"] < 1e-4


def test_training_is_complete_only_when_loss_and_kernel_settle(gray_images):
    filt = build_filter(spec(kind="random", ksize=3, seed=2, distribution="normal", normalization="none"))
    result = learn(filt, gray_images)
    checks = [h for h in result.history if not np.isnan(h["val_loss"])]
    assert result.stop_reason == "converged"
    assert len(result.history) == result.steps  # a row per step, validation every check_every
    assert [h["step"] for h in checks] == list(range(5, result.steps + 1, 5))
    assert checks[-1]["kernel_change"] < SETTINGS["kernel_tol"]
    assert checks[-2]["val_loss"] - checks[-1]["val_loss"] < SETTINGS["rel_tol"]
    capped = learn(filt, gray_images, settings={"max_steps": 10})
    assert capped.stop_reason == "max_steps" and capped.steps == 10


def _tiny_store(root: Path, images, filt) -> tuple[Path, Path]:
    splits = ["train", "train", "val"]
    with ShardWriter(root / "inputs" / "00000.tar") as inputs, ShardWriter(root / "targets" / "00000.tar") as targets:
        for i, (image, split) in enumerate(zip(images, splits)):
            inputs.add(f"{i:04d}", image, split)
            targets.add(f"{i:04d}", filt.apply(image), split)
    return root / "inputs", root / "targets"


def test_a_saturated_filter_climbs_the_ladder_against_the_8_bit_floor(tmp_path, gray_images):
    """|Laplacian| saved as 8 bits (`then: abs`, `output: abs_uint8`): its targets are integers, so
    the ladder measures its rungs against the rounding's floor, and a kernel then a V-shaped curve
    reproduces it within that floor."""
    filter_spec = spec(kind="laplacian", ksize=1, then="abs", output="abs_uint8")
    filt = build_filter(filter_spec)
    inputs, targets = _tiny_store(tmp_path, gray_images, filt)
    info = train_filter(inputs, targets, filter_spec, SETTINGS, device="cpu", threads=1).info
    chosen = next(row for row in info["ladder"] if row["model"] == info["model"])
    assert info["model"] == filt.expected_rung == "curve" and chosen["adequate"], info["ladder"]
    linear = info["ladder"][0]
    assert 1 < linear["residual_in_floors"] < 1e4  # floors of 1/sqrt(12) levels, not of float32 rounding


def test_train_filter_writes_safetensors_that_load_without_pickle(tmp_path, gray_images):
    filter_spec = spec(kind="sobel", dx=0, dy=1, ksize=3)
    filt = build_filter(filter_spec)
    inputs, targets = _tiny_store(tmp_path, gray_images, filt)
    outcome = train_filter(inputs, targets, filter_spec, SETTINGS, device="cpu", threads=1)
    paths = [tmp_path / n for n in ("m.safetensors", "m.json", "m.csv")]
    save_outcome(outcome, *paths)
    header_length = int.from_bytes(paths[0].read_bytes()[:8], "little")
    assert paths[0].read_bytes()[8:9] == b"{" and header_length < 10_000  # safetensors, not a pickle
    model, metadata = load_model(paths[0])
    # The contract other tools read: kernel (C_out, C_in, K, K) and bias (C_out,), our filters 1 -> 1 with bias 0.
    assert isinstance(model, AffineKernel) and model.kernel.shape == (1, 1, 3, 3) and model.bias.tolist() == [0.0]
    assert metadata["filter"]["dy"] == 1 and metadata["border"] == "reflect101"
    np.testing.assert_allclose(model.kernel[0, 0], filt.kernels[0], atol=1e-4 * 2)
    info = json.loads(paths[1].read_text())
    np.testing.assert_allclose(info["oracle_kernels"][0], filt.kernels[0], atol=1e-9)  # the least-squares oracle, in the sidecar
    assert info["stop_reason"] == "converged" and info["device"] == "cpu"
    assert info["linear_residual"] < 1e-9
    header = paths[2].read_text().splitlines()[0].split(",")
    assert header[:5] == ["stage", "step", "seconds", "ksize", "parameters"] and "kernel_max_abs_error" in header
    assert paths[2].read_text().splitlines()[1].startswith("gradient step,1,")


def test_median_gets_a_large_linear_residual(tmp_path, gray_images):
    filter_spec = spec(kind="median", ksize=3)
    inputs, targets = _tiny_store(tmp_path, gray_images, build_filter(filter_spec))
    info = train_filter(inputs, targets, filter_spec, SETTINGS, device="cpu", threads=1).info
    assert info["kernel_errors"] is None
    assert info["linear_residual"] > 1e-3


def unpickling_calls(source: str) -> list[str]:
    """Calls that can unpickle, found in the syntax tree (not by text): pickle and its
    cousins, torch.load without weights_only=True, numpy loading with allow_pickle=True."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            found += [f"import {n}" for n in names if n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib")]
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if name.endswith("torch.load") or name == "load" and "weights_only" in keywords:
            if keywords.get("weights_only") != "True":
                found.append(ast.unparse(node))
        if keywords.get("allow_pickle") == "True":
            found.append(ast.unparse(node))
    return found


def test_no_code_unpickles_weights():
    package = Path(__file__).resolve().parent.parent / "workflow"
    for path in package.rglob("*.py"):
        assert unpickling_calls(path.read_text()) == [], path


def test_the_unpickling_check_finds_what_it_claims_to():
    bad = """
import pickle
from torch import load as l
import torch
torch.load(p)
torch.load(p, weights_only=False)
x = torch.load(
    p,
    map_location="cpu",
)
np.load(p, allow_pickle=True)
"""
    assert len(unpickling_calls(bad)) == 5
    assert unpickling_calls("torch.load(p, weights_only=True)\nnp.load(p)\n") == []


def test_center_and_compare_handle_sizes():
    small = np.arange(9.0).reshape(1, 3, 3)
    assert center(small, 5).shape == (1, 5, 5) and center(small, 5)[0, 2, 2] == 4
    assert compare(center(small, 5), small, "none", "float")["max_abs_error"] == 0


def test_whitening_is_exact_for_linear_models_and_better_conditioned(gray_images):
    from numpy.lib.stride_tricks import sliding_window_view

    from img2kernel.fit.gradient import laplacian_valid

    filt = build_filter(spec(kind="random", ksize=5, seed=4, distribution="normal", normalization="none"))
    inputs, targets = crops_for(filt, gray_images, 5, size=34)
    crops = Crops.from_arrays(inputs, targets, dtype=torch.float64, whiten=True)
    assert tuple(crops.inputs.shape[-2:]) == (36, 36) and tuple(crops.targets.shape[-2:]) == (32, 32)
    model = LearnableKernel.from_kernels(np.stack(filt.kernels), dtype=torch.float64)
    with torch.no_grad():  # the true kernel still fits the whitened pairs exactly
        assert float(torch.nn.functional.mse_loss(model.forward_valid(crops.inputs), crops.targets)) < 1e-8

    def condition(batch):
        patches = sliding_window_view(batch.astype(np.float64), (5, 5), axis=(1, 2)).reshape(-1, 25)
        eigenvalues = np.linalg.eigvalsh(patches.T @ patches)
        return eigenvalues[-1] / eigenvalues[0]

    assert condition(laplacian_valid(inputs)) < condition(inputs) / 100


def test_least_squares_kernel_is_not_transposed_or_flipped(gray_images):
    """An asymmetric kernel in every direction: a transpose or flip of the solution fails."""
    from img2kernel.fit.oracle import least_squares_kernel

    kernel = np.arange(25, dtype=np.float64).reshape(5, 5) ** 1.5 / 40 - 1.3
    filt = build_filter(spec(kind="custom", kernel=kernel.tolist()))
    inputs, targets = crops_for(filt, gray_images, 5, n=8)
    solved = least_squares_kernel(inputs, targets, 5)
    np.testing.assert_allclose(solved, filt.kernels[0], atol=1e-5)  # float32 targets of fractional taps
    for wrong in (solved.T, solved[::-1], solved[:, ::-1]):
        assert np.max(np.abs(wrong - filt.kernels[0])) > 0.1


def test_magnitude_oracle_recovers_the_sobel_pair_up_to_rotation(gray_images):
    from img2kernel.evaluate.kernels import align
    from img2kernel.evaluate.metrics import relative_residual
    from img2kernel.fit.oracle import magnitude_pair

    filt = build_filter(spec(kind="sobel_magnitude", ksize=3))
    inputs, targets = crops_for(filt, gray_images, 3, n=16)
    pair = magnitude_pair(inputs, targets, 3)
    true = np.stack(filt.kernels)
    assert np.max(np.abs(align(pair, true, "magnitude", "float") - true)) / np.max(np.abs(true)) < 1e-6
    assert relative_residual(inputs, targets, filt.model_of(pair)) < 1e-6
    # ...and a wrong pair is not mistaken for it: the plain least-squares kernel explains little.
    assert relative_residual(inputs, targets, filt.model_of(np.stack([pair[0], 0 * pair[1]]))) > 0.1


@pytest.mark.parametrize("ksize, size", [(9, 40), (15, 47), (21, 61)])
def test_fft_correlation_equals_conv2d_values_and_gradients(ksize, size):
    from img2kernel.fit.convolve import correlate_valid_fft

    generator = torch.Generator().manual_seed(ksize)
    images = torch.rand(3, 1, size, size + 2, generator=generator, dtype=torch.float64) * 255
    weight = torch.randn(2, 1, ksize, ksize, generator=generator, dtype=torch.float64, requires_grad=True)
    direct = torch.nn.functional.conv2d(images, weight)
    (direct_grad,) = torch.autograd.grad(direct.square().sum(), weight)
    by_fft = correlate_valid_fft(images, weight)
    (fft_grad,) = torch.autograd.grad(by_fft.square().sum(), weight)
    assert by_fft.shape == direct.shape == (3, 2, size - ksize + 1, size + 2 - ksize + 1)
    np.testing.assert_allclose(by_fft.detach().numpy(), direct.detach().numpy(), rtol=0, atol=1e-9 * float(direct.detach().abs().max()))
    np.testing.assert_allclose(fft_grad.numpy(), direct_grad.numpy(), rtol=1e-9, atol=1e-9 * float(direct_grad.abs().max()))


def _large_kernel_outcome(tmp_path, gray_images, monkeypatch, rounds):
    import img2kernel.fit.gradient as train_module

    monkeypatch.setattr(train_module, "MAX_REFINE_ROUNDS", rounds)
    filter_spec = spec(kind="random", ksize=15, seed=3, distribution="normal", normalization="none")
    inputs, targets = _tiny_store(tmp_path / str(rounds), gray_images, build_filter(filter_spec))
    return train_filter(inputs, targets, filter_spec, SETTINGS, device="cpu", threads=1).info


def test_large_kernel_reaches_the_oracle_only_with_float64_refinement(tmp_path, gray_images, monkeypatch):
    """float32 training alone stalls tens of times above the float64 least-squares kernel's
    error on a 15x15 random kernel; refinement rounds on the float64 residual close the gap."""
    plain = _large_kernel_outcome(tmp_path, gray_images, monkeypatch, rounds=0)
    refined = _large_kernel_outcome(tmp_path, gray_images, monkeypatch, rounds=3)
    oracle_error = refined["oracle_errors"]["max_abs_rel"]
    assert plain["refine_rounds"] == 0 and plain["kernel_errors"]["max_abs_rel"] > 4 * oracle_error
    assert refined["refine_rounds"] >= 1 and refined["kernel_errors"]["max_abs_rel"] <= 2 * oracle_error
    assert refined["learned_val_residual"] <= 2 * refined["oracle_val_residual"]
    assert refined["steps"] > plain["steps"]  # the rounds' steps are in the history


def test_nonlinear_filters_are_not_refined(tmp_path, gray_images):
    filter_spec = spec(kind="median", ksize=3)
    inputs, targets = _tiny_store(tmp_path, gray_images, build_filter(filter_spec))
    assert train_filter(inputs, targets, filter_spec, SETTINGS, device="cpu", threads=1).info["refine_rounds"] == 0
