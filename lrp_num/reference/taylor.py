"""Whole-function Taylor decomposition and sensitivity analysis, in mpmath.

Two baselines against which LRP is read: the first-order Taylor decomposition of the whole
function f_c at a root point searched along its gradient, and sensitivity analysis
R_p = (df_c/dx_p)^2 (both discussed as baselines by Montavon et al. 2017, Pattern Recognition 65).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np

from lrp_num.checks import check_dps, explanation_input
from lrp_num.errors import LRPError, TargetError
from lrp_num.layers import ReLU
from lrp_num.reference.backward import ReferenceNetwork, prepare
from lrp_num.reference.api import checked_target, gradient, rounded, target_index
from lrp_num.reference.roots import GUARD_DIGITS


def sensitivity(network, x, target=None, *, dps: int = 50) -> np.ndarray:
    """Sensitivity analysis R_p = (df_c/dx_p)^2, so that sum_p R_p = ||grad f_c(x)||^2."""
    dps = check_dps(dps)
    g = gradient(network, x, target, dps=dps)
    with mpmath.workdps(dps):
        return np.vectorize(lambda v: +(v * v), otypes=[object])(g)


@dataclass
class TaylorDecomposition:
    """First-order Taylor decomposition of the whole function f_c at a root point x~.

    ``relevance`` R_p = (df_c/dx_p at x~, one-sided from x's side) (x_p - x~_p);
    ``residual`` = f_c(x) - f_c(x~) - sum_p R_p, zero when f_c is affine on the segment [x~, x],
    which ``same_active_set`` checks (the ReLU and max-pool pattern is the same at x and at the
    point of the segment next to x~).
    """

    root_point: np.ndarray
    step: Any
    value_at_root: Any
    relevance: np.ndarray
    residual: Any
    same_active_set: bool


def _first_root(phi, low, high, scale, digits: int, max_steps: int = 1000):
    """The smallest root of a continuous piecewise-linear phi in (low, high], phi(low) > 0 >= phi(high)."""
    tolerance = mpmath.mpf(10) ** (-digits + 3) * abs(scale)
    phi_low, phi_high = phi(low), phi(high)
    for _ in range(max_steps):
        # linear interpolation: exact when phi is linear on [low, high]
        guess = low + phi_low * (high - low) / (phi_low - phi_high)
        value = phi(guess)
        if abs(value) <= tolerance:
            return guess
        middle = (low + high) / 2
        phi_middle = phi(middle)
        if phi_middle > 0:
            low, phi_low = middle, phi_middle
        else:
            high, phi_high = middle, phi_middle
        if value > 0 and low < guess < high:
            low, phi_low = guess, value
        if high - low <= mpmath.mpf(10) ** (-digits) * high:
            return high
    raise LRPError("the root search along the gradient did not converge")


def _pattern(reference: ReferenceNetwork, activations) -> tuple:
    """The active set: which ReLU inputs are positive and which cells win each max-pool window."""
    keys = []
    for node in reference.nodes:
        a, out = activations[node.inputs[0]], activations[node.name]
        if isinstance(node.operation, ReLU):
            keys.append(tuple(value > 0 for value in a))
        elif node.index in reference.windows:
            rows, connected = reference.windows[node.index]
            keys.append(tuple(tuple(a[window[inside]] == top) for window, inside, top in zip(rows, connected, out)))
    return tuple(keys)


def whole_function_taylor(network, x, target=None, *, dps: int = 50,
                          max_doublings: int = 200) -> TaylorDecomposition:
    """Taylor-decompose f_c at a root point searched along the gradient: x~ = x - t grad f_c(x).

    The step t > 0 is bracketed by doubling until f_c(x - t g) <= 0, then narrowed by
    :func:`_first_root` (bisection with a linear-interpolation attempt per step, exact once the
    bracket lies on one linear piece of the ReLU network). One sample, f_c(x) > 0 expected;
    raises LRPError when no sign change is found.
    """
    dps = check_dps(dps)
    x = explanation_input(x).astype(np.float64)
    reference = prepare(network, x.shape, dps)
    indices = checked_target(reference, target, 1, True)
    if indices is not None and indices.dtype.kind == "f":
        raise TargetError("the whole-function Taylor decomposition takes an output index as target, "
                          "not an explicit relevance")
    with mpmath.workdps(dps + GUARD_DIGITS):
        start = reference.forward(x)
        c = target_index(start[reference.output], indices, 0)
        selector = np.array([mpmath.mpf(int(k == c)) for k in range(len(start[reference.output]))], dtype=object)
        x_mp = start[reference.input_name]
        direction = reference.gradient(start, selector)

        def along(t):
            return reference.forward(x_mp - t * direction)[reference.output][c]

        value = start[reference.output][c]
        if value <= 0 or all(g == 0 for g in direction):
            raise LRPError("the whole-function Taylor root search needs f_c(x) > 0 and a non-zero gradient")
        low, high = mpmath.mpf(0), mpmath.mpf(1) / max(abs(g) for g in direction)
        for _ in range(max_doublings):
            if along(high) <= 0:
                break
            low, high = high, 2 * high
        else:
            raise LRPError("no root of f_c along the gradient direction")
        step = _first_root(along, low, high, value, dps + GUARD_DIGITS)
        root = x_mp - step * direction
        at_root = reference.forward(root)
        # one-sided gradient at x~: the linear piece on the segment next to x~, towards x
        near = root + mpmath.mpf(10) ** (-(dps // 2)) * (x_mp - root)
        near_activations = reference.forward(near)
        root_gradient = reference.gradient(near_activations, selector)
        relevance = root_gradient * (x_mp - root)
        residual = value - at_root[reference.output][c] - mpmath.fsum(relevance)
        same = _pattern(reference, start) == _pattern(reference, near_activations)
    shape = x.shape
    return TaylorDecomposition(rounded(root, dps, shape), +step, at_root[reference.output][c],
                               rounded(relevance, dps, shape), residual, same)


__all__ = ["TaylorDecomposition", "sensitivity", "whole_function_taylor"]
