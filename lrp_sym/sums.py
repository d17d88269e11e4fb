"""Manipulating sums over the inputs i = 1..n with symbolic n.

SymPy keeps ``Sum(a + t*b, (i, 1, n))`` as one object. Deriving a rule needs the sums split
(linearity), constants pulled out, and like sums combined; these few functions do that and
nothing else, so every derivation step stays an ordinary SymPy expression.
"""

from __future__ import annotations

from sympy import Add, Expr, Max, Min, Mul, S, Sum, Symbol, expand, factor_terms, simplify

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


def _basis_terms(summand: Expr) -> list[tuple[Expr, Expr, str]]:
    """``summand`` as [(coefficient, monomial, part)]: sum of coefficient * monomial * w_ij^part.

    ``part`` is ``"+"`` (times w_ij^+), ``"-"`` (times w_ij^-) or ``""`` (the monomial as it is,
    for terms without w_ij or not linear in it within a sign case, such as w_ij^2).
    """
    terms = []
    for term in Add.make_args(expand(summand)):
        coefficient, varying = term.as_independent(i, as_Add=False)
        parts = split_positive_negative(varying) if varying.has(w) else None
        if parts is None:
            terms.append((coefficient, varying, ""))
            continue
        for part, factor in zip("+-", parts):
            for piece in Add.make_args(expand(factor)):
                inner, monomial = piece.as_independent(i, as_Add=False)
                if inner != 0:
                    terms.append((coefficient * inner, monomial, part))
    return terms


def _basis_symbol(monomial: Expr, part: str, signs: dict[Expr, Expr] | None) -> Symbol:
    """The symbol standing for sum_i monomial w_ij^part, with the sign its terms have under
    the substitution ``signs`` (a point of the domain written with sign-constrained symbols)."""
    weight = {"+": Max(0, w[i, j]), "-": Min(0, w[i, j]), "": S.One}[part]
    name = f"sum({monomial}{'*w^' + part if part else ''})"
    if signs is None:
        return Symbol(name, real=True)
    cases = [value for _, value in by_weight_sign((monomial * weight).subs(signs))]
    if all(value.is_nonnegative for value in cases):
        return Symbol(name, nonnegative=True)
    if all(value.is_nonpositive for value in cases):
        return Symbol(name, nonpositive=True)
    return Symbol(name, real=True)


def sums_as_symbols(expr: Expr, signs: dict[Expr, Expr] | None = None) -> Expr:
    """Replace every sum over i by a combination of symbols, one per basis sum.

    Each summand is written as sum of c * m_i * w_ij^+, c * m_i * w_ij^- and c * m_i terms
    (m_i a monomial in x_i, l_i, h_i); the sum over i of each m_i w_ij^(+/-) becomes one symbol,
    so different spellings of one sum (Heaviside(w) w, Max(0, w)) meet in the same symbol. With
    ``signs`` each symbol carries the sign its terms have there (a sum of non-negative terms is
    non-negative for every n); without, the symbols are only real.
    """
    def replace(total: Sum) -> Expr:
        return sum((coefficient * _basis_symbol(monomial, part, signs)
                    for coefficient, monomial, part in _basis_terms(total.function)), S.Zero)

    return expand(expand_sums(expr).replace(lambda e: isinstance(e, Sum), replace))
