"""Proof obligations and their outcome: proved, refuted (with a counterexample) or undecided.

A proof is first attempted symbolically (SymPy simplification, or the sign of each case under
the domain's assumptions). When that does not close it, random concrete layers are searched for
a counterexample at 50 digits. Nothing is silently skipped: an obligation that neither closes
nor fails is reported as undecided.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Callable

import mpmath
from sympy import Expr, simplify

from lrp_sym.numeric import LayerInstance, sample_free_symbols

#: how many random layers a counterexample search tries
SEARCH_TRIALS = 60
#: a numeric value counts as violating when it is beyond this (values carry 50 digits)
NUMERIC_SLACK = 1e-40


class Status(str, enum.Enum):
    PROVED = "proved"
    REFUTED = "refuted"
    UNDECIDED = "undecided"


@dataclass
class Proof:
    """The outcome of one proof obligation.

    Attributes
    ----------
    name : str
        Short key: ``hinge``, ``conservation``, ``domain``, ``positivity``, ...
    statement : str
        What is claimed, in words and formula.
    status : Status
    expected : Status
        What the literature says the status is; ``lrp derive --all`` fails where they differ.
    method : str
        How the status was reached.
    counterexample : dict or None
        For a refuted claim, values of the symbols that violate it.
    """

    name: str
    statement: str
    status: Status
    expected: Status = Status.PROVED
    method: str = ""
    counterexample: dict[str, str] | None = field(default=None)

    @property
    def as_expected(self) -> bool:
        return self.status == self.expected


def prove_zero(
    name: str,
    statement: str,
    expr: Expr,
    sampler: Callable[[random.Random], LayerInstance],
    expected: Status = Status.PROVED,
    seed: int = 0,
) -> Proof:
    """Prove ``expr == 0`` by simplification, or refute it on a random concrete layer."""
    if simplify(expr) == 0:
        return Proof(name, statement, Status.PROVED, expected, "SymPy simplifies it to 0")
    rng = random.Random(seed)
    for _ in range(SEARCH_TRIALS):
        instance = sampler(rng)
        value = instance.evaluate(expr)
        if abs(value) > NUMERIC_SLACK:
            return Proof(name, statement, Status.REFUTED, expected,
                         f"counterexample at n = {instance.size}, residual {mpmath.nstr(value, 6)}",
                         instance.describe(expr))
    return Proof(name, statement, Status.UNDECIDED, expected,
                 f"not simplified to 0, and no counterexample in {SEARCH_TRIALS} random layers")


def prove_nonnegative_cases(
    name: str,
    statement: str,
    cases: list[tuple[str, Expr]],
    expected: Status = Status.PROVED,
    seed: int = 0,
) -> Proof:
    """Prove every case expression >= 0 from its symbols' assumptions, or refute one."""
    undecided = []
    rng = random.Random(seed)
    for label, expr in cases:
        expr = simplify(expr)
        if expr.is_nonnegative:
            continue
        if expr.is_negative:
            values = sample_free_symbols(expr, rng)
            return Proof(name, statement, Status.REFUTED, expected,
                         f"negative whenever {label}", {str(s): str(v) for s, v in values.items()})
        for _ in range(SEARCH_TRIALS):
            values = sample_free_symbols(expr, rng)
            value = expr.subs(values).evalf(50)
            if value < -NUMERIC_SLACK:
                witness = {str(s): str(v.evalf(6)) for s, v in values.items()}
                return Proof(name, statement, Status.REFUTED, expected,
                             f"negative for {label} at the values given", witness)
        undecided.append(label)
    if undecided:
        return Proof(name, statement, Status.UNDECIDED, expected,
                     "sign not decided for " + ", ".join(undecided))
    return Proof(name, statement, Status.PROVED, expected,
                 "non-negative in every sign case of w_ij under the domain's assumptions")
