"""Our L-BFGS (img2kernel.fit.optim) takes the steps torch.optim.LBFGS takes, without importing the compiler."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from img2kernel.fit.optim import lbfgs, minimise
from conftest import REPO


def rosenbrock(p: torch.Tensor) -> torch.Tensor:
    return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2


def least_squares(p: torch.Tensor) -> torch.Tensor:
    return torch.mean((LS_X @ p - LS_Y) ** 2)


_g = torch.Generator().manual_seed(3)
LS_X = torch.randn(200, 9, generator=_g, dtype=torch.float64) * torch.logspace(0, 2, 9, dtype=torch.float64)
LS_Y = LS_X @ torch.randn(9, generator=_g, dtype=torch.float64)


def trajectory(make, loss_fn, start, steps, **options):
    p = start.clone().requires_grad_(True)
    optimizer = make([p], **options)

    def closure():
        optimizer.zero_grad()
        value = loss_fn(p)
        value.backward()
        return value

    losses = [float(optimizer.step(closure).detach()) for _ in range(steps)]
    return losses, p.detach()


def torch_lbfgs(params, *, lr=1.0, history=50, max_iter=1, max_eval=None):
    return torch.optim.LBFGS(params, lr=lr, history_size=history, max_iter=max_iter, max_eval=max_eval,
                             line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)


@pytest.mark.parametrize("loss_fn, start, steps", [
    (rosenbrock, torch.tensor([-1.2, 1.0], dtype=torch.float64), 30),  # curved: bracketing and zoom both run
    (least_squares, torch.zeros(9, dtype=torch.float64), 12),  # ill-conditioned quadratic, as our kernel fits
])
def test_each_step_is_the_step_torch_takes(loss_fn, start, steps):
    ours, ours_end = trajectory(lbfgs, loss_fn, start, steps, history=10, max_iter=1, max_eval=25)
    theirs, theirs_end = trajectory(torch_lbfgs, loss_fn, start, steps, history=10, max_iter=1, max_eval=25)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-18)
    assert torch.allclose(ours_end, theirs_end, rtol=1e-9, atol=1e-12)


def test_minimise_reaches_the_minimum_of_a_curved_valley():
    p = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    loss = minimise([p], lambda: rosenbrock(p), iterations=200)
    assert loss < 1e-12 and torch.allclose(p.detach(), torch.ones(2, dtype=torch.float64), atol=1e-6)


def test_a_non_finite_loss_comes_back_for_the_divergence_rule_instead_of_raising():
    p = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    losses, _ = trajectory(lbfgs, lambda q: (q * float("nan")).sum(), p.detach(), 2, max_eval=25)
    assert all(loss != loss for loss in losses)


def test_training_a_kernel_does_not_import_the_compiler():
    code = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1])\n"
        "from img2kernel.fit.gradient import Crops, fit\n"
        "from img2kernel.fit.learnable import LearnableKernel\n"
        "rng = np.random.default_rng(0); x = rng.normal(size=(4, 34, 34)); k = rng.normal(size=(3, 3))\n"
        "y = np.stack([sum(k[i, j] * im[i:i + 32, j:j + 32] for i in range(3) for j in range(3)) for im in x])\n"
        "crops = Crops.from_arrays(x, y)\n"
        "settings = dict(optimizer='lbfgs', history=100, max_steps=30, check_every=5, rel_tol=1e-12, kernel_tol=1e-9)\n"
        "result = fit(LearnableKernel(3), crops, crops, settings, true_kernels=k[None])\n"
        "print(float(np.abs(result.kernels[0] - k).max()), 'torch._dynamo' in sys.modules)\n"
    )
    printed = subprocess.run([sys.executable, "-c", code, str(REPO / "workflow")], capture_output=True, text=True,
                             check=True).stdout.split()
    assert float(printed[0]) < 1e-4 and printed[1] == "False"
