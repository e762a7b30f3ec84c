"""The noise floors and the thresholds every verdict compares with, in one place.

A residual means something only next to what the output's storage alone would leave: an
integer file rounds (1/sqrt(12) levels RMS), a float file carries the tool's own float32
arithmetic. Every stage that says "linear", "recovered", "this size is enough" or "this rung
explains the pairs" reads its threshold here (docs/design.md, "Numerical conventions").
"""

from __future__ import annotations

import math

# Integer files: pixels are stored in these ranges, and a value at either end may be clipped.
STORAGE_RANGE = {"uint8": (0.0, 255.0), "uint16": (0.0, 65535.0)}
ROUNDING_RMS = 1 / math.sqrt(12)  # uniform rounding error of an integer file, in its levels
# 8-bit levels written to a 16-bit file (v * 257, 255 -> 65535): the rounding step is 257 levels.
WIDENED_8BIT_STEP = 257
# Float files: the tool's own float32 arithmetic (sums of K*K products) and storage round
# at about this fraction of the output's RMS; float64 far below it.
FLOAT_RELATIVE_FLOOR = {"float32": 2e-6, "float64": 1e-12}

# Pairs (any model): explained when the held-out residual is within this many noise floors.
LINEAR_FACTOR = 2.0
SIZE_TOLERANCE = 0.5  # a kernel size is enough when its extra residual is below this many floors
# The spatially varying rung is tried when a quadratic in the position explains at least this
# share of how tile-wise gains or sharpening differ (fit.rungs.tile_variation; vignetting and a
# blur growing to the corners give 0.66 to 0.94, shift-invariant filters below 0.25).
VARIATION_MIN = 0.4
PSNR_TOLERANCE_DB = 0.5  # no rung explains the pairs: a smaller rung within this of the best wins

# Our filters, whose true kernel is known: max-abs kernel error relative to the largest tap.
RECOVERED = 1e-4  # what the product promises for linear filters
APPROXIMATE = 1e-2
NONLINEAR_RESIDUAL = 1e-3  # a best linear fit leaving more than 0.1% of the target unexplained

# An integer tool that truncates (ImageMagick, GraphicsMagick) instead of rounding leaves
# floor(v) = round(v - 0.5): a fitted offset this close to -0.5 on every channel is said so.
TRUNCATION_TOLERANCE = 0.1

# A rounding inside the tool (fit.roundings): its computed terms explain the residual when their
# least-squares weights are within this of 1 (twice this below 1 for the way back's term, which
# the fitted kernel's own error attenuates); a mismatched space or a nonlinear tool is not.
ROUNDING_WEIGHT_TOLERANCE = 0.25
# ... and leave at most the output's floor plus this fraction of their RMS: a tool's fixed-point
# conversion (Pillow's 16-bit, OpenCV's 14-bit gray weights) rounds a few near-tie pixels the
# other way than the exact weights do.
ROUNDING_CONVENTIONS = 0.1

# Identification: relative residual ||k - s T(t)|| / ||k|| of a named kernel.
IDENTIFIED = 0.02  # below this a match is stated
CLOSE = 0.10  # below this, "close to"
SEPARABLE = 1e-3  # second singular value / first below which channels share one spatial kernel


def as_good(rms: float, better_rms: float, floor: float) -> bool:
    """Whether a simpler model's residual is within SIZE_TOLERANCE floors (in quadrature) of a
    better one's: the tolerance every choice among sizes, structures and rungs reads."""
    return rms**2 - better_rms**2 <= (SIZE_TOLERANCE * floor) ** 2


def size_is_enough(rms: float, larger_rms: float, extra_parameters: int, values: int, floor: float,
                   independent: bool = True) -> bool:
    """Whether a kernel explains the pairs as well as a larger one, by the evidence of ``values``
    fitted values (docs/design.md, "Fitting your pairs"): the larger kernel's gain in the sum
    of squares, in units of the noise variance (the floor's; the residual's own where the
    model does not reach the floor), against the Bayesian information criterion's price of
    its extra parameters, log(values) each. Noise buys no taps (its gain is about one per
    parameter), and real small taps are kept once enough pixels show them.

    ``independent=False``: the noise is not independent of the pixels (a JPEG's coefficients
    zeroed by the quantizer are the kernel's own response), so more taps always gain a little;
    the larger kernel must then gain SIZE_TOLERANCE floors (in quadrature)."""
    if not independent:
        return as_good(rms, larger_rms, floor)
    variance = max(floor, larger_rms) ** 2
    if variance <= 0:
        return rms <= larger_rms
    gain = values * (rms**2 - larger_rms**2) / variance
    return gain <= extra_parameters * math.log(max(values, 2))


def noise_floor(storage: str, output_rms: float, step: float = 1.0) -> float:
    """The RMS error the output's storage alone implies, in stored units; ``step``: the
    spacing of an integer file's values (WIDENED_8BIT_STEP for 8-bit data in a 16-bit file)."""
    if storage in STORAGE_RANGE:
        return step * ROUNDING_RMS
    return FLOAT_RELATIVE_FLOOR.get(storage, FLOAT_RELATIVE_FLOOR["float32"]) * max(output_rms, 1e-30)

