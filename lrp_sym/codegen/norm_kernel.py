"""Emitting the kernels of normalisation rules (``neuron == "norm"``): LayerNorm and RMSNorm over
the last axis.

For each norm the derivation's results hold ``mean_<norm>``, ``sigma_<norm>`` (in the symbol mu),
``output_<norm>`` (y_j) and ``relevance_<norm>`` (R_i, with sums over the features). A sum over
the features prints as ``xp.sum(..., axis=-1, keepdims=True)``, n as ``x.shape[-1]``; the
relevance model's c_j = R_j / y_j is formed by the one stabiliser,
``kernel_runtime.stabilised_ratio``.
"""

from __future__ import annotations

from sympy import Expr, Sum, sstr

from lrp_sym.codegen.elementwise_kernel import ElementwisePrinter
from lrp_sym.codegen.errors import CodegenError
from lrp_sym.codegen.module_text import RUNTIME_IMPORT, module_head, prune_unused
from lrp_sym.derivation import Derivation
from lrp_sym.normalization import MU, NORMS, SIGMA, norm_beta, norm_c, norm_eps, norm_gamma
from lrp_sym.symbols import n, x

#: the array (or local) name of each symbol in a norm kernel
NAMES = {x: "x", norm_gamma: "weight", norm_beta: "bias", norm_c: "c", MU: "mean",
         SIGMA: "sigma", norm_eps: "norm_eps", n: "n"}


class FeaturePrinter(ElementwisePrinter):
    """Sums over the features (the last axis) as ``xp.sum(..., axis=-1, keepdims=True)``."""

    def _print_Sum(self, expr: Sum) -> str:
        if len(expr.limits) != 1 or expr.limits[0][1:] != (1, n):
            raise CodegenError(f"only sums over the n features print: {expr}")
        return f"xp.sum({self._print(expr.function)}, axis=-1, keepdims=True)"


def _print(expr: Expr) -> str:
    try:
        return FeaturePrinter(NAMES).doprint(expr)
    except CodegenError:
        raise
    except Exception as error:
        raise CodegenError(f"cannot print {expr}: {error}") from error


def _norm_function(derivation: Derivation, norm: str) -> list[str]:
    results = derivation.results
    try:
        mean, sigma, output, relevance = (results[f"{key}_{norm}"]
                                          for key in ("mean", "sigma", "output", "relevance"))
    except KeyError as error:
        raise CodegenError(f"{derivation.name}: no results {error} for {norm}") from None
    body = [
        "    xp = kernel_runtime.namespace(x)",
        "    n = x.shape[-1]",
        f"    mean = {_print(mean)}",
        f"    sigma = {_print(sigma)}",
        "    if y is None:",
        f"        y = {_print(output)}",
        "    c = kernel_runtime.stabilised_ratio(relevance_out, y, eps, stabilise, RULE, 1)",
        f"    return {_print(relevance)}",
    ]
    return [
        f"def relevance_{norm}(x, weight, bias, norm_eps, relevance_out, eps, stabilise, y=None):",
        f'    """R_i = {sstr(relevance)} for {norm} over the last axis.',
        "",
        "    y: the norm's output from the forward pass (None: computed here from x).",
        '    """',
        *prune_unused(body),
    ]


def emit_norm_kernel(derivation: Derivation, header: str) -> str:
    """The source of a normalisation rule's kernel module."""
    functions: list[str] = []
    for norm in NORMS:
        functions += ["", "", *_norm_function(derivation, norm)]
    table = "NORMS = {" + ", ".join(f"{norm!r}: relevance_{norm}" for norm in NORMS) + "}"
    return "\n".join([
        *module_head(derivation, header, f": generated relevance kernel (rule {derivation.name!r}).", [
            "Normalisation over the last axis; c_j = R_j / stab(y_j) and, per norm,",
            "",
            *(f"    {norm}: R_i = {sstr(derivation.results[f'relevance_{norm}'])}" for norm in NORMS),
        ], (RUNTIME_IMPORT, "from lrp_num.errors import ShapeError, UnsupportedLayerError")),
        f"RULE = {derivation.name!r}",
        "PARAMETERS = {}",
        "BOUNDS = ()",
        "N_TERMS = 1",
        f"NEURON = {derivation.neuron!r}",
        *functions,
        "",
        "",
        table,
        "",
        "",
        "def relevance(op, x, relevance_out, eps=0.0, stabilise=\"zero\", *, y=None):",
        '    """Relevance of the input of ``op`` (op.norm, op.weight, op.bias, op.eps), any',
        "    leading shape, features on the last axis. eps and stabilise stabilise y_j as in",
        "    kernel_runtime.stabilised_ratio (eps = 0: a zero y_j with R_j != 0 raises",
        "    ZeroDenominatorError). y: the norm's output y_j from the forward pass, the shape",
        '    of x (None: computed here from x; given, the kernel skips that recomputation)."""',
        "    x = kernel_runtime.as_float(x)",
        "    function = NORMS.get(op.norm)",
        "    if function is None:",
        "        raise UnsupportedLayerError(f\"rule {RULE!r} has no kernel for the norm \"",
        "                                    f\"{op.norm!r}; known: {', '.join(NORMS)}\")",
        "    if y is not None and tuple(y.shape) != tuple(x.shape):",
        "        raise ShapeError(f\"y has shape {tuple(y.shape)}, the norm's input {tuple(x.shape)}\")",
        "    return function(x, kernel_runtime.like(op.weight, x), kernel_runtime.like(op.bias, x),",
        "                    op.eps, kernel_runtime.like(relevance_out, x), eps, stabilise,",
        "                    None if y is None else kernel_runtime.like(y, x))",
    ]) + "\n"


__all__ = ["FeaturePrinter", "NAMES", "emit_norm_kernel"]
