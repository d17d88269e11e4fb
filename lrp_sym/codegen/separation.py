"""Separating q_ij into input factors times named weight transforms.

A kernel evaluates sum_i q_ij with matrix products only if q is separable,

    q_ij = sum_m a_m(x_i, l_i, h_i, parameters) g_m(w_ij),

with each g_m one of the weight transforms that every layer operator provides
(``lrp_num.layers.operators.WEIGHT_TRANSFORMS``). In the two sign cases of a generic weight
(w_ij = +W or -W, W > 0) a separable q is a polynomial of degree at most 2 in W, and each degree
names its transforms:

==========  ===============  ===============  =========================================
degree      w > 0            w < 0            transform
==========  ===============  ===============  =========================================
0           A                A                ``ones`` (coefficient A)
1           A W              -B W             ``identity`` if A = B, else ``positive`` A
                                              and ``negative`` B
2           A W^2            A W^2            ``square``
==========  ===============  ===============  =========================================

A rectified product max(0, f w) or min(0, f w) with f free of w is first split through the
sign of f: max(0, f w) = f^+ w^+ + f^- w^-, min(0, f w) = f^+ w^- + f^- w^+ (each rewrite is
checked in the four sign cases of f and w). The result is checked to re-sum to q in every sign
case; anything else is a :class:`CodegenError` that names the offending term of q.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from sympy import (Add, Dummy, Expr, Heaviside, Indexed, Max, Min, Mul, Poly, PolynomialError, S,
                   Symbol, default_sort_key, expand, sign, simplify)

from lrp_sym.codegen.errors import CodegenError
from lrp_sym.symbols import h, i, j, l, w, x

#: the weight transforms, in the order kernels apply them, with their values at w = +W and -W
_W = Symbol("W", positive=True)
TRANSFORMS: dict[str, tuple[Expr, Expr]] = {
    "identity": (_W, -_W),
    "positive": (_W, S.Zero),
    "negative": (S.Zero, -_W),
    "square": (_W**2, _W**2),
    "ones": (S.One, S.One),
}
#: the quantities of connection (i, j) an input factor may contain
INPUT_BASES = (x, l, h)


@dataclass(frozen=True)
class SeparableTerm:
    """One term a(x_i, l_i, h_i, parameters) g(w_ij) of a separated q_ij."""

    factor: Expr
    transform: str

    @property
    def weight(self) -> Expr:
        """g(w_ij) as a SymPy expression."""
        weight = w[i, j]
        return {"identity": weight, "positive": Max(0, weight), "negative": Min(0, weight),
                "square": weight**2, "ones": S.One}[self.transform]


def _weight_cases(expr: Expr) -> tuple[Expr, Expr]:
    return expr.subs(w[i, j], _W), expr.subs(w[i, j], -_W)


def _sign_split(node: Expr) -> Expr | None:
    """Rewrite max(0, f w) / min(0, f w) through the sign of f; None if not of that form."""
    if len(node.args) != 2 or S.Zero not in node.args:
        return None
    (inner,) = [arg for arg in node.args if arg != 0]
    if not inner.has(w[i, j]):
        return None
    f = simplify(inner / w[i, j])
    if f.has(w[i, j]):
        return None
    weight = w[i, j]
    if isinstance(node, Max):
        rewritten = Max(0, f) * Max(0, weight) + Min(0, f) * Min(0, weight)
    else:
        rewritten = Max(0, f) * Min(0, weight) + Min(0, f) * Max(0, weight)
    _check_sign_split(node, rewritten, f)
    return rewritten


def _check_sign_split(node: Expr, rewritten: Expr, f: Expr) -> None:
    """Verify the rewrite in the four sign cases of f and w (f stands for a free symbol)."""
    magnitude = Dummy("F", positive=True)
    generic = Dummy("f", real=True)
    difference = (node - rewritten).subs(f, generic)
    for weight in (_W, -_W):
        for value in (magnitude, -magnitude):
            if simplify(difference.subs({w[i, j]: weight}).subs(generic, value)) != 0:
                raise CodegenError(f"sign split of {node} fails for w = {weight}, f = {value}")


def split_rectified_products(q: Expr) -> Expr:
    """Replace every max(0, f w_ij) and min(0, f w_ij) in ``q`` by its input-split form."""
    def rewrite(node):
        return _sign_split(node) or node
    return q.replace(lambda e: isinstance(e, (Max, Min)) and e.has(w[i, j]), rewrite)


def _degree_coefficients(expr: Expr) -> dict[int, Expr] | None:
    """Coefficients of ``expr`` as a polynomial in W (None if it is not one)."""
    expr = expand(expr)
    if not expr.has(_W):
        return {0: expr}
    try:
        poly = Poly(expr, _W)
    except PolynomialError:
        return None
    coefficients = {monom[0]: coeff for monom, coeff in poly.terms()}
    if any(coeff.has(_W) for coeff in coefficients.values()):
        return None
    return coefficients


def _separate_split(q: Expr) -> list[SeparableTerm]:
    """Separate an already input-split q; raise CodegenError if it is not separable."""
    plus, minus = (_degree_coefficients(case) for case in _weight_cases(q))
    if plus is None or minus is None:
        raise CodegenError("not a polynomial in |w_ij| within each sign case of w_ij")
    extra = sorted((set(plus) | set(minus)) - {0, 1, 2})
    if extra:
        raise CodegenError(f"has powers {extra} of w_ij; only 0, 1 and 2 are separable")
    parts: dict[str, Expr] = {}
    a0, b0 = plus.get(0, S.Zero), minus.get(0, S.Zero)
    if simplify(a0 - b0) != 0:
        raise CodegenError("its w-free part differs between w_ij > 0 and w_ij < 0 "
                           "(a step function of w_ij is not a weight transform)")
    parts["ones"] = a0
    a1, b1 = plus.get(1, S.Zero), -minus.get(1, S.Zero)
    if simplify(a1 - b1) == 0:
        parts["identity"] = a1
    else:
        parts["positive"], parts["negative"] = a1, b1
    a2, b2 = plus.get(2, S.Zero), minus.get(2, S.Zero)
    if simplify(a2 - b2) != 0:
        raise CodegenError("its w_ij^2 part differs between the sign cases of w_ij")
    parts["square"] = a2
    terms = []
    for transform in TRANSFORMS:
        factor = simplify(parts.get(transform, S.Zero))
        if factor != 0:
            terms.append(SeparableTerm(factor, transform))
    return terms


def _check_factor(q: Expr, term: SeparableTerm) -> None:
    for indexed in sorted(term.factor.atoms(Indexed), key=default_sort_key):
        if indexed.base not in INPUT_BASES or indexed.indices != (i,):
            raise CodegenError(f"q = {q}: the input factor {term.factor} of the {term.transform} "
                               f"weights contains {indexed}; only x[i], l[i], h[i] are allowed")
    if term.factor.has(j):
        raise CodegenError(f"q = {q}: the input factor {term.factor} depends on j")


def _sign_core(expr: Expr) -> tuple[int, Expr]:
    """``expr`` as sign * (positive factor) * core; returns (sign, core)."""
    coefficient, factors = expr.as_coeff_mul()
    core = Mul(*[f for f in factors if not f.is_positive])
    sign_of = 1 if coefficient > 0 else -1
    if core.could_extract_minus_sign():  # e and -e are one case split
        core, sign_of = -core, -sign_of
    return sign_of, core


def _rectified_nodes(expr: Expr) -> list[Expr]:
    return sorted((node for node in expr.atoms(Max, Min, Heaviside, sign)
                   if not isinstance(node, (Max, Min)) or
                   (len(node.args) == 2 and S.Zero in node.args)), key=default_sort_key)


def _argument(node: Expr) -> Expr:
    if isinstance(node, (Max, Min)):
        return [arg for arg in node.args if arg != 0][0]
    return node.args[0]


def _in_case(node: Expr, sign_of_argument: int) -> Expr:
    """The value of a rectifier when its argument has the given sign."""
    argument = _argument(node)
    if isinstance(node, Max):
        return argument if sign_of_argument > 0 else S.Zero
    if isinstance(node, Min):
        return argument if sign_of_argument < 0 else S.Zero
    if isinstance(node, Heaviside):
        return S.One if sign_of_argument > 0 else S.Zero
    return S(sign_of_argument)


def _check_resum(q: Expr, terms: list[SeparableTerm]) -> None:
    """sum_m a_m g_m(w) - q = 0 in every sign case of w_ij and of every rectified quantity.

    In each sign case of w_ij, every max(0, e), min(0, e), Heaviside(e) and sign(e) is replaced
    by its value for e > 0 and for e < 0 (all combinations over the distinct e up to a positive
    factor; zero is the limit of both), and the difference must simplify to 0.
    """
    difference = sum((term.factor * term.weight for term in terms), S.Zero) - q
    for weight in (_W, -_W):
        case_difference = difference.subs(w[i, j], weight)
        nodes = _rectified_nodes(case_difference)
        cores = sorted({_sign_core(_argument(node))[1] for node in nodes}, key=default_sort_key)
        for signs in itertools.product((1, -1), repeat=len(cores)):
            of_core = dict(zip(cores, signs))
            values = {}
            for node in nodes:
                sign_of_factor, core = _sign_core(_argument(node))
                values[node] = _in_case(node, sign_of_factor * of_core[core])
            if simplify(case_difference.xreplace(values)) != 0:
                described = ", ".join(f"{core} {'>' if s > 0 else '<'} 0"
                                      for core, s in of_core.items())
                raise CodegenError(f"q = {q}: the separated form does not re-sum to q for "
                                   f"w_ij {'>' if weight == _W else '<'} 0"
                                   + (f", {described}" if described else ""))


def separate(q: Expr) -> list[SeparableTerm]:
    """Write q_ij as sum_m a_m g_m(w_ij) with named weight transforms g_m.

    Parameters
    ----------
    q : Expr
        q_ij in ``x[i]``, ``l[i]``, ``h[i]``, ``w[i, j]`` and rule parameters.

    Returns
    -------
    list of SeparableTerm
        One term per transform that occurs, in the order of :data:`TRANSFORMS`.

    Raises
    ------
    CodegenError
        If q is not separable; the message names the first term of q that is not.
    """
    split = split_rectified_products(q)
    try:
        terms = _separate_split(split)
    except CodegenError as error:
        for part in sorted(Add.make_args(expand(split)), key=default_sort_key):
            try:
                _separate_split(part)
            except CodegenError as reason:
                raise CodegenError(f"q = {q} is not separable into input factors times weight "
                                   f"transforms: its term {part} {reason}") from None
        raise CodegenError(f"q = {q} is not separable: {error}") from None
    for term in terms:
        _check_factor(q, term)
    _check_resum(q, terms)
    return terms
