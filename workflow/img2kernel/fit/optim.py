"""The one optimizer of every gradient fit: full-batch L-BFGS with a strong-Wolfe line search.

Gradient training of our filters (:mod:`img2kernel.fit.gradient`) takes one iteration a step
so its stopping rule sees every step; the ladder's rungs (:mod:`img2kernel.fit.ladder`) run
:func:`minimise` for a fixed iteration budget, so the same pairs give the same ladder on any
machine.

torch is imported only when an optimizer runs (a pairs fit that stays linear never imports
it). The optimizer is ours rather than ``torch.optim.LBFGS`` because every ``torch.optim``
optimizer imports the compiler (``torch._dynamo``, 1.1-3 s) on its first call, in a training
job whose whole fit takes 0.1-0.5 s (docs/design.md, "Start-up"). It follows the textbook
algorithm (Nocedal & Wright, Numerical Optimization, algorithms 7.4, 3.5 and 3.6: the
two-loop recursion, bracketing and zoom with cubic interpolation) with the same step rules
as torch's, so the two agree step for step (``tests/test_optim.py``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:
    import torch

# The Wolfe conditions: sufficient decrease and (strong) curvature.
_C1, _C2 = 1e-4, 0.9
_MAX_LINE_SEARCH = 25
# Curvature pairs with s.y at or below this are skipped (the update would not be positive definite).
_MIN_CURVATURE = 1e-10
_LINE_SEARCH_TOLERANCE = 1e-9


class LBFGS:
    """Limited-memory BFGS on a list of tensors, with a strong-Wolfe line search.

    ``step(closure)`` runs at most ``max_iter`` iterations and ``max_eval`` evaluations of
    ``closure`` (which zeroes the gradients, computes the loss, calls ``backward`` and returns
    the loss) and returns the loss the step started from, as ``torch.optim`` does; the
    curvature memory carries over between steps.
    """

    def __init__(self, parameters: Iterable[torch.Tensor], *, lr: float = 1.0, history: int = 50, max_iter: int = 1,
                 max_eval: int | None = None, tolerance_grad: float = 0.0, tolerance_change: float = 0.0):
        self.parameters = [p for p in parameters]
        if not self.parameters:
            raise ValueError("LBFGS got no parameters to optimise")
        self.lr, self.history, self.max_iter = lr, history, max_iter
        self.max_eval = max_eval if max_eval is not None else max_iter * 5 // 4
        self.tolerance_grad, self.tolerance_change = tolerance_grad, tolerance_change
        self._steps: list[torch.Tensor] = []  # s_i, parameter changes
        self._gradient_changes: list[torch.Tensor] = []  # y_i
        self._rho: list[float] = []  # 1 / (y_i . s_i)
        self._direction: torch.Tensor | None = None
        self._step_length = 0.0
        self._previous_gradient: torch.Tensor | None = None
        self._scaling = 1.0  # the initial inverse Hessian is this times the identity
        self._iterations = 0

    def zero_grad(self) -> None:
        for p in self.parameters:
            p.grad = None

    def _gradient(self) -> torch.Tensor:
        import torch

        return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in self.parameters])

    def _move(self, length: float, direction: torch.Tensor) -> None:
        offset = 0
        for p in self.parameters:
            n = p.numel()
            p.add_(direction[offset:offset + n].view_as(p), alpha=length)
            offset += n

    def _evaluate(self, closure: Callable, start: list[torch.Tensor], length: float,
                  direction: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Loss and gradient at ``start`` (the parameters' values) + ``length * direction``; the
        parameters are left at ``start``."""
        import torch

        self._move(length, direction)
        with torch.enable_grad():
            loss = float(closure().detach())
        gradient = self._gradient()
        for p, value in zip(self.parameters, start):
            p.copy_(value)
        return loss, gradient

    def _new_direction(self, gradient: torch.Tensor) -> torch.Tensor:
        """-H g by the two-loop recursion, after taking in the last step's curvature pair."""
        if self._iterations == 1:
            self._scaling = 1.0
            return -gradient
        y = gradient - self._previous_gradient
        s = self._direction * self._step_length
        ys = float(y.dot(s))
        if ys > _MIN_CURVATURE:
            if len(self._steps) == self.history:
                self._steps.pop(0), self._gradient_changes.pop(0), self._rho.pop(0)
            self._steps.append(s)
            self._gradient_changes.append(y)
            self._rho.append(1.0 / ys)
            self._scaling = ys / float(y.dot(y))
        q = -gradient
        alphas = [0.0] * len(self._steps)
        for i in reversed(range(len(self._steps))):
            alphas[i] = float(self._steps[i].dot(q)) * self._rho[i]
            q.add_(self._gradient_changes[i], alpha=-alphas[i])
        r = q * self._scaling
        for i in range(len(self._steps)):
            beta = float(self._gradient_changes[i].dot(r)) * self._rho[i]
            r.add_(self._steps[i], alpha=alphas[i] - beta)
        return r

    def step(self, closure: Callable) -> torch.Tensor:
        import torch

        with torch.no_grad():
            return self._step(closure)

    def _step(self, closure: Callable) -> torch.Tensor:
        import torch

        with torch.enable_grad():
            first_loss = closure()
        loss = float(first_loss.detach())
        gradient = self._gradient()
        evaluations = 1
        if float(gradient.abs().max()) <= self.tolerance_grad:
            return first_loss
        for iteration in range(1, self.max_iter + 1):
            self._iterations += 1
            direction = self._new_direction(gradient)
            self._previous_gradient = gradient.clone()
            previous_loss = loss
            # The first step ever is scaled to the gradient (its length is unknown); later ones
            # start from lr, the quasi-Newton step.
            length = (min(1.0, 1.0 / float(gradient.abs().sum())) * self.lr if self._iterations == 1 else self.lr)
            # The next curvature pair is this direction times this length, even when no step is taken.
            self._direction, self._step_length = direction, length
            slope = float(gradient.dot(direction))
            if slope > -self.tolerance_change:
                break
            start = [p.detach().clone() for p in self.parameters]
            loss, gradient, length, used = strong_wolfe(lambda t: self._evaluate(closure, start, t, direction), length,
                                                        direction, loss, gradient, slope)
            self._move(length, direction)
            self._step_length = length
            evaluations += used
            if (iteration == self.max_iter or evaluations >= self.max_eval
                    or float(gradient.abs().max()) <= self.tolerance_grad
                    or float((direction * length).abs().max()) <= self.tolerance_change
                    or abs(loss - previous_loss) < self.tolerance_change):
                break
        return first_loss


def _cubic_minimum(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float,
                   bounds: tuple[float, float] | None = None) -> float:
    """The minimiser of the cubic through (x1, f1, g1) and (x2, f2, g2), inside ``bounds``
    (default: the two points); the bounds' midpoint when the cubic has no minimum."""
    low, high = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    try:
        d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
        discriminant = d1 * d1 - g1 * g2
        if not discriminant >= 0:  # no minimum (or a non-finite loss: the caller's divergence rule acts)
            return (low + high) / 2
        d2 = math.sqrt(discriminant)
        if x1 <= x2:
            at = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            at = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    except ZeroDivisionError:  # two trials at one point, or a degenerate cubic
        return (low + high) / 2
    return min(max(at, low), high)


def strong_wolfe(evaluate: Callable[[float], tuple[float, torch.Tensor]], length: float, direction: torch.Tensor,
                 loss: float, gradient: torch.Tensor, slope: float) -> tuple[float, torch.Tensor, float, int]:
    """A step length along ``direction`` meeting the strong Wolfe conditions: bracket it, then zoom.

    ``evaluate(t)`` is the (loss, gradient) at the start point + t * direction; ``loss``,
    ``gradient`` and ``slope`` (gradient . direction) are those of the start point. Returns
    the loss, gradient and length of the step taken, and the evaluations used.
    """
    direction_size = float(direction.abs().max())
    new_loss, new_gradient = evaluate(length)
    evaluations, searches = 1, 0
    new_slope = float(new_gradient.dot(direction))
    previous = (0.0, loss, gradient, slope)  # (length, loss, gradient, slope) of the last trial
    bracket: list[tuple[float, float, torch.Tensor, float]] = []
    done = False
    while searches < _MAX_LINE_SEARCH:
        current = (length, new_loss, new_gradient, new_slope)
        if new_loss > loss + _C1 * length * slope or (searches > 1 and new_loss >= previous[1]):
            bracket = [previous, current]
            break
        if abs(new_slope) <= -_C2 * slope:
            bracket, done = [current], True
            break
        if new_slope >= 0:
            bracket = [previous, current]
            break
        # Still descending: extrapolate, at least 1% beyond and at most 10x the current length.
        length = _cubic_minimum(previous[0], previous[1], previous[3], length, new_loss, new_slope,
                                bounds=(length + 0.01 * (length - previous[0]), length * 10))
        previous = (current[0], current[1], current[2].clone(), current[3])
        new_loss, new_gradient = evaluate(length)
        evaluations += 1
        new_slope = float(new_gradient.dot(direction))
        searches += 1
    if searches == _MAX_LINE_SEARCH:
        bracket = [(0.0, loss, gradient, slope), (length, new_loss, new_gradient, new_slope)]

    # Zoom: shrink the bracket, keeping at `low` its end with the lower loss.
    low, high = (0, 1) if bracket[0][1] <= bracket[-1][1] else (1, 0)
    no_progress = False
    while not done and searches < _MAX_LINE_SEARCH:
        (t0, f0, _, s0), (t1, f1, _, s1) = bracket
        if abs(t1 - t0) * direction_size < _LINE_SEARCH_TOLERANCE:
            break
        length = _cubic_minimum(t0, f0, s0, t1, f1, s1)
        # Safeguard: a trial within 10% of the bracket's ends moves inward, at once if the last
        # trial already made no progress or this one sits on an end.
        lo, hi = min(t0, t1), max(t0, t1)
        margin = 0.1 * (hi - lo)
        if min(hi - length, length - lo) < margin:
            if no_progress or length >= hi or length <= lo:
                length = hi - margin if abs(length - hi) < abs(length - lo) else lo + margin
                no_progress = False
            else:
                no_progress = True
        else:
            no_progress = False
        new_loss, new_gradient = evaluate(length)
        evaluations += 1
        new_slope = float(new_gradient.dot(direction))
        searches += 1
        trial = (length, new_loss, new_gradient.clone(), new_slope)
        if new_loss > loss + _C1 * length * slope or new_loss >= bracket[low][1]:
            bracket[high] = trial
            low, high = (0, 1) if bracket[0][1] <= bracket[1][1] else (1, 0)
        else:
            if abs(new_slope) <= -_C2 * slope:
                done = True
            elif new_slope * (bracket[high][0] - bracket[low][0]) >= 0:
                bracket[high] = bracket[low]
            bracket[low] = trial
    length, new_loss, new_gradient, _ = bracket[low]
    return new_loss, new_gradient, length, evaluations


def lbfgs(parameters, *, lr: float = 1.0, history: int = 50, max_iter: int = 1, max_eval: int | None = None,
          tolerance_grad: float = 0.0, tolerance_change: float = 0.0) -> LBFGS:
    """The optimizer of our gradient fits. With ``max_iter=1`` the caller's loop decides when
    to stop; ``max_eval`` must then be raised from the default (max_iter * 5 / 4 = 1), or the
    line search cannot make progress."""
    return LBFGS(parameters, lr=lr, history=history, max_iter=max_iter, max_eval=max_eval,
                 tolerance_grad=tolerance_grad, tolerance_change=tolerance_change)


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
