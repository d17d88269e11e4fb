"""Manipulating sums over the inputs i = 1..n with symbolic n.

SymPy keeps ``Sum(a + t*b, (i, 1, n))`` as one object. Deriving a rule needs the sums split
(linearity), constants pulled out, and like sums combined; these few functions do that and
nothing else, so every derivation step stays an ordinary SymPy expression.
"""

from __future__ import annotations

from sympy import Add, Expr, Mul, S, Sum, Symbol, expand, factor_terms, simplify

from lrp_sym.symbols import i, j, n, w

#: the sign cases of a generic weight w_ij != 0
WEIGHT = Symbol("W", positive=True)
SIGN_CASES: tuple[tuple[str, Expr], ...] = (("w_ij > 0", WEIGHT), ("w_ij < 0", -WEIGHT))


def over_inputs(summand: Expr) -> Sum:
    """Return sum_{i=1}^{n} summand."""
    return Sum(summand, (i, 1, n))


def expand_sums(expr: Expr) -> Expr:
    """Split every sum over additions and pull factors that do not depend on i out of it."""
    expanded = expand(expr)
    return expanded.replace(lambda e: isinstance(e, Sum), lambda e: factor_terms(e))


def combine_sums(expr: Expr) -> tuple[Expr, Expr]:
    """Write ``expr`` as ``summand, rest`` with expr = sum_i summand + rest.

    Every term c * Sum(f, (i, 1, n)) with c free of i contributes c * f to the summand.
    """
    summand, rest = S.Zero, S.Zero
    for term in Add.make_args(expand_sums(expr)):
        sums = [factor for factor in Mul.make_args(term) if isinstance(factor, Sum)]
        if len(sums) == 1 and sums[0].limits == ((i, 1, n),):
            coefficient = term / sums[0]
            if i not in coefficient.free_symbols:
                summand += coefficient * sums[0].function
                continue
        rest += term
    return summand, rest


def by_weight_sign(expr: Expr) -> list[tuple[str, Expr]]:
    """Return ``expr`` in each sign case of w_ij (w_ij replaced by +W or -W, W > 0)."""
    return [(label, simplify(expr.subs(w[i, j], value))) for label, value in SIGN_CASES]


def split_positive_negative(summand: Expr) -> tuple[Expr, Expr] | None:
    """Find f_+ and f_- with summand = f_+ w_ij^+ + f_- w_ij^- in both sign cases.

    Returns None when the summand is not linear in w_ij within each sign case (w_ij^2, say).
    """
    parts = []
    for (_, weight), (_, case_value) in zip(SIGN_CASES, by_weight_sign(summand)):
        factor = simplify(case_value / weight)  # in each case w_ij^+ or w_ij^- equals the weight
        if WEIGHT in factor.free_symbols:
            return None
        parts.append(factor)
    return parts[0], parts[1]
