"""Input domains of a neuron: R^n, the non-negative orthant, and a box l <= x <= h.

A domain says two things about one coordinate: which inequalities e >= 0 a point's coordinate e
must satisfy (used to find where the root point lies in the domain), and how to write a point of
the domain with free symbols whose SymPy assumptions encode membership (used to prove positivity).
For the box, x_i = l_i + s_i and h_i = l_i + s_i + r_i with s_i, r_i >= 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from sympy import Expr, Symbol

from lrp_sym.symbols import h, i, l, x


@dataclass(frozen=True)
class Domain:
    """An input domain, coordinate by coordinate.

    Attributes
    ----------
    name : str
        Short name used on the command line and in docs.
    latex : str
        The domain as LaTeX.
    """

    name: str
    latex: str

    def membership(self, coordinate: Expr) -> list[Expr]:
        """Return expressions e_k with ``coordinate`` in the domain iff all e_k >= 0."""
        raise NotImplementedError

    def parameterization(self, strict: bool = False) -> dict[Expr, Expr]:
        """Substitution writing x_i (and l_i, h_i) as a point of the domain.

        With ``strict`` the free symbols are positive instead of non-negative: an interior point,
        where the membership inequalities are tight only at the solved bound.
        """
        raise NotImplementedError


class RealSpace(Domain):
    """The unconstrained input space R^n."""

    def __init__(self) -> None:
        super().__init__("R^n", r"\mathbb{R}^n")

    def membership(self, coordinate: Expr) -> list[Expr]:
        return []

    def parameterization(self, strict: bool = False) -> dict[Expr, Expr]:
        return {x[i]: Symbol("X", real=True)}


class Orthant(Domain):
    """The non-negative orthant x_i >= 0 (the output of a ReLU layer)."""

    def __init__(self) -> None:
        super().__init__("orthant", r"\mathbb{R}_{\geq 0}^n")

    def membership(self, coordinate: Expr) -> list[Expr]:
        return [coordinate]

    def parameterization(self, strict: bool = False) -> dict[Expr, Expr]:
        return {x[i]: Symbol("X", positive=True) if strict else Symbol("X", nonnegative=True)}


class Box(Domain):
    """The box l_i <= x_i <= h_i (for example pixel intensities)."""

    def __init__(self) -> None:
        super().__init__("box", r"\{x : l_i \leq x_i \leq h_i\}")

    def membership(self, coordinate: Expr) -> list[Expr]:
        return [coordinate - l[i], h[i] - coordinate]

    def parameterization(self, strict: bool = False) -> dict[Expr, Expr]:
        kind = {"positive": True} if strict else {"nonnegative": True}
        lower = Symbol("L", real=True)
        above_lower = Symbol("S", **kind)
        below_upper = Symbol("Q", **kind)
        return {x[i]: lower + above_lower, l[i]: lower, h[i]: lower + above_lower + below_upper}


REAL_SPACE = RealSpace()
ORTHANT = Orthant()
BOX = Box()
DOMAINS = {domain.name: domain for domain in (REAL_SPACE, ORTHANT, BOX)}
