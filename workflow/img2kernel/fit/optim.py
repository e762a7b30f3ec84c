"""The one optimizer set-up of every gradient fit: full-batch L-BFGS with a strong-Wolfe line search.

Gradient training of our filters (:mod:`img2kernel.fit.gradient`) takes one iteration a step
so its stopping rule sees every step; the ladder's rungs (:mod:`img2kernel.fit.ladder`) run
:func:`minimise` for a fixed iteration budget, so the same pairs give the same ladder on any
machine. torch is imported here only when an optimizer is made.
"""

from __future__ import annotations

import math
from typing import Callable


def lbfgs(parameters, *, lr: float = 1.0, history: int = 50, max_iter: int = 1, max_eval: int | None = None,
          tolerance_grad: float = 0.0, tolerance_change: float = 0.0):
    """``torch.optim.LBFGS`` with the strong-Wolfe line search (the plain step overshoots on
    these quadratic losses). With ``max_iter=1`` the caller's loop decides when to stop;
    ``max_eval`` must then be raised from torch's default (max_iter * 5 / 4 = 1), or the line
    search cannot make progress."""
    import torch

    return torch.optim.LBFGS(parameters, lr=lr, max_iter=max_iter, max_eval=max_eval, history_size=history,
                             line_search_fn="strong_wolfe", tolerance_grad=tolerance_grad, tolerance_change=tolerance_change)


def minimise(parameters, loss_fn: Callable, iterations: int) -> float:
    """Minimise ``loss_fn()`` over ``parameters`` for at most ``iterations`` L-BFGS iterations
    (stopping early when the loss no longer changes); the last loss."""
    optimizer = lbfgs(parameters, max_iter=5, tolerance_grad=1e-12, tolerance_change=1e-15)
    loss = math.nan

    def closure():
        optimizer.zero_grad()
        value = loss_fn()
        value.backward()
        return value

    for _ in range(max(1, iterations // 5)):
        value = float(optimizer.step(closure).detach())
        if not math.isfinite(value):
            break
        if abs(loss - value) <= 1e-12 * max(abs(value), 1e-300):
            loss = value
            break
        loss = value
    return loss
