"""Emitting the kernels of the attention derivations: softmax, products, matrix products.

Each kernel works on whole arrays (array-API code on ``xp``), not through a linear operator:

* ``softmax`` -> ``softmax.py``: ``relevance(x, relevance_out, *, axis=-1)`` printed from
  ``results["relevance"]`` (in x_i, s_i, R_i and T = sum_j R_j over the softmax axis);
* ``product_uniform`` -> ``product_uniform.py``: ``relevance(a, b, relevance_out)`` returning
  ``(share_first R, share_second R)`` from ``results["share_first"]``/``["share_second"]``;
* ``matmul_epsilon`` -> ``matmul_epsilon.py``: ``relevance(a, b, relevance_out, *, epsilon,
  transpose_b=False)``: rho = ``results["ratio"]`` (R / stab(C)), then each factor's share of
  a_ik b_kj rho_ij collected by one matrix product per factor;
* ``matmul_cp`` -> ``matmul_cp.py``: the same printer and signature, one factor held constant
  (``results["held"]``, exported as ``HELD``): the held factor's relevance zero (its derived
  share is 0).

The softmax along the axis is computed with its maximum subtracted (the same function,
exp(x - max) / sum exp(x - max), without overflow).
"""

from __future__ import annotations

from sympy import Expr, Symbol, sstr, sympify

from lrp_sym.codegen.errors import CodegenError
from lrp_sym.codegen.module_text import RUNTIME_IMPORT, module_head
from lrp_sym.codegen.printer import print_array_api
from lrp_sym.derivation import Derivation

#: derivation name -> generated module
ATTENTION_KERNELS = {"softmax": "softmax", "product_uniform": "product_uniform",
                     "matmul_epsilon": "matmul_epsilon", "matmul_cp": "matmul_cp"}


def _result(derivation: Derivation, key: str) -> Expr:
    try:
        return sympify(derivation.results[key])
    except KeyError:
        raise CodegenError(f"derivation {derivation.name!r} has no results[{key!r}]") from None


def _only(derivation: Derivation, key: str, expr: Expr, allowed: set[str]) -> None:
    found = {str(a) for a in expr.free_symbols}
    found -= {"i", "j", "k"}
    stray = sorted(found - allowed)
    if stray:
        raise CodegenError(f"{derivation.name}: results[{key!r}] = {expr} has unexpected "
                           f"symbols {', '.join(stray)}")


def _head(derivation: Derivation, header: str, lines: list[str],
          imports: tuple[str, ...] = (RUNTIME_IMPORT,)) -> list[str]:
    return [*module_head(derivation, header, " (generated).", lines, imports), ""]


#: the imports of a kernel that checks the shape of a forward quantity it is given
_CHECKING_IMPORTS = (RUNTIME_IMPORT, "from lrp_num.errors import ShapeError")


def emit_softmax(derivation: Derivation, header: str) -> str:
    from lrp_sym.attention import s
    from lrp_sym.symbols import R, x

    rule = _result(derivation, "relevance")
    total = Symbol("T")
    _only(derivation, "relevance", rule, {"x", "s", "R", "T", "x[i]", "s[i]", "R[i]"})
    code = print_array_api(rule, {x: "x", s: "s", R: "relevance_out", total: "total"})
    return "\n".join([
        *_head(derivation, header, [
            "For logits x along one axis, s = softmax(x) and the relevance R of s:",
            "",
            f"    R_i = {sstr(rule)},   T = sum_j R_j",
            "",
            "Not conservative: the bias of the tangent plane absorbs sum_j R_j (1 - x_j + sum_k s_k x_k)",
            "(docs/rules/softmax.md).",
        ], _CHECKING_IMPORTS),
        "RULE = 'softmax'",
        "PARAMETERS = {}",
        "NEURON = 'softmax'",
        "",
        "",
        "def softmax(x, axis=-1):",
        '    """s = exp(x) / sum exp(x) along ``axis`` (the maximum subtracted first)."""',
        "    xp = kernel_runtime.namespace(x)",
        "    shifted = xp.exp(x - xp.max(x, axis=axis, keepdims=True))",
        "    return shifted / xp.sum(shifted, axis=axis, keepdims=True)",
        "",
        "",
        "def relevance(x, relevance_out, *, axis=-1, s=None):",
        '    """Relevance of the logits x (any shape) from the relevance of softmax(x, axis).',
        "",
        "    Array-API code: x may be a NumPy, PyTorch or CuPy array; relevance_out has x's shape.",
        "    s: softmax(x, axis) from the forward pass, x's shape (None: computed here; given, the",
        "    kernel skips that recomputation).",
        '    """',
        "    x = kernel_runtime.as_float(x)",
        "    xp = kernel_runtime.namespace(x)",
        "    relevance_out = kernel_runtime.like(relevance_out, x)",
        "    if s is None:",
        "        s = softmax(x, axis)",
        "    else:",
        "        s = kernel_runtime.like(s, x)",
        "        if tuple(s.shape) != tuple(x.shape):",
        "            raise ShapeError(f\"s has shape {tuple(s.shape)}, the logits {tuple(x.shape)}\")",
        "    total = xp.sum(relevance_out, axis=axis, keepdims=True)",
        f"    return {code}",
    ]) + "\n"


def _shares(derivation: Derivation) -> tuple[str, str, Expr, Expr]:
    share_a, share_b = _result(derivation, "share_first"), _result(derivation, "share_second")
    for key, share in (("share_first", share_a), ("share_second", share_b)):
        if share.free_symbols:
            raise CodegenError(f"{derivation.name}: results[{key!r}] = {share} must be a number "
                               "(the uniform rule's share does not depend on the factors)")
    return print_array_api(share_a), print_array_api(share_b), share_a, share_b


def emit_product(derivation: Derivation, header: str) -> str:
    code_a, code_b, share_a, share_b = _shares(derivation)
    return "\n".join([
        *_head(derivation, header, [
            "For y = a * b (element-wise, one shape) and the relevance R of y:",
            "",
            f"    R_a = {sstr(share_a)} R,   R_b = {sstr(share_b)} R",
        ]),
        "RULE = 'product_uniform'",
        "PARAMETERS = {}",
        "NEURON = 'product'",
        "",
        "",
        "def relevance(a, b, relevance_out):",
        '    """(R_a, R_b) for the element-wise product a * b; every array has one shape."""',
        "    a = kernel_runtime.as_float(a)",
        "    relevance_out = kernel_runtime.like(relevance_out, a)",
        f"    share_first = {code_a}",
        f"    share_second = {code_b}",
        "    return share_first * relevance_out, share_second * relevance_out",
    ]) + "\n"


def _held(derivation: Derivation, share_a: Expr, share_b: Expr) -> str | None:
    """The factor the derivation holds constant (``results["held"]``), None for none; its derived
    share must be 0."""
    held = derivation.results.get("held")
    if held is None:
        return None
    if held not in ("first", "second"):
        raise CodegenError(f"{derivation.name}: results['held'] must be 'first' or 'second', got {held!r}")
    if (share_a if held == "first" else share_b) != 0:
        raise CodegenError(f"{derivation.name}: the held ({held}) factor's share must be 0, got "
                           f"{share_a if held == 'first' else share_b}")
    return held


def emit_matmul(derivation: Derivation, header: str) -> str:
    """The kernel of a matrix product: LRP-epsilon on the sum over k, then each factor's derived
    share of a_ik b_kj rho_ij by one matrix product; a factor held constant (``results["held"]``,
    exported as ``HELD``; its derived share 0) receives zeros."""
    from lrp_sym.attention import C, R_out

    code_a, code_b, share_a, share_b = _shares(derivation)
    held = _held(derivation, share_a, share_b)
    ratio = _result(derivation, "ratio")
    _only(derivation, "ratio", ratio, {"R", "C"})
    numerator = (ratio * C).simplify()
    if numerator.has(C):
        raise CodegenError(f"{derivation.name}: results['ratio'] = {ratio} is not (numerator) / C")
    numerator_code = print_array_api(numerator, {R_out: "relevance_out"})
    default = {str(k): float(v) for k, v in derivation.defaults.items()}.get("epsilon")
    if default is None:
        raise CodegenError(f"{derivation.name}: no default for epsilon")
    to_a = "A * (rho B^T)"
    to_b = "B * (A^T rho)"
    formula_a = "0" if held == "first" else f"{sstr(share_a)} {to_a}"
    formula_b = "0" if held == "second" else f"{sstr(share_b)} {to_b}"
    body_a = ["    relevance_a = xp.zeros_like(a)"] if held == "first" else [
        f"    share_first = {code_a}",
        "    relevance_a = share_first * a * xp.matmul(rho, xp.matrix_transpose(right))"]
    body_b = ["    relevance_right = xp.zeros_like(right)"] if held == "second" else [
        f"    share_second = {code_b}",
        "    relevance_right = share_second * right * xp.matmul(xp.matrix_transpose(a), rho)"]
    if held is None:
        intro = ["For C = A B (batched over leading axes; B transposed first with transpose_b) and",
                 "the relevance R of C: rho = R / (C + epsilon sign C) (sign(0) = +1), then"]
        summary = "(R_a, R_b) for the matrix product a @ b (a @ b^T with transpose_b)."
        constants = []
    else:
        intro = [f"For C = A B with the {held} factor held constant (batched over leading axes; B",
                 "transposed first with transpose_b) and the relevance R of C:",
                 "rho = R / (C + epsilon sign C) (sign(0) = +1), then"]
        summary = (f"(R_a, R_b) for the matrix product a @ b (a @ b^T with transpose_b), the {held} factor\n"
                   "    held constant (its relevance zero).")
        constants = [f"HELD = {held!r}"]
    return "\n".join([
        *_head(derivation, header, [
            *intro,
            "",
            f"    R_A = {formula_a},   R_B = {formula_b}",
            "",
            f"Absorbed: epsilon / (|C_ij| + epsilon) R_ij per entry (docs/rules/{derivation.name}.md).",
        ], _CHECKING_IMPORTS),
        f"RULE = {derivation.name!r}",
        f"PARAMETERS = {{'epsilon': {default!r}}}",
        "NEURON = 'matmul'",
        *constants,
        "",
        "",
        f"def relevance(a, b, relevance_out, *, epsilon={default!r}, transpose_b=False, product=None):",
        f'    """{summary}',
        "",
        "    a (..., p, q), b (..., q, r) or (..., r, q), relevance_out (..., p, r); array-API code.",
        "    product: C = a @ b (a @ b^T) from the forward pass, relevance_out's shape (None:",
        "    computed here; given, the kernel skips that recomputation).",
        '    """',
        "    a = kernel_runtime.as_float(a)",
        "    xp = kernel_runtime.namespace(a)",
        "    b = kernel_runtime.like(b, a)",
        "    relevance_out = kernel_runtime.like(relevance_out, a)",
        "    right = xp.matrix_transpose(b) if transpose_b else b",
        "    if product is None:",
        "        product = xp.matmul(a, right)",
        "    else:",
        "        product = kernel_runtime.like(product, a)",
        "        if tuple(product.shape) != tuple(relevance_out.shape):",
        "            raise ShapeError(f\"product has shape {tuple(product.shape)}, relevance_out \"",
        "                             f\"{tuple(relevance_out.shape)}\")",
        "    # rho = R / (C + epsilon sign C); epsilon = 0 with C = 0 and R != 0 is an error",
        f"    rho = kernel_runtime.stabilised_ratio({numerator_code}, product, epsilon,",
        "                                          'everywhere', RULE, 1)",
        *body_a,
        *body_b,
        "    return relevance_a, (xp.matrix_transpose(relevance_right) if transpose_b else relevance_right)",
    ]) + "\n"


EMITTERS = {"softmax": emit_softmax, "product_uniform": emit_product,
            "matmul_epsilon": emit_matmul, "matmul_cp": emit_matmul}

__all__ = ["ATTENTION_KERNELS", "EMITTERS", "emit_matmul", "emit_product", "emit_softmax"]
