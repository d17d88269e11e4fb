"""The one SymPy printer of the generator: NumPy code, strict, branch-free, deterministic.

It subclasses SymPy's ``NumPyPrinter`` and overrides only what must differ for kernels:

* ``Max``/``Min`` print as nested ``numpy.maximum``/``numpy.minimum`` (SymPy prints
  ``functools.reduce``);
* ``Heaviside(x, H0)`` prints as ``numpy.heaviside(x, H0)`` with SymPy's own value at 0
  (SymPy prints ``numpy.select``, which evaluates every branch);
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


class KernelPrinter(NumPyPrinter):
    """NumPy printer for generated kernels.

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

    def _nested(self, function: str, args) -> str:
        printed = [self._print(arg) for arg in args]
        text = printed[0]
        for other in printed[1:]:
            text = f"{self._module}.{function}({text}, {other})"
        return text

    def _print_Max(self, expr: Expr) -> str:
        return self._nested("maximum", expr.args)

    def _print_Min(self, expr: Expr) -> str:
        return self._nested("minimum", expr.args)

    def _print_Heaviside(self, expr: Expr) -> str:
        value_at_zero = expr.args[1] if len(expr.args) > 1 else S.Half
        return (f"{self._module}.heaviside({self._print(expr.args[0])}, "
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
        raise CodegenError(f"no NumPy spelling for {expr} ({type(expr).__name__})")


def print_numpy(expr: Expr, names: dict | None = None) -> str:
    """Print ``expr`` as NumPy code (see :class:`KernelPrinter`)."""
    try:
        return KernelPrinter(names).doprint(expr)
    except CodegenError:
        raise
    except Exception as error:  # SymPy's PrintMethodNotImplementedError and friends
        raise CodegenError(f"cannot print {expr}: {error}") from error
