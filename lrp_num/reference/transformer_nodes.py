"""mpmath reference for the element-wise nonlinearities and LayerNorm / RMSNorm, node by node.

Everything here follows the definitions at ``dps`` digits and shares no code with the generated
kernels: GELU is x (1 + erf(x / sqrt 2)) / 2 with mpmath.erf, derivatives are mpmath's numerical
differentiation at full precision, LayerNorm's mean and variance are summed in mpmath, and the
normalisation rules are formed from the explicit n x n matrix (sigma held: W_ji = gamma_j
(delta_ji - 1/n) / sigma) or Jacobian (mpmath.diff of y_j in x_i), with R_i = sum_j x_i J_ji
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
#: the Taylor rule's expansion point: the root of g, 0 for the sigmoid (which has none)
EXPANSION_POINT = 0


def pointwise_relevance(rule: str, activation: str, x: np.ndarray, relevance_out: np.ndarray,
                        dps: int = 50) -> np.ndarray:
    """R_in of ``rule`` (``identity_nonlinear`` or ``taylor_nonlinear``), elementwise, as mpf.

    Taylor: R_in = g'(x~) (x - x~) / g(x) R_out at x~ = 0, g' by mpmath.diff; where g(x) = 0
    (x = x~) its limit g'(x~) / g'(x~) = 1.
    """
    g = ACTIVATIONS[activation]
    out = np.empty(np.shape(x), dtype=object)
    with mpmath.workdps(dps):
        slope = mpmath.diff(g, EXPANSION_POINT)
        for index, value in np.ndenumerate(np.asarray(x, dtype=float)):
            upper = mpmath.mpf(float(np.asarray(relevance_out)[index]))
            if rule == "identity_nonlinear":
                out[index] = upper
                continue
            v = mpmath.mpf(float(value))
            g_v = g(v)
            out[index] = upper if g_v == 0 else slope * (v - EXPANSION_POINT) / g_v * upper
    return out


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
            n = len(v)
            y = _norm_output(norm, v, w, b, e)
            c = [mpmath.mpf(float(r)) / y[j] for j, r in enumerate(relevance_out[index])]
            if rule == "norm_cp":
                jacobian = _detached_matrix(norm, v, w, e)
            else:
                jacobian = [[mpmath.diff(lambda t, j=j, i=i: _norm_output(
                    norm, v[:i] + [t] + v[i + 1:], w, b, e)[j], v[i]) for i in range(n)]
                    for j in range(n)]
            out[index] = [v[i] * mpmath.fsum(jacobian[j][i] * c[j] for j in range(n))
                          for i in range(n)]
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


__all__ = ["ACTIVATIONS", "norm_forward", "norm_relevance", "pointwise_relevance"]
