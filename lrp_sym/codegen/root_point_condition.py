"""Emitting ``root_point_in_domain``: the derived domain condition of a root-point rule as code.

A rule derived from a search direction v_ij (``lrp_sym.root_point.RootPointRule``) carries in
``results["domain_condition"]`` the condition under which its root point x~ = x - t* v_j,
t* = z_j / sum_i v_ij w_ij, lies in the rule's input domain, for a neuron with t* > 0:

    sum_i c(x_i, l_i, h_i, w_ij) + r(b_j) <= 0      (or simply true).

The summand separates like q_ij (:func:`~lrp_sym.codegen.separation.separate`) into
sum_m c_m f_m(x, l, h) g_m(w), so the sum is sum_m c_m op.forward(f_m, g_m); the rest r is
scalar in b_j and the rule parameters, with b_j from op.bias_like. Whether the rule applies at
all is the neuron's activity, ``z_j > 0 and sum_i q_ij > 0``: the same test
``RootPointRule._applies`` uses when it verifies the condition.
"""

from __future__ import annotations

from sympy import Add, Expr, Indexed, Le, S, Sum, Symbol, sstr, sympify

from lrp_sym.codegen.errors import CodegenError
from lrp_sym.codegen.ratio_kernel import (ARRAY_NAMES, NAMESPACE_LINE, KernelBody, check_scalar,
                                          emit_input_factors, parameter_doc, split_scalar)
from lrp_sym.codegen.separation import separate
from lrp_sym.derivation import Derivation
from lrp_sym.symbols import b, h, i, j, l, n, w, x

_BIAS = Symbol("bias")


def has_root_point_condition(derivation: Derivation) -> bool:
    """True for a root-point rule of a ReLU neuron whose domain condition has a closed form.

    A neuron without activation (an addition) has no active side: its root point is on R^n
    wherever t* exists, so it gets no diagnostic.
    """
    return ("domain_condition" in derivation.results
            and derivation.results.get("activation", "relu") == "relu")


def _separated(derivation: Derivation, what: str, expr: Expr) -> list[tuple[Expr, Expr, str]]:
    try:
        parts = separate(expr)
    except CodegenError as error:
        raise CodegenError(f"rule {derivation.name!r}, {what}: {error}") from None
    return [(*split_scalar(part.factor), part.transform) for part in parts]


def _condition_parts(derivation: Derivation, condition: Expr):
    """The left side of ``lhs <= 0`` as (separated summand parts, rest)."""
    if not isinstance(condition, Le) or condition.rhs != 0:
        raise CodegenError(f"rule {derivation.name!r}: the domain condition {condition} is not "
                           f"of the form sum_i c_ij + r_j <= 0")
    summands, rest = [], S.Zero
    for term in Add.make_args(condition.lhs):
        if not term.has(Sum):
            rest += term
            continue
        scalar, total = term.as_independent(Sum, as_Add=False)
        if not isinstance(total, Sum) or total.limits != ((i, 1, n),):
            raise CodegenError(f"rule {derivation.name!r}: the domain condition's term {term} "
                               f"is not a multiple of a sum over i = 1..n")
        summands.append(scalar * total.function)
    parts = _separated(derivation, "domain condition", Add(*summands)) if summands else []
    rest = rest.subs(b[j], _BIAS)
    check_scalar(derivation, "the rest of the domain condition", rest,
                  set(derivation.parameters) | {_BIAS})
    return parts, rest


def _bounds_in(*exprs: Expr) -> list[str]:
    used = {a.base for expr in exprs for a in expr.atoms(Indexed)}
    return [ARRAY_NAMES[base] for base in (l, h) if base in used]


def condition_signature(derivation: Derivation) -> str:
    """The generated signature of ``root_point_in_domain``."""
    parameters = "".join(f"{p}={float(derivation.defaults[p])!r}, " for p in derivation.parameters)
    return f"root_point_in_domain(op, x, *, {parameters}lower=None, upper=None)"


def _forward(body: KernelBody, factor: str, transform: str) -> Symbol:
    """The name of op.forward(factor, transform), emitting it on first use."""
    key = (factor, transform)
    if key not in body.forwards:
        symbol = Symbol(f"z_{len(body.forwards) + 1}")
        body.emit(f"{symbol} = op.forward({factor}, {transform!r})")
        body.forwards[key] = symbol
        body.names[symbol] = str(symbol)
    return body.forwards[key]


def _linear_combination(body: KernelBody, parts, factor_names) -> Expr:
    return sum((scalar * _forward(body, factor_names[array], transform)
                for scalar, array, transform in parts), S.Zero)


_DOC = '''\
"""Per output neuron: does the rule apply, and is its root point in the domain?

Deep Taylor root point of neuron j (derived): x~_i = x_i - t* v_ij with

    t* = {step}

The derivation shows that for t* > 0 the root point lies in the domain ({domain}) exactly when

    {condition}

Parameters
----------
op : LinearOperator
    The layer's linear part: forward(a, g), bias_like(z).
x : ndarray
    Layer input batch.
{parameters}lower, upper : ndarray, optional
    Box bounds l <= x <= h, broadcastable to x.{bounds_note}

Returns
-------
inside : ndarray of bool
    The root point exists (sum_i q_ij > 0, so t* > 0 is finite) and the derived condition
    holds, for every neuron, the shape of the layer output; it speaks about the root point
    only where ``active`` holds. Evaluated in floating point: a neuron within rounding of the
    boundary may fall on either side.
active : ndarray of bool
    z_j = sum_i x_i w_ij + b_j > 0: the neurons that carry relevance, the shape of the layer
    output. An active neuron with sum_i q_ij = 0 (active through its bias alone) has no root
    point along the direction and counts as outside.
"""
'''


def emit_root_point_condition(derivation: Derivation) -> list[str]:
    """The source lines of ``root_point_in_domain`` for a rule with a domain condition."""
    if len(derivation.terms) != 1:
        raise CodegenError(f"rule {derivation.name!r}: a root-point rule has one term, "
                           f"not {len(derivation.terms)}")
    q = sympify(derivation.terms[0].q)
    condition = sympify(derivation.results["domain_condition"])
    constant = condition in (S.true, S.false)
    q_parts = _separated(derivation, "q", q)
    condition_parts, rest = ([], S.Zero) if constant else _condition_parts(derivation, condition)
    # t* = z'_j / sum_i q_ij with z'_j the pre-activation of the neuron the rule is derived for:
    # z_j itself, or z_j with unit weights for the flat rule
    model = derivation.results.get("preactivation", Sum(x[i] * w[i, j], (i, 1, n)) + b[j])
    model_parts, model_rest = _condition_parts(derivation, Le(model, 0))

    body = KernelBody(derivation)
    body.names[_BIAS] = "bias"
    body.emit("x = kernel_runtime.as_float(x)")
    body.emit(NAMESPACE_LINE)
    bounds = _bounds_in(q, S.Zero if constant else condition.lhs)
    for name in bounds:
        body.emit(f"{name} = kernel_runtime.batch_shaped("
                  f"kernel_runtime.box_bound({name}, {name!r}, x, RULE), x)")
    factor_names = emit_input_factors(body, [q_parts, condition_parts, model_parts])
    body.emit("# active: z_j > 0; a root point along the direction needs sum_i q_ij > 0 (t* > 0)")
    preactivation = _forward(body, "x", "identity")
    body.emit(f"bias = op.bias_like({preactivation})")
    body.emit(f"z = {preactivation} + bias")
    body.emit(f"denominator = {body.code(_linear_combination(body, q_parts, factor_names))}")
    body.emit("active = z > 0")
    root_exists = "(denominator > 0)"
    model = body.code(_linear_combination(body, model_parts, factor_names) + model_rest)
    if model != "z" and model != body.code(Symbol(str(preactivation)) + _BIAS):
        body.emit(f"z_model = {model}  # the pre-activation the rule is derived for")
        root_exists = "(denominator > 0) & (z_model > 0)"
    if constant:
        body.emit(f"# the derived condition: {condition}")
        body.emit(f"inside = xp.asarray(xp.broadcast_to({root_exists}, z.shape), copy=True)"
                  if bool(condition) else "inside = xp.zeros_like(z, dtype=xp.bool)")
    else:
        body.emit(f"# the derived condition: {sstr(condition)}")
        lhs = _linear_combination(body, condition_parts, factor_names) + rest
        body.emit(f"condition = {body.code(lhs)}")
        body.emit(f"inside = xp.asarray(xp.broadcast_to({root_exists} & (condition <= 0), z.shape), "
                  "copy=True)")
    body.emit("return inside, active")
    body.drop_unused_namespace()

    uses_bounds = " Required by this rule." if bounds else " Not used by this rule."
    doc = _DOC.format(step=sstr(derivation.results.get("step", "z_j / sum_i v_ij w_ij")),
                      domain=derivation.domain.name if derivation.domain else "R^n",
                      condition=sstr(condition),
                      parameters=parameter_doc(derivation) + "\n" if derivation.parameters
                      else "", bounds_note=uses_bounds)
    indented = ["    " + line if line else "" for line in doc.rstrip("\n").splitlines()]
    return [f"def {condition_signature(derivation)}:", *indented,
            *("    " + line if line else "" for line in body.lines)]


__all__ = ["condition_signature", "emit_root_point_condition", "has_root_point_condition"]
