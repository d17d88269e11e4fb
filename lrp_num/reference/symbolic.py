"""A second reference: the derivations' symbolic R_ij, evaluated in mpmath on a concrete dense layer.

:mod:`lrp_num.reference` computes each rule by its definition (a root point found numerically per
neuron). This module instead takes what ``lrp_sym`` *derived*, the SymPy expression of R_ij in
``x[i]``, ``w[i, j]``, ``b[j]``, ``l[i]``, ``h[i]``, ``R[j]`` and the rule parameters, with sums
``Sum(..., (i, 1, n))``, and evaluates it with ``lambdify(..., "mpmath")`` on a concrete layer.
Agreement of the definition, the derivation and the generated float64 kernel on single dense
layers is the core evidence that all three mean the same rule.

SymPy is imported inside the functions: ``import lrp_num`` stays SymPy-free.

The derived expressions are those of an active neuron under the DTD bias convention (epsilon:
stabiliser +epsilon since z_j > 0; bias_neuron: b_j in the denominator). Indices are 1-based in
the expressions, so arrays are passed with a dummy entry at position 0.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import mpmath
import numpy as np

from lrp_num.checks import check_dps


def _heaviside(value, at_zero=None):
    # directions use 1[w > 0] for generic w != 0; at w = 0 the term is multiplied by w = 0 anyway
    if value > 0:
        return mpmath.mpf(1)
    if value < 0:
        return mpmath.mpf(0)
    return mpmath.mpf(at_zero) if at_zero is not None else mpmath.mpf(0.5)


@lru_cache(maxsize=None)
def _derivation(rule: str, folder: str | None = None):
    from lrp_sym.registry import load_declarations

    declarations = load_declarations(Path(folder) if folder else None)
    if rule not in declarations:
        from lrp_num.errors import UnknownRuleError

        raise UnknownRuleError(f"no derivation for rule {rule!r}; known: {', '.join(declarations)}")
    return declarations[rule].derive()


def _symbols():
    from lrp_sym.symbols import R, alpha, b, beta, eps, gamma, h, i, j, l, n, w, x

    return (x, w, b, l, h, R, i, j, n), (gamma, eps, alpha, beta)


@lru_cache(maxsize=None)
def _lambdified(rule: str, result: str, folder: str | None = None) -> tuple[Callable, tuple[str, ...]]:
    """mpmath function of (x, w, b, l, h, R, i, j, n, gamma, epsilon, alpha, beta) for a result."""
    import sympy

    derivation = _derivation(rule, folder)
    expr = derivation.results[result]
    if isinstance(expr, sympy.Rel):
        expr = expr.lhs - expr.rhs  # a condition "lhs <= rhs" becomes lhs - rhs <= 0
    arrays, parameters = _symbols()
    function = sympy.lambdify([*arrays, *parameters], expr,
                              modules=[{"Heaviside": _heaviside, "Max": max, "Min": min}, "mpmath"])
    return function, tuple(str(p) for p in parameters)


def derived_defaults(rule: str) -> dict[str, float]:
    """The derivation's parameter defaults, by parameter name."""
    return {str(symbol): float(value) for symbol, value in _derivation(rule).defaults.items()}


def _one_based(values: np.ndarray) -> np.ndarray:
    """Object array of mpf with a zero row / column in front, for the 1-based indices of the sums."""
    values = np.asarray(values, dtype=np.float64)
    out = np.empty(tuple(s + 1 for s in values.shape), dtype=object)
    out[...] = mpmath.mpf(0)
    out[tuple(slice(1, None) for _ in values.shape)] = np.vectorize(mpmath.mpf, otypes=[object])(values) \
        if values.size else values
    return out


def _layer_arguments(weight, bias, x, relevance_out, lower, upper, parameters, rule):
    weight = np.asarray(weight, dtype=np.float64)
    n_in, n_out = weight.shape
    zeros = np.zeros(n_in)
    arrays = [_one_based(x), _one_based(weight), _one_based(bias),
              _one_based(zeros if lower is None else np.broadcast_to(lower, (n_in,))),
              _one_based(zeros if upper is None else np.broadcast_to(upper, (n_in,)))]
    if relevance_out is not None:
        relevance = np.asarray(relevance_out)
        r = np.empty(n_out + 1, dtype=object)
        r[0] = mpmath.mpf(0)
        r[1:] = [mpmath.mpf(v) if not isinstance(v, mpmath.mpf) else v for v in relevance.ravel()]
        arrays.append(r)
    else:
        arrays.append(_one_based(np.ones(n_out)))
    values = {**derived_defaults(rule), **parameters}
    _, names = _lambdified(rule, "relevance")
    return n_in, n_out, arrays, [mpmath.mpf(values.get(name, 0)) for name in names]


def dense_relevance(rule: str, weight: np.ndarray, bias: np.ndarray, x: np.ndarray,
                    relevance_out: np.ndarray, *, lower=None, upper=None, dps: int = 50,
                    **parameters: float) -> np.ndarray:
    """R_i = sum_j R_ij of one dense layer from the derived symbolic R_ij, in mpmath.

    Parameters
    ----------
    rule : str
        A rule of ``derivations/`` (w2, zplus, zbox, lrp0, gamma, flat, epsilon, alphabeta,
        bias_neuron).
    weight : ndarray, shape (n_in, n_out)
        w_ij; ``bias`` b_j, ``x`` x_i, ``relevance_out`` R_j (float or mpf).
    lower, upper : array_like, optional
        l_i and h_i for z^B.
    dps : int
        Working precision, 20 to 10000 digits (PrecisionError otherwise).

    Returns
    -------
    ndarray of mpf, shape (n_in,)
        Neurons with R_j = 0 contribute nothing (their expression is not evaluated).
    """
    dps = check_dps(dps)
    function, _ = _lambdified(rule, "relevance")
    with mpmath.workdps(dps):
        n_in, n_out, arrays, values = _layer_arguments(weight, bias, x, relevance_out, lower, upper,
                                                       parameters, rule)
        relevance_in = [mpmath.mpf(0)] * n_in
        for j in range(1, n_out + 1):
            if arrays[5][j] == 0:
                continue
            for i in range(1, n_in + 1):
                relevance_in[i - 1] += function(*arrays, i, j, n_in, *values)
    out = np.empty(n_in, dtype=object)
    out[:] = relevance_in
    return out


def domain_condition_values(rule: str, weight: np.ndarray, bias: np.ndarray, x: np.ndarray, *,
                            lower=None, upper=None, dps: int = 50, **parameters: float) -> np.ndarray | None:
    """Per output neuron, the left side of the derived condition "root point in the domain": lhs <= 0.

    Returns an object array of mpf of shape (n_out,), or None when the condition is always true.
    The derivation assumes an active neuron reached with a positive step (sum_i q_ij > 0).
    """
    import sympy

    dps = check_dps(dps)
    condition = _derivation(rule).results.get("domain_condition")
    if condition is None or condition is sympy.true:
        return None
    function, _ = _lambdified(rule, "domain_condition")
    with mpmath.workdps(dps):
        n_in, n_out, arrays, values = _layer_arguments(weight, bias, x, None, lower, upper,
                                                       parameters, rule)
        out = np.empty(n_out, dtype=object)
        out[:] = [function(*arrays, 1, j, n_in, *values) for j in range(1, n_out + 1)]
    return out


def domain_condition_holds(rule: str, weight: np.ndarray, bias: np.ndarray, x: np.ndarray, *,
                           lower=None, upper=None, dps: int = 50, **parameters: float) -> np.ndarray:
    """Per output neuron: does the derived condition hold? Bool array of shape (n_out,)."""
    values = domain_condition_values(rule, weight, bias, x, lower=lower, upper=upper, dps=dps, **parameters)
    if values is None:
        return np.ones(np.shape(weight)[1], dtype=bool)
    return np.array([value <= 0 for value in values], dtype=bool)


__all__ = ["dense_relevance", "derived_defaults", "domain_condition_holds", "domain_condition_values"]
