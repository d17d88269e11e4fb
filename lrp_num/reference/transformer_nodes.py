"""mpmath reference for the element-wise nonlinearities and LayerNorm / RMSNorm, node by node.

Everything here follows the definitions at ``dps`` digits and shares no code with the generated
kernels: GELU is x (1 + erf(x / sqrt 2)) / 2 with mpmath.erf, derivatives are mpmath's numerical
differentiation at full precision, LayerNorm's mean and variance are summed in mpmath, and the
normalisation rules are formed from the explicit n x n matrix (sigma held: W_ji = gamma_j
(delta_ji - 1/n) / sigma) or Jacobian (central differences at three times the precision), with R_i = sum_j x_i J_ji
R_j / y_j (Ali et al. 2022, ICML; Montavon et al. 2017, Pattern Recognition 65).
"""

from __future__ import annotations

from typing import Callable

import mpmath
import numpy as np

#: the element-wise nonlinearities by their definitions
ACTIVATIONS: dict[str, Callable] = {
    "gelu": lambda v: v * (1 + mpmath.erf(v / mpmath.sqrt(2))) / 2,
    "gelu_tanh": lambda v: v * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi)
                                                 * (v + mpmath.mpf("0.044715") * v**3))) / 2,
    "silu": lambda v: v / (1 + mpmath.exp(-v)),
    "tanh": mpmath.tanh,
    "sigmoid": lambda v: 1 / (1 + mpmath.exp(-v)),
}
#: the rules of element-wise nonlinearities and of LayerNorm / RMSNorm the reference knows
POINTWISE_RULES = ("identity_nonlinear", "taylor_nonlinear")
NORM_RULES = ("norm_cp", "norm_full")
#: the Taylor rule's expansion point: the root of g, 0 for the sigmoid (which has none)
EXPANSION_POINT = 0


def pointwise_values(rule: str, activation: str, values, relevance) -> list:
    """R_in of ``rule`` for mpf inputs ``values`` and upper relevance ``relevance`` (same length),
    at the working precision; see :func:`pointwise_relevance`."""
    if rule == "identity_nonlinear":
        return list(relevance)
    if rule != "taylor_nonlinear":
        raise ValueError(f"no element-wise rule {rule!r}")
    g = ACTIVATIONS[activation]
    slope = mpmath.diff(g, EXPANSION_POINT)
    out = []
    for v, upper in zip(values, relevance):
        g_v = g(v)
        out.append(upper if g_v == 0 else slope * (v - EXPANSION_POINT) / g_v * upper)
    return out


def pointwise_absorbed(rule: str, activation: str, values, relevance) -> list:
    """What ``rule`` leaves behind per neuron, by its derivation: 0 for the identity rule;
    c (g(x~) + r(x)) = c (g(x) - g'(x~)(x - x~)), c = R_out / g(x), for the Taylor rule (its
    limit 0 where g(x) = 0)."""
    if rule == "identity_nonlinear":
        return [mpmath.mpf(0)] * len(values)
    g = ACTIVATIONS[activation]
    slope = mpmath.diff(g, EXPANSION_POINT)
    out = []
    for v, upper in zip(values, relevance):
        g_v = g(v)
        out.append(mpmath.mpf(0) if g_v == 0 else upper / g_v * (g_v - slope * (v - EXPANSION_POINT)))
    return out


def norm_absorbed(rule: str, norm: str, v: list, weight: list, bias: list, eps, relevance: list,
                  stabiliser=0) -> tuple:
    """(bias share, the rest) that ``rule`` leaves behind on one row, by the derivation:
    sum_j c_j beta_j, and for ``norm_full`` also (1 - e / sigma^2) sum_j c_j (y_j - beta_j);
    with a ``stabiliser`` s (c_j = R_j / (y_j + s)) the rest also holds s sum_j c_j."""
    n = len(v)
    y = _norm_output(norm, v, weight, bias, eps)
    c = [r / (y[j] + stabiliser) if r != 0 else mpmath.mpf(0) for j, r in enumerate(relevance)]
    share = mpmath.fsum(c[j] * bias[j] for j in range(n)) if norm == "layernorm" else mpmath.mpf(0)
    held = stabiliser * mpmath.fsum(c)
    if rule == "norm_cp":
        return share, held
    mean = mpmath.fsum(v) / n if norm == "layernorm" else mpmath.mpf(0)
    sigma_squared = mpmath.fsum((a - mean) ** 2 for a in v) / n + eps
    passed = mpmath.fsum(c[j] * (y[j] - (bias[j] if norm == "layernorm" else 0)) for j in range(n))
    return share, (1 - eps / sigma_squared) * passed + held


def row_jacobian(function: Callable[[list], list], v: list) -> list:
    """J[j][i] = d function(v)_j / d v_i by central differences at three times the working
    precision (step 10^-dps: truncation and rounding both near 10^-2dps)."""
    dps = mpmath.mp.dps
    with mpmath.workdps(3 * dps):
        step = mpmath.mpf(10) ** (-dps)
        columns = []
        for i in range(len(v)):
            up = function(v[:i] + [v[i] + step] + v[i + 1:])
            down = function(v[:i] + [v[i] - step] + v[i + 1:])
            columns.append([(a - b) / (2 * step) for a, b in zip(up, down)])
    return [[+columns[i][j] for i in range(len(v))] for j in range(len(v))]


def norm_row(rule: str, norm: str, v: list, weight: list, bias: list, eps, relevance: list,
             stabiliser=0) -> tuple[list, list]:
    """(R_i, R_ij as rows j) of one row of features under ``rule``; c_j = R_j / y_j, no
    stabiliser by the definition (a zero y_j with R_j != 0 raises ZeroDivisionError); a
    ``stabiliser`` s gives c_j = R_j / (y_j + s), whatever y_j's sign (LXT 2.1's layer_norm,
    restated for its audit)."""
    n = len(v)
    y = _norm_output(norm, v, weight, bias, eps)
    c = [r / (y[j] + stabiliser) if r != 0 else mpmath.mpf(0) for j, r in enumerate(relevance)]
    if rule == "norm_cp":
        jacobian = _detached_matrix(norm, v, weight, eps)
    elif rule == "norm_full":
        jacobian = row_jacobian(lambda u: _norm_output(norm, u, weight, bias, eps), v)
    else:
        raise ValueError(f"no normalisation rule {rule!r}")
    flows = [[v[i] * jacobian[j][i] * c[j] for i in range(n)] for j in range(n)]
    return [mpmath.fsum(flows[j][i] for j in range(n)) for i in range(n)], flows


def pointwise_relevance(rule: str, activation: str, x: np.ndarray, relevance_out: np.ndarray,
                        dps: int = 50) -> np.ndarray:
    """R_in of ``rule`` (``identity_nonlinear`` or ``taylor_nonlinear``), elementwise, as mpf.

    Taylor: R_in = g'(x~) (x - x~) / g(x) R_out at x~ = 0, g' by mpmath.diff; where g(x) = 0
    (x = x~) its limit g'(x~) / g'(x~) = 1.
    """
    x = np.asarray(x, dtype=float)
    out = np.empty(x.shape, dtype=object)
    with mpmath.workdps(dps):
        values = [mpmath.mpf(float(v)) for v in x.ravel()]
        upper = [mpmath.mpf(float(r)) for r in np.asarray(relevance_out, dtype=float).ravel()]
        out.ravel()[:] = pointwise_values(rule, activation, values, upper)
    return out


def norm_values(norm: str, v: list, weight: list, bias: list, eps) -> list:
    """y of one row of features (mpf lists), at the working precision."""
    return _norm_output(norm, v, weight, bias, eps)


def _norm_output(norm: str, v: list, weight: list, bias: list, eps) -> list:
    n = len(v)
    if norm == "layernorm":
        mean = mpmath.fsum(v) / n
        sigma = mpmath.sqrt(mpmath.fsum((a - mean) ** 2 for a in v) / n + eps)
        return [weight[j] * (v[j] - mean) / sigma + bias[j] for j in range(n)]
    sigma = mpmath.sqrt(mpmath.fsum(a**2 for a in v) / n + eps)
    return [weight[j] * v[j] / sigma for j in range(n)]


def norm_forward(norm: str, x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float,
                 dps: int = 50) -> np.ndarray:
    """y of ``norm`` over the last axis, as mpf."""
    x = np.asarray(x, dtype=float)
    out = np.empty(x.shape, dtype=object)
    with mpmath.workdps(dps):
        w, b, e = ([mpmath.mpf(float(a)) for a in weight], [mpmath.mpf(float(a)) for a in bias],
                   mpmath.mpf(eps))
        for index in np.ndindex(x.shape[:-1]):
            out[index] = _norm_output(norm, [mpmath.mpf(float(a)) for a in x[index]], w, b, e)
    return out


def norm_relevance(rule: str, norm: str, x: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                   eps: float, relevance_out: np.ndarray, dps: int = 50) -> np.ndarray:
    """R_in of ``rule`` (``norm_cp``: sigma held; ``norm_full``: the Jacobian) over the last
    axis, as mpf; R_i = sum_j x_i J_ji R_j / y_j (no stabiliser)."""
    x = np.asarray(x, dtype=float)
    out = np.empty(x.shape, dtype=object)
    with mpmath.workdps(dps + 10):
        w, b, e = ([mpmath.mpf(float(a)) for a in weight], [mpmath.mpf(float(a)) for a in bias],
                   mpmath.mpf(eps))
        for index in np.ndindex(x.shape[:-1]):
            v = [mpmath.mpf(float(a)) for a in x[index]]
            upper = [mpmath.mpf(float(r)) for r in relevance_out[index]]
            out[index] = norm_row(rule, norm, v, w, b, e, upper)[0]
    return out


def _detached_matrix(norm: str, v: list, weight: list, eps) -> list:
    """W_ji of the linear map with sigma held constant."""
    n = len(v)
    if norm == "layernorm":
        mean = mpmath.fsum(v) / n
        sigma = mpmath.sqrt(mpmath.fsum((a - mean) ** 2 for a in v) / n + eps)
        return [[weight[j] * ((1 if i == j else 0) - mpmath.mpf(1) / n) / sigma
                 for i in range(n)] for j in range(n)]
    sigma = mpmath.sqrt(mpmath.fsum(a**2 for a in v) / n + eps)
    return [[weight[j] * (1 if i == j else 0) / sigma for i in range(n)] for j in range(n)]


__all__ = ["ACTIVATIONS", "NORM_RULES", "POINTWISE_RULES", "norm_forward", "norm_relevance", "norm_row", "norm_values",
           "norm_absorbed", "pointwise_absorbed", "pointwise_relevance", "pointwise_values",
           "row_jacobian"]
