"""The one SymPy printer of the generator: array-API code, strict, branch-free, deterministic.

Kernels are printed against the Python array API standard (https://data-apis.org/array-api/):
every array function is called on ``xp``, the namespace the kernel takes from its inputs
(``kernel_runtime.namespace``), so one kernel runs on NumPy, PyTorch and CuPy arrays alike.
The printer subclasses SymPy's ``NumPyPrinter`` and overrides only what must differ:

* a NumPy function prints as ``xp.<name>`` when the standard has it, and is an error otherwise;
* ``Max``/``Min`` print as nested ``xp.maximum``/``xp.minimum``, a number among the arguments
  as ``xp.clip(..., min=c)``/``max=c`` (SymPy prints ``functools.reduce``);
* ``Heaviside(x, H0)`` prints as ``kernel_runtime.heaviside(x, H0)`` with SymPy's own value at 0
  (SymPy prints ``numpy.select``, which evaluates every branch; the standard has no heaviside);
* ``Piecewise`` is refused: kernels are branch-free;
* a negative integer power prints as a division;
* ``Indexed`` quantities print as the kernel's array names (``x[i]`` -> ``x``), and an indexed
  quantity without a name is an error.

Unknown functions are errors (SymPy's ``strict`` setting), never partially printed code.
"""

from __future__ import annotations

from sympy import Expr, Indexed, Pow, S, Symbol
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.precedence import PRECEDENCE

from lrp_sym.codegen.errors import CodegenError

#: the name of the array namespace inside a generated function
NAMESPACE = "xp"
#: elementwise functions of the array API standard (2023.12) that SymPy's NumPy printer may name
STANDARD_FUNCTIONS = frozenset({
    "abs", "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "clip", "cos",
    "cosh", "exp", "expm1", "floor", "hypot", "log", "log1p", "log2", "log10", "maximum",
    "minimum", "pow", "round", "sign", "sin", "sinh", "sqrt", "square", "tan", "tanh", "trunc",
    "e", "inf", "nan", "pi",  # the standard's constants
})


class KernelPrinter(NumPyPrinter):
    """Array-API printer for generated kernels (functions on the namespace ``xp``).

    Parameters
    ----------
    names : dict
        Array name of each indexed base (``{x: "x", l: "lower"}``) and of each Symbol whose
        printed name differs from its SymPy name.
    """

    printmethod = "_lrpkernelcode"

    def __init__(self, names: dict | None = None) -> None:
        super().__init__({"fully_qualified_modules": True, "strict": True,
                          "allow_unknown_functions": False})
        self._names = dict(names or {})

    def _module_format(self, fqn: str, register: bool = True) -> str:
        module, _, name = fqn.rpartition(".")
        if module != "numpy" or name not in STANDARD_FUNCTIONS:
            raise CodegenError(f"{fqn} is not a function of the array API standard")
        return f"{NAMESPACE}.{name}"

    def _nested(self, function: str, bound: str, args) -> str:
        numbers = [arg for arg in args if arg.is_number]
        arrays = [self._print(arg) for arg in args if not arg.is_number]
        if not arrays or len(numbers) > 1:  # SymPy evaluates Max(2, 3) and Max(0, 1, x) itself
            raise CodegenError(f"{function} of {len(numbers)} numbers has no array-API spelling")
        text = arrays[0]
        for other in arrays[1:]:
            text = f"{NAMESPACE}.{function}({text}, {other})"
        if numbers:  # the standard's clip takes a Python scalar bound
            text = f"{NAMESPACE}.clip({text}, {bound}={self._print(numbers[0])})"
        return text

    def _print_Max(self, expr: Expr) -> str:
        return self._nested("maximum", "min", expr.args)

    def _print_Min(self, expr: Expr) -> str:
        return self._nested("minimum", "max", expr.args)

    def _print_Heaviside(self, expr: Expr) -> str:
        value_at_zero = expr.args[1] if len(expr.args) > 1 else S.Half
        return (f"kernel_runtime.heaviside({self._print(expr.args[0])}, "
                f"{self._print(value_at_zero)})")

    def _print_Piecewise(self, expr: Expr) -> str:
        raise CodegenError(f"Piecewise cannot be printed branch-free: {expr}")

    def _print_Pow(self, expr: Expr, rational: bool = False) -> str:
        if expr.exp.is_integer and expr.exp.is_negative:
            denominator = Pow(expr.base, -expr.exp)
            return f"1/{self.parenthesize(denominator, PRECEDENCE['Mul'] + 1)}"
        return super()._print_Pow(expr, rational=rational)

    def _print_Indexed(self, expr: Indexed) -> str:
        name = self._names.get(expr.base)
        if name is None:
            raise CodegenError(f"{expr} has no array in the generated code")
        return name

    def _print_Symbol(self, expr: Symbol) -> str:
        return self._names.get(expr, super()._print_Symbol(expr))

    def _print_not_supported(self, expr: Expr) -> str:
        raise CodegenError(f"no array-API spelling for {expr} ({type(expr).__name__})")


def print_array_api(expr: Expr, names: dict | None = None) -> str:
    """Print ``expr`` as array-API code on the namespace ``xp`` (see :class:`KernelPrinter`)."""
    try:
        return KernelPrinter(names).doprint(expr)
    except CodegenError:
        raise
    except Exception as error:  # SymPy's PrintMethodNotImplementedError and friends
        raise CodegenError(f"cannot print {expr}: {error}") from error
