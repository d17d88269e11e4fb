"""Solving the root condition, the stabiliser, and the working precision of the reference.

The root condition of a neuron, g_j(t) = sum_i (x_i - t v_ij) w_ij + (1 - t v_0j) b_j - t a_j = 0,
is affine in the step t and is solved numerically (:func:`solve_root_condition`); where x_i and
the root point x~_i nearly cancel, the precision is raised by the digits lost
(:func:`cancellation_digits`, :func:`displacement_digits`).

Stabiliser in root-point terms
------------------------------
A stabiliser is one more input that the root point moves, with q = a_j = eps sign(d_j)
(sign(0) = +1, d_j the unstabilised slope), present where d_j == 0 (``stabilise="zero"``) or at
every neuron (``"everywhere"``). It keeps R_aj = c_j t* a_j: the relevance the stabiliser absorbs.

All arithmetic runs at ``dps + GUARD_DIGITS`` digits; results are rounded once to ``dps``.
"""

from __future__ import annotations

import mpmath
import numpy as np

from lrp_num.errors import UnknownRuleError, ZeroDenominatorError

#: extra working digits beyond the requested ``dps``
GUARD_DIGITS = 10
#: where the stabiliser applies: only to zero slopes, or to every neuron
STABILISE_MODES = ("zero", "everywhere")


def lrp_sign(value) -> int:
    """The sign of the LRP convention: sign(0) = +1."""
    return 1 if value >= 0 else -1


def stabiliser(d: np.ndarray, relevance: np.ndarray, eps: float, stabilise: str,
               rule: str) -> np.ndarray:
    """The stabiliser a_j per row (0 where none applies); raise where a zero slope carries relevance."""
    if stabilise not in STABILISE_MODES:
        raise UnknownRuleError(f"unknown stabiliser mode {stabilise!r}; known: {', '.join(STABILISE_MODES)}")
    e = mpmath.mpf(eps)
    absorber = np.empty(len(d), dtype=object)
    for j, value in enumerate(d):
        absorber[j] = (e * lrp_sign(value)) if (stabilise == "everywhere" or value == 0) else mpmath.mpf(0)
        if value + absorber[j] == 0 and relevance[j] != 0:
            raise ZeroDenominatorError(
                f"rule {rule!r}: a denominator is 0 where the upper relevance is not, and eps = 0; "
                "pass eps > 0 to stabilise it")
    return absorber


def solve_root_condition(x, v, w, b, v0, absorber, z, slope, solver):
    """Solve g(t) = sum_i (x_i - t v_i) w_i + (1 - t v0) b - t a = 0 for t, row by row.

    g is affine in t, so Newton's method from t = 0 (the point x itself, g(0) = z_j) reaches the
    root in one step in exact arithmetic: t1 = z_j / s_j with the slope s_j = -g'(t). One more
    Newton step with the residual g(t1) re-evaluated by the definition removes the rounding of
    the first; the hinge residual |g(t*)| is returned as a check. ``solver="findroot"`` calls
    mpmath.findroot (secant) on g instead: slower, used by the tests to confirm the same root.
    """
    def condition(row, t):
        return (((x[row] - v[row] * t) * w[row]).sum() + (1 - t * v0[row]) * b[row]
                - t * absorber[row])

    steps = np.empty(len(z), dtype=object)
    residual = np.empty(len(z), dtype=object)
    for row in range(len(z)):
        if solver == "findroot":
            steps[row] = mpmath.findroot(lambda t: condition(row, t), (mpmath.mpf(0), z[row] / slope[row]))
        else:
            t = z[row] / slope[row]
            steps[row] = t + condition(row, t) / slope[row]
        residual[row] = condition(row, steps[row])
    return steps, residual


#: at most this many digits are added for cancellation near a hinge
MAX_EXTRA_DIGITS = 2000


def displacement_digits(x: np.ndarray, step: np.ndarray) -> int:
    """ceil(log10(max |x_i| / |t v_ij|)) over connections with both non-zero, >= 0."""
    worst = mpmath.mpf(1)
    for xi, si in zip(x.ravel(), step.ravel()):
        if xi != 0 and si != 0:
            worst = max(worst, abs(xi) / abs(si))
    return min(MAX_EXTRA_DIGITS, int(mpmath.ceil(mpmath.log10(worst))))


def cancellation_digits(z, x, w, b) -> int:
    """ceil(log10(max_j (sum_i |x_i w_ij| + |b_j|) / |z_j|)) over neurons with z_j != 0, >= 0."""
    worst = mpmath.mpf(1)
    for zj, xj, wj, bj in zip(z, x, w, b):
        if zj != 0:
            worst = max(worst, (sum(abs(xi * wi) for xi, wi in zip(xj, wj)) + abs(bj)) / abs(zj))
    return min(MAX_EXTRA_DIGITS, int(mpmath.ceil(mpmath.log10(worst))))


__all__ = [
    "GUARD_DIGITS", "MAX_EXTRA_DIGITS", "STABILISE_MODES", "cancellation_digits", "displacement_digits",
    "lrp_sign", "solve_root_condition", "stabiliser",
]
