"""Emitting element-wise relevance kernels: R_in = rho(x) R_out, rho printed per activation.

A derivation with ``neuron == "pointwise"`` carries, for each activation name ``a`` in its
results, ``ratio_a`` (rho in the symbol x) and optionally ``ratio_numerator_a``,
``ratio_denominator_a`` and ``ratio_at_root_a`` (rho = numerator / denominator, and rho's limit
where the denominator vanishes). The module gets one function ``ratio_<a>(x)`` per activation,
printed with the array-API printer, and

    relevance(op, x, relevance_out)

which applies the ratio of ``op.activation``. Functions outside the array API standard that an
activation needs (the normal CDF of GELU) print as ``kernel_runtime`` functions.
"""

from __future__ import annotations

from sympy import Expr, Float, S, Symbol, sstr

from lrp_sym.codegen.errors import CodegenError
from lrp_sym.codegen.module_text import RUNTIME_IMPORT, module_head
from lrp_sym.codegen.printer import KernelPrinter
from lrp_sym.derivation import Derivation

_X = "x"


class ElementwisePrinter(KernelPrinter):
    """The kernel printer plus the special functions ``kernel_runtime`` provides."""

    def _print_normal_cdf(self, expr: Expr) -> str:
        return f"kernel_runtime.normal_cdf({self._print(expr.args[0])})"


def _print(expr: Expr) -> str:
    symbols = {s for s in expr.free_symbols if isinstance(s, Symbol)}
    stray = sorted(str(s) for s in symbols if s.name != _X)
    if stray:
        raise CodegenError(f"an element-wise ratio may depend only on x; {expr} contains "
                           f"{', '.join(stray)}")
    names = {s: _X for s in symbols}
    # irrational constants (sqrt(2), pi) as float literals: xp.sqrt(2) takes no Python number
    # in every array library
    expr = expr.replace(lambda e: e.is_number and not e.is_Rational,
                        lambda e: Float(e.evalf(17), 17))
    try:
        return ElementwisePrinter(names).doprint(expr)
    except CodegenError:
        raise
    except Exception as error:
        raise CodegenError(f"cannot print {expr}: {error}") from error


def activations_of(derivation: Derivation) -> list[str]:
    """The activation names with a ratio in ``derivation.results``, in declaration order."""
    return [key[len("ratio_"):] for key in derivation.results
            if key.startswith("ratio_") and not key.startswith(("ratio_numerator_",
                                                                "ratio_denominator_",
                                                                "ratio_at_root_"))]


def _ratio_function(derivation: Derivation, name: str) -> list[str]:
    results = derivation.results
    ratio = results[f"ratio_{name}"]
    lines = [f"def ratio_{name}(x):",
             f'    """rho(x) = {sstr(ratio)} for {name}, elementwise."""',
             "    xp = kernel_runtime.namespace(x)"]
    denominator = results.get(f"ratio_denominator_{name}", S.One)
    if ratio.is_number or not ratio.free_symbols:
        lines.append(f"    return xp.full_like(x, {float(ratio)!r})")
    elif denominator.is_number:
        lines.append(f"    return {_print(ratio)}")
    else:
        numerator = results[f"ratio_numerator_{name}"]
        at_root = results[f"ratio_at_root_{name}"]
        lines += [f"    denominator = {_print(denominator)}",
                  "    at_root = denominator == 0",
                  "    safe = xp.where(at_root, kernel_runtime.like(1, x), denominator)",
                  f"    return xp.where(at_root, kernel_runtime.like({float(at_root)!r}, x), "
                  f"({_print(numerator)}) / safe)"]
    if "xp." not in "\n".join(lines[3:]):
        lines.remove("    xp = kernel_runtime.namespace(x)")
    return lines


def emit_elementwise_kernel(derivation: Derivation, header: str) -> str:
    """The source of an element-wise rule's kernel module."""
    names = activations_of(derivation)
    if not names:
        raise CodegenError(f"{derivation.name}: an element-wise derivation needs results "
                           f"ratio_<activation>")
    functions: list[str] = []
    for name in names:
        functions += ["", "", *_ratio_function(derivation, name)]
    table = "RATIOS = {" + ", ".join(f"{name!r}: ratio_{name}" for name in names) + "}"
    rule_lines = [f"    {name}: rho = {sstr(derivation.results[f'ratio_{name}'])}"
                  for name in names]
    return "\n".join([
        *module_head(derivation, header, f": generated relevance kernel (rule {derivation.name!r}).", [
            "Element-wise: R_in = rho(x) R_out, x the nonlinearity's input, with",
            "",
            *rule_lines,
        ], (RUNTIME_IMPORT, "from lrp_num.errors import UnsupportedLayerError")),
        f"RULE = {derivation.name!r}",
        "PARAMETERS = {}",
        "BOUNDS = ()",
        "N_TERMS = 1",
        f"NEURON = {derivation.neuron!r}",
        f"ACTIVATIONS = {tuple(names)!r}",
        *functions,
        "",
        "",
        table,
        "",
        "",
        "def relevance(op, x, relevance_out):",
        '    """R_in = rho(x) R_out for the activation ``op.activation``, any shape.',
        "",
        "    Array-API code: x and relevance_out (the shape of x) may be NumPy, PyTorch or CuPy",
        "    arrays; the result has the shape, library and dtype of x.",
        '    """',
        "    x = kernel_runtime.as_float(x)",
        "    ratio = RATIOS.get(op.activation)",
        "    if ratio is None:",
        "        raise UnsupportedLayerError(f\"rule {RULE!r} has no ratio for the activation \"",
        "                                    f\"{op.activation!r}; known: {', '.join(RATIOS)}\")",
        "    return ratio(x) * kernel_runtime.like(relevance_out, x)",
    ]) + "\n"


__all__ = ["ElementwisePrinter", "activations_of", "emit_elementwise_kernel"]
