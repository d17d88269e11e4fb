"""Building blocks for writing a search direction v_ij.

A direction is an ordinary SymPy expression in ``x[i]``, ``w[i, j]``, ``l[i]``, ``h[i]`` and rule
parameters. These helpers name the pieces the field uses: w^+ = max(0, w), w^- = min(0, w) and
the indicator 1[w > 0]. Weights are taken as generic (w_ij != 0), so 1[w > 0] + 1[w < 0] = 1.
"""

from __future__ import annotations

from sympy import Expr, Heaviside, Max, Min

from lrp_sym.symbols import h, i, j, l, w, x


def positive_part(expr: Expr) -> Expr:
    """Return expr^+ = max(0, expr)."""
    return Max(expr, 0)


def negative_part(expr: Expr) -> Expr:
    """Return expr^- = min(0, expr)."""
    return Min(expr, 0)


def indicator_positive(expr: Expr) -> Expr:
    """Return 1[expr > 0] (for generic, non-zero arguments)."""
    return Heaviside(expr)


def indicator_negative(expr: Expr) -> Expr:
    """Return 1[expr < 0] (for generic, non-zero arguments)."""
    return Heaviside(-expr)


#: the neuron's own quantities for connection (i, j)
x_i = x[i]
w_ij = w[i, j]
l_i = l[i]
h_i = h[i]
w_ij_plus = positive_part(w_ij)
w_ij_minus = negative_part(w_ij)
