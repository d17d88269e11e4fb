"""Concrete layers for checking symbolic results at 50 digits.

A :class:`LayerInstance` fixes n and gives every symbol of the neuron a random exact rational
value drawn from the declared input domain. Expressions, sums included, are then evaluated with
mpmath-backed SymPy floats at 50 significant digits. Proofs use this to find counterexamples;
tests use it to compare derived expressions with the closed forms of the literature.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

import mpmath
from sympy import Expr, Float, Indexed, Rational, Symbol, Sum, lambdify

from lrp_sym.domains import Box, Domain, Orthant
from lrp_sym.symbols import R, alpha, b, beta, c, eps, gamma, h, i, j, l, n, p, w, x

DIGITS = 50


@functools.lru_cache(maxsize=4096)
def _compiled(expr: Expr, size: int, index: int | None):
    """``expr`` at n = size (and i = index) as an mpmath function of its sorted free symbols."""
    concrete = expr.subs(n, size)
    if concrete.has(Sum):
        concrete = concrete.doit()
    if index is not None:
        concrete = concrete.subs(i, index)
    indexed = concrete.atoms(Indexed)
    labels = {a.base.label for a in indexed} | {i, j, n}
    symbols = {a for a in concrete.free_symbols if isinstance(a, Symbol) and a not in labels}
    arguments = tuple(sorted(indexed | symbols, key=str))
    return lambdify(arguments, concrete, "mpmath"), arguments


def _missing(symbol: Expr):
    raise KeyError(f"no value for {symbol} in this layer instance")


def _uniform(rng: random.Random, low: float, high: float) -> Rational:
    return Rational(rng.uniform(low, high))


@dataclass
class LayerInstance:
    """One neuron j with ``size`` inputs and exact random values for all its symbols."""

    size: int
    values: dict[Expr, Expr] = field(default_factory=dict)

    def evaluate(self, expr: Expr, index: int | None = None) -> mpmath.mpf:
        """Evaluate ``expr`` at this instance with 50 significant digits (mpmath)."""
        function, arguments = _compiled(expr, self.size, index)
        with mpmath.workdps(DIGITS):
            return function(*(mpmath.mpf(self.values[a].p) / self.values[a].q
                              if a in self.values else _missing(a) for a in arguments))

    def describe(self, *exprs: Expr) -> dict[str, str]:
        """The instance as printable name -> value pairs (a counterexample).

        Given expressions, only the values they use are listed.
        """
        used = None
        if exprs:
            used = set().union(*(_compiled(e, self.size, None)[1] for e in exprs))
        return {str(key): str(Float(value, 6)) for key, value in sorted(self.values.items(), key=str)
                if used is None or key in used}


def sample_instance(
    domain: Domain,
    rng: random.Random,
    size: int = 3,
    nonpositive_bias: bool = False,
    standard_box: bool = False,
) -> LayerInstance:
    """Draw a neuron whose input lies in ``domain``.

    ``nonpositive_bias`` draws b_j <= 0 and ``standard_box`` a box with l_i <= 0 <= h_i: the
    standard assumptions of deep Taylor decomposition for ReLU networks.
    """
    values: dict[Expr, Expr] = {}
    for index in range(1, size + 1):
        magnitude = _uniform(rng, 0.05, 1.5)
        values[w[index, j]] = magnitude if rng.random() < 0.5 else -magnitude
        if isinstance(domain, Box):
            low = _uniform(rng, -1.5, 0) if standard_box else _uniform(rng, -1.5, 1.0)
            high = _uniform(rng, 0, 1.5) if standard_box else low + _uniform(rng, 0.1, 2.0)
            values[l[index]], values[h[index]] = low, high
            values[x[index]] = low + (high - low) * _uniform(rng, 0, 1)
        elif isinstance(domain, Orthant):
            values[x[index]] = _uniform(rng, 0, 2) if rng.random() < 0.85 else Rational(0)
        else:
            values[x[index]] = _uniform(rng, -2, 2)
    values[b[j]] = _uniform(rng, -1.5, 0) if nonpositive_bias else _uniform(rng, -1.5, 1.5)
    values[c[j]] = _uniform(rng, 0.1, 2)
    values[R[j]] = _uniform(rng, 0.1, 2)
    values[gamma] = _uniform(rng, 0, 3)
    values[eps] = _uniform(rng, 0.001, 0.5)
    values[beta] = _uniform(rng, 0, 2)
    values[alpha] = _uniform(rng, 0.5, 3)
    values[p] = _uniform(rng, 1, 6)
    return LayerInstance(size, values)


def sample_free_symbols(expr: Expr, rng: random.Random) -> dict[Symbol, Rational]:
    """Random values for the free (non-indexed) symbols of ``expr`` that respect their assumptions."""
    values = {}
    for symbol in sorted(expr.free_symbols - {i, j, n}, key=str):
        if isinstance(symbol, Indexed) or not isinstance(symbol, Symbol):
            continue
        if symbol.is_positive:
            values[symbol] = _uniform(rng, 0.01, 3)
        elif symbol.is_nonnegative:
            values[symbol] = _uniform(rng, 0, 3) if rng.random() < 0.9 else Rational(0)
        elif symbol.is_negative:
            values[symbol] = -_uniform(rng, 0.01, 3)
        else:
            values[symbol] = _uniform(rng, -3, 3)
    return values
