"""Emitting the NumPy kernel of a ratio rule R_i = sum_j sum_k a_k q^(k)_ij / d_k R_j.

Each q^(k) is separated into sum_m c_m f_m(x, l, h) g_m(w) (scalar c_m in the rule parameters,
array factor f_m, weight transform g_m). The kernel then needs, per term k,

    d_k = sum_m c_m op.forward(f_m, g_m) + s_k        (s_k: the derived bias share),
    s_k = a_k R_out / stab(d_k),

and one backward pass  R_in = sum_f f * sum_g op.transpose(sum_k c_{k,f,g} s_k, g).
Forward products shared between terms are computed once, and transposes are grouped by
(factor, transform), so z+ costs exactly one forward and one transpose product.
"""

from __future__ import annotations

import dataclasses
import keyword
import textwrap

from sympy import (Expr, Indexed, S, Symbol, cse, default_sort_key, numbered_symbols, simplify,
                   sstr, sympify)

from lrp_sym.codegen.errors import CodegenError
from lrp_sym.codegen.printer import print_array_api
from lrp_sym.codegen.separation import INPUT_BASES, separate
from lrp_sym.derivation import Derivation, RatioTerm
from lrp_sym.symbols import b, h, i, j, l, x

#: array names of the per-connection quantities inside a kernel
ARRAY_NAMES = {x: "x", l: "lower", h: "upper"}
#: names a rule parameter must not take (the kernel's own arguments and locals)
RESERVED = frozenset({"op", "x", "relevance_out", "lower", "upper", "eps", "stabilise",
                      "bias_shares", "numpy", "xp", "bias", "ones", "shares", "relevance_in",
                      "kernel_runtime", "z", "active", "inside", "denominator", "condition"})

_RELEVANCE_OUT = Symbol("relevance_out")
_BIAS = Symbol("bias")

#: the statement that takes the array-API namespace from the layer input
NAMESPACE_LINE = "xp = kernel_runtime.namespace(x)"
#: the hand-written run time every generated kernel imports (as ``kernel_runtime``)
RUNTIME_IMPORT = "from lrp_num.engine import kernel_runtime"


def _check_parameter_names(derivation: Derivation) -> None:
    for symbol in derivation.parameters:
        name = str(symbol)
        if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_") \
                or name in RESERVED:
            raise CodegenError(f"rule {derivation.name!r}: parameter name {name!r} cannot be a "
                               f"kernel argument (reserved or not an identifier)")
        if symbol not in derivation.defaults:
            raise CodegenError(f"rule {derivation.name!r}: parameter {name} has no default")


def check_scalar(derivation: Derivation, what: str, expr: Expr, allowed: set) -> None:
    stray = {s for s in expr.free_symbols if s not in allowed}
    if stray:
        names = ", ".join(sorted(map(str, stray)))
        raise CodegenError(f"rule {derivation.name!r}: {what} {expr} may contain only the rule "
                           f"parameters{' and b[j]' if _BIAS in allowed else ''}; it has {names}")


def split_scalar(factor: Expr) -> tuple[Expr, Expr]:
    """factor = scalar * array with scalar free of x, l, h."""
    arrays = sorted((a for a in factor.atoms(Indexed) if a.base in INPUT_BASES),
                    key=default_sort_key)
    if not arrays:
        return factor, S.One
    return factor.as_independent(*arrays, as_Add=False)


class KernelBody:
    """Accumulates the statements of ``relevance`` while naming arrays deterministically."""

    def __init__(self, derivation: Derivation) -> None:
        self.derivation = derivation
        self.lines: list[str] = []
        self.names = dict(ARRAY_NAMES)
        self.names.update({p: str(p) for p in derivation.parameters})
        self.forwards: dict[tuple[str, str], Symbol] = {}

    def emit(self, line: str = "") -> None:
        self.lines.append(line)

    def code(self, expr: Expr) -> str:
        return print_array_api(expr, self.names)

    def drop_unused_namespace(self) -> None:
        """Remove the ``xp = ...`` line when no statement calls the namespace."""
        if not any("xp." in line for line in self.lines):
            self.lines = [line for line in self.lines if line != NAMESPACE_LINE]


def _separated_terms(derivation: Derivation) -> list[list[tuple[Expr, Expr, str]]]:
    """Per term: (scalar, array factor, transform) triples."""
    separated = []
    for k, term in enumerate(derivation.terms, 1):
        try:
            parts = separate(term.q)
        except CodegenError as error:
            raise CodegenError(f"rule {derivation.name!r}, term {k}: {error}") from None
        separated.append([(*split_scalar(part.factor), part.transform) for part in parts])
    return separated


def _common_subexpressions(exprs: list[Expr]) -> tuple[list[tuple[Symbol, Expr]], list[Expr]]:
    """SymPy's cse with numbered symbols, without the trivial ones (a bare negation)."""
    replacements, reduced = cse(exprs, symbols=numbered_symbols("_c", start=1), order="canonical")
    kept, inline = [], {}
    for symbol, value in replacements:
        value = value.xreplace(inline)
        if value.could_extract_minus_sign() and (-value).is_Atom or isinstance(-value, Indexed):
            inline[symbol] = value
        else:
            kept.append((symbol, value))
    return kept, [expr.xreplace(inline) for expr in reduced]


def emit_input_factors(body: KernelBody, separated) -> dict[Expr, str]:
    """Emit the array factors f_m (with common subexpressions) and return their names."""
    factors = sorted({array for parts in separated for _, array, _ in parts},
                     key=default_sort_key)
    names: dict[Expr, str] = {}
    computed = [f for f in factors if f != 1 and not isinstance(f, Indexed)]
    replacements, reduced = _common_subexpressions(computed)
    if computed:
        body.emit("# input factors a_m(x, l, h) of the separated q")
    for symbol, value in replacements:
        body.emit(f"{symbol} = {body.code(value)}")
        body.names[symbol] = str(symbol)
    for number, (factor, value) in enumerate(zip(computed, reduced), 1):
        body.emit(f"a_{number} = {body.code(value)}")
        names[factor] = f"a_{number}"
    for factor in factors:
        if factor == 1:
            # a batch-independent factor: one row suffices, the result broadcasts
            body.emit("ones = xp.ones_like(x[:1, ...])")
            names[factor] = "ones"
        elif isinstance(factor, Indexed):
            names[factor] = body.code(factor)
    return names


def takes_output(derivation: Derivation) -> bool:
    """Whether the rule's one denominator is the layer's output z_j = sum_i x_i w_ij + b_j
    (LRP-epsilon, the bias neuron): its kernel then accepts ``z``, the output from the forward
    pass, and skips computing it again."""
    derivation = _sympified(derivation)
    if len(derivation.terms) != 1:
        return False
    (term,) = derivation.terms
    try:
        parts = [(*split_scalar(part.factor), part.transform) for part in separate(term.q)]
    except CodegenError:
        return False
    return parts == [(S.One, x[i], "identity")] and term.bias_share == b[j]


def _emit_term(body: KernelBody, k: int, term, parts, factor_names,
               output: bool = False) -> None:
    """Term k's denominator and s_k; ``output``: d_k is the layer's output z_j, taken from the
    argument ``z`` when the caller passes it (the same sum, so the same values)."""
    derivation = body.derivation
    body.emit(f"# term {k}: q = {sstr(term.q)}")
    start = len(body.lines)
    denominator = S.Zero
    for scalar, array, transform in parts:
        key = (factor_names[array], transform)
        if key not in body.forwards:
            symbol = Symbol(f"z_{len(body.forwards) + 1}")
            body.emit(f"{symbol} = op.forward({key[0]}, {transform!r})")
            body.forwards[key] = symbol
            body.names[symbol] = str(symbol)
            if len(body.forwards) == 1:  # check the layer's output shape once
                batch = "" if key[0] != "ones" else "[1:]"
                body.emit(f"if {symbol}.shape{batch} != relevance_out.shape{batch}:")
                body.emit("    raise ShapeError(f\"relevance_out has shape {relevance_out.shape}, "
                          f"the layer output {{{symbol}.shape}}\")")
        denominator += scalar * body.forwards[key]
    bias_share = term.bias_share.subs(b[j], _BIAS)
    if bias_share != 0:
        if _BIAS not in body.names:
            body.emit(f"bias = op.bias_like({body.code(next(iter(body.forwards.values())))})")
            body.names[_BIAS] = "bias"
        denominator += bias_share
    body.emit(f"d_{k} = {body.code(denominator)}")
    if output:  # the statements above run only without the forward pass's z
        computed = body.lines[start:]
        body.lines[start:] = [
            "if z is None:", *("    " + line for line in computed),
            "else:",
            "    z = kernel_runtime.like(z, x)",
            "    if z.shape != relevance_out.shape:",
            "        raise ShapeError(f\"relevance_out has shape {relevance_out.shape}, z {z.shape}\")",
            f"    d_{k} = z",
        ]
    body.emit(f"if shares[{k - 1}] is not None:")
    body.emit(f"    d_{k} = d_{k} + op.bias_like(d_{k}, shares[{k - 1}])")
    if derivation.stabiliser != 0:
        body.emit(f"d_{k} = kernel_runtime.sign_stabilised(d_{k}, "
                  f"{body.code(derivation.stabiliser)})")
    numerator = body.code(term.coefficient * _RELEVANCE_OUT)
    body.emit(f"s_{k} = kernel_runtime.stabilised_ratio({numerator}, d_{k}, eps, stabilise, "
              f"RULE, {k})")


def _emit_backward(body: KernelBody, separated, factor_names) -> None:
    """R_in = sum_f f * sum_g op.transpose(sum_k c_{k,f,g} s_k, g)."""
    upper: dict[tuple[str, str], Expr] = {}
    for k, parts in enumerate(separated, 1):
        for scalar, array, transform in parts:
            key = (factor_names[array], transform)
            upper[key] = upper.get(key, S.Zero) + scalar * Symbol(f"s_{k}")
    by_factor: dict[str, list[str]] = {}
    for (factor, transform), signal in upper.items():
        names = {s: str(s) for s in signal.free_symbols}
        names.update(body.names)
        call = f"op.transpose({print_array_api(simplify(signal), names)}, {transform!r})"
        by_factor.setdefault(factor, []).append(call)
    body.emit("# one backward pass, transposes grouped by (input factor, weight transform)")
    pieces = []
    for factor, calls in by_factor.items():
        total = " + ".join(calls)
        if factor == "ones":
            pieces.append(total)
        else:
            pieces.append(f"{factor}*({total})" if len(calls) > 1 else f"{factor}*{total}")
    body.emit("relevance_in = " + " + ".join(pieces))
    body.emit("return relevance_in")


def _uses_bounds(derivation: Derivation) -> list[str]:
    used = set()
    for term in derivation.terms:
        for a in term.q.atoms(Indexed):
            if a.base in (l, h):
                used.add(a.base)
    return [ARRAY_NAMES[base] for base in (l, h) if base in used]


def _domain_name(derivation: Derivation) -> str:
    """The input domain the rule is derived for ("R^n", "orthant", "box"), written into the kernel
    so that the engine can refuse inputs outside it; R^n when the derivation declares none."""
    return derivation.domain.name if derivation.domain is not None else "R^n"


def _signature(derivation: Derivation) -> str:
    parameters = "".join(f"{p}={float(derivation.defaults[p])!r}, " for p in derivation.parameters)
    output = ", z=None" if takes_output(derivation) else ""
    return (f"relevance(op, x, relevance_out, *, {parameters}lower=None, upper=None, eps=1e-06, "
            f"stabilise=\"zero\", bias_shares=None{output})")


def kernel_signature(derivation: Derivation) -> str:
    """The generated ``relevance`` signature of a ratio rule (for docs)."""
    return _signature(derivation)


def _rule_lines(derivation: Derivation, separated) -> list[str]:
    lines = []
    for k, (term, parts) in enumerate(zip(derivation.terms, separated), 1):
        lines.append(f"term {k}: a = {sstr(term.coefficient)}, q = {sstr(term.q)}, "
                     f"s = {sstr(term.bias_share)}")
        pieces = [f"({sstr(scalar * array)}) * {transform}(w)" for scalar, array, transform in parts]
        lines.append("        q = " + " + ".join(pieces))
    if derivation.stabiliser != 0:
        lines.append(f"rule stabiliser: d + {sstr(derivation.stabiliser)} sign(d), sign(0) = +1")
    return lines


def parameter_doc(derivation: Derivation) -> str:
    docs = []
    for p in derivation.parameters:
        docs.append(f"{p} : float, default {float(derivation.defaults[p])!r}\n"
                    f"    The rule parameter {p}.")
    return "\n".join(docs)


_KERNEL_DOC = '''\
"""R_i = sum_j sum_k a_k q^(k)_ij / stab(d_k) R_j for one layer, vectorised over the batch.

Parameters
----------
op : LinearOperator
    The layer's linear part: forward(a, g), transpose(s, g), bias_like(z[, g]).
x : array
    Layer input batch: a NumPy, PyTorch or CuPy array (any array-API array whose namespace
    array_api_compat knows); ``op`` must be an operator of the same backend.
relevance_out : array
    Upper relevance R_j, the shape of the layer output.
{parameters}lower, upper : ndarray, optional
    Box bounds l <= x <= h, broadcastable to x.{bounds_note}
eps, stabilise : float, {{"zero", "everywhere"}}, default 1e-06, "zero"
    The stabiliser convention, stated once in lrp_num.engine.kernel_runtime.
bias_shares : sequence of (str or None), optional
    One entry per term ({n_terms} here): a weight-transform name g adds g(b_j) to that
    term's denominator (a convention such as zennit's b^+: "positive"); None adds nothing.
{output_doc}
Returns
-------
array
    Relevance R_i of the layer input, the shape, type, device and dtype of x.

Raises
------
ZeroDenominatorError, KernelArgumentError
    See lrp_num.engine.kernel_runtime: a zero denominator with eps = 0 where relevance arrives;
    missing box bounds, an unknown stabilise mode, or malformed bias_shares.
"""
'''


_OUTPUT_DOC = """\
z : array, optional
    The layer's output z_j = sum_i x_i w_ij + b_j from the forward pass, the shape of
    relevance_out: this rule's denominator, so the kernel skips computing it again (the same
    sum, so the same relevance); None computes it from op.
"""


def _sympified(derivation: Derivation) -> Derivation:
    """A copy whose terms and stabiliser are SymPy objects (declarations may use plain ints)."""
    terms = [RatioTerm(sympify(t.coefficient), sympify(t.q), sympify(t.bias_share))
             for t in derivation.terms]
    return dataclasses.replace(derivation, terms=terms, stabiliser=sympify(derivation.stabiliser))


def emit_ratio_kernel(derivation: Derivation, header: str) -> str:
    """The source of ``lrp_num/_generated/<rule>.py`` for a ratio rule ``derivation``."""
    derivation = _sympified(derivation)
    if not derivation.name.isidentifier() or keyword.iskeyword(derivation.name):
        raise CodegenError(f"rule name {derivation.name!r} is not a Python identifier")
    _check_parameter_names(derivation)
    parameters = set(derivation.parameters)
    for k, term in enumerate(derivation.terms, 1):
        check_scalar(derivation, f"the coefficient of term {k}", term.coefficient, parameters)
        check_scalar(derivation, f"the bias share of term {k}",
                      term.bias_share.subs(b[j], _BIAS), parameters | {_BIAS})
    check_scalar(derivation, "the stabiliser", derivation.stabiliser, parameters)
    separated = _separated_terms(derivation)

    body = KernelBody(derivation)
    body.emit("x = kernel_runtime.as_float(x)")
    body.emit(NAMESPACE_LINE)
    body.emit("relevance_out = kernel_runtime.like(relevance_out, x)")
    body.emit("shares = kernel_runtime.bias_shares(bias_shares, RULE, N_TERMS)")
    bounds = _uses_bounds(derivation)
    for name in bounds:
        body.emit(f"{name} = kernel_runtime.batch_shaped("
                  f"kernel_runtime.box_bound({name}, {name!r}, x, RULE), x)")
    factor_names = emit_input_factors(body, separated)
    output = takes_output(derivation)
    for k, (term, parts) in enumerate(zip(derivation.terms, separated), 1):
        _emit_term(body, k, term, parts, factor_names, output)
    _emit_backward(body, separated, factor_names)
    body.drop_unused_namespace()

    bounds_note = (" Required by this rule." if bounds else " Not used by this rule.")
    doc = _KERNEL_DOC.format(parameters=parameter_doc(derivation) + "\n"
                             if derivation.parameters else "",
                             bounds_note=bounds_note, n_terms=len(derivation.terms),
                             output_doc=_OUTPUT_DOC if output else "")
    module_doc = "\n".join([
        f'"""{derivation.title}: generated relevance kernel (rule {derivation.name!r}).',
        "",
        derivation.paper,
        "",
        "Rule for layer input i and output j, d_k = sum_i' q^(k)_i'j + s_k:",
        "",
        "    R_i = sum_j sum_k a_k q^(k)_ij / stab(d_k) R_j",
        "",
        *("    " + line for line in _rule_lines(derivation, separated)),
        "",
        "Denominators are stabilised by lrp_num.engine.kernel_runtime (its docstring states the",
        "convention): stabilise=\"zero\" (default, exact) replaces only d == 0 by +eps,",
        "stabilise=\"everywhere\" uses d + eps sign(d) with sign(0) = +1.",
        '"""',
    ])
    constants = [
        f"RULE = {derivation.name!r}",
        "PARAMETERS = {" + ", ".join(f"{str(p)!r}: {float(derivation.defaults[p])!r}"
                                     for p in derivation.parameters) + "}",
        f"BOUNDS = {tuple(bounds)!r}",
        f"N_TERMS = {len(derivation.terms)}",
        f"DOMAIN = {_domain_name(derivation)!r}",
        f"NEURON = {derivation.neuron!r}",
        f"Z_SIGN = {derivation.z_sign!r}",
    ]
    function = [f"def {_signature(derivation)}:",
                textwrap.indent(doc, "    ").rstrip("\n"),
                *("    " + line if line else "" for line in body.lines)]
    return "\n".join([
        header.rstrip("\n"),
        module_doc,
        "",
        RUNTIME_IMPORT,
        "from lrp_num.errors import ShapeError",
        "",
        *constants,
        "",
        "",
        *function,
    ]) + "\n"
