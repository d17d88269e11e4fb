"""Proof obligations and their outcome, named for the argument that reached it.

* ``proved``: an argument valid for a symbolic number n of inputs and symbolic rule parameters
  (SymPy simplifies the claim to an identity, or decides the sign of each case from the
  symbols' assumptions).
* ``checked``: no counterexample on a stated number of random concrete layers (seed and
  precision recorded); evidence, never called a proof. A check that examined nothing is an
  error (:class:`EmptyCheckError`), not a success.
* ``refuted``: a counterexample (a concrete instance, or a sign case that is always violated).
* ``assumed``: a step taken from the literature and not checked here.
* ``undecided``: neither closed nor refuted.

Every :class:`Proof` carries its ``steps``: the argument, one line each, as ``lrp derive RULE
--proof NAME`` prints it.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Callable

import mpmath
from sympy import Expr, simplify

from lrp_sym.numeric import DIGITS, LayerInstance, sample_free_symbols

#: how many random layers a counterexample search tries
SEARCH_TRIALS = 60
#: a numeric value counts as violating when it is beyond this (values carry 50 digits)
NUMERIC_SLACK = 1e-40


class Status(str, enum.Enum):
    PROVED = "proved"
    CHECKED = "checked"
    REFUTED = "refuted"
    ASSUMED = "assumed"
    UNDECIDED = "undecided"


class EmptyCheckError(ValueError):
    """A sampling check that examined no instance: it shows nothing, so it is an error rather
    than a ``checked`` status (a sampler whose every draw is filtered out, or zero trials)."""


@dataclass(frozen=True)
class Sampling:
    """How a sampling check was run: ``samples`` instances examined, drawn from ``seed``, each
    evaluated at ``dps`` significant digits."""

    samples: int
    seed: int
    dps: int = DIGITS

    def describe(self) -> str:
        return f"{self.samples} samples, seed {self.seed}, {self.dps} digits"


def require_samples(name: str, sampling: Sampling, what: str = "random instances") -> Sampling:
    """Return ``sampling``, or raise :class:`EmptyCheckError` when it examined nothing."""
    if sampling.samples <= 0:
        raise EmptyCheckError(f"the sampling check {name!r} examined no instance "
                              f"(0 {what}, seed {sampling.seed}): nothing was checked")
    return sampling


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
        What the literature (or, for sampling checks, the method) says the status is;
        ``lrp derive --all`` fails where they differ.
    method : str
        How the status was reached, in one line.
    counterexample : dict or None
        For a refuted claim, values of the symbols that violate it.
    steps : list of str
        The argument, step by step (``lrp derive RULE --proof NAME``).
    sampling : Sampling or None
        For a status reached by sampling: samples, seed and precision.
    """

    name: str
    statement: str
    status: Status
    expected: Status = Status.PROVED
    method: str = ""
    counterexample: dict[str, str] | None = field(default=None)
    steps: list[str] = field(default_factory=list)
    sampling: Sampling | None = None

    @property
    def as_expected(self) -> bool:
        return self.status == self.expected

    def argument(self) -> list[str]:
        """The steps of the argument (the one-line method when no steps were recorded)."""
        lines = list(self.steps) if self.steps else ([self.method] if self.method else [])
        if self.sampling is not None and not any("seed" in line for line in lines):
            lines.append(f"sampling: {self.sampling.describe()}")
        return lines


def prove_zero(
    name: str,
    statement: str,
    expr: Expr,
    sampler: Callable[[random.Random], LayerInstance],
    expected: Status = Status.PROVED,
    seed: int = 0,
) -> Proof:
    """Prove ``expr == 0`` by simplification (symbolic n), else search random layers.

    Returns ``proved`` when SymPy simplifies ``expr`` to 0, ``refuted`` with the layer where it
    is not 0, and otherwise ``checked`` with the number of layers, the seed and the precision.
    """
    claim = f"claim: {expr} = 0"
    if simplify(expr) == 0:
        return Proof(name, statement, Status.PROVED, expected, "SymPy simplifies it to 0",
                     steps=[claim, "SymPy simplifies the left side to 0 (n and every parameter "
                            "symbolic)"])
    rng = random.Random(seed)
    examined = 0
    for _ in range(SEARCH_TRIALS):
        instance = sampler(rng)
        value = instance.evaluate(expr)
        examined += 1
        if abs(value) > NUMERIC_SLACK:
            sampling = Sampling(examined, seed)
            return Proof(name, statement, Status.REFUTED, expected,
                         f"counterexample at n = {instance.size}, residual {mpmath.nstr(value, 6)}",
                         instance.describe(expr),
                         steps=[claim, "SymPy does not simplify the left side to 0",
                                f"random layer {examined} (seed {seed}, {DIGITS} digits) has "
                                f"residual {mpmath.nstr(value, 6)}"], sampling=sampling)
    sampling = require_samples(name, Sampling(examined, seed), "random layers")
    return Proof(name, statement, Status.CHECKED, expected,
                 f"not simplified to 0; no counterexample in {sampling.describe()}",
                 steps=[claim, "SymPy does not simplify the left side to 0",
                        f"|residual| <= {NUMERIC_SLACK} on every random layer: "
                        f"{sampling.describe()}"], sampling=sampling)


def prove_nonnegative_cases(
    name: str,
    statement: str,
    cases: list[tuple[str, Expr]],
    expected: Status = Status.PROVED,
    seed: int = 0,
) -> Proof:
    """Prove every case expression >= 0 from its symbols' assumptions, or refute one.

    A case whose sign the assumptions do not decide is searched for a negative value on random
    values of its symbols; when none is found the result is ``checked``, not ``proved``.
    """
    steps = []
    sampled = []
    examined = 0
    rng = random.Random(seed)
    for label, expr in cases:
        expr = simplify(expr)
        if expr.is_nonnegative:
            steps.append(f"{label}: {expr} >= 0 by the symbols' assumptions")
            continue
        if expr.is_negative:
            values = sample_free_symbols(expr, rng)
            steps.append(f"{label}: {expr} < 0 by the symbols' assumptions")
            return Proof(name, statement, Status.REFUTED, expected,
                         f"negative whenever {label}", {str(s): str(v) for s, v in values.items()},
                         steps=steps)
        for _ in range(SEARCH_TRIALS):
            values = sample_free_symbols(expr, rng)
            value = expr.subs(values).evalf(DIGITS)
            examined += 1
            if value < -NUMERIC_SLACK:
                witness = {str(s): str(v.evalf(6)) for s, v in values.items()}
                steps.append(f"{label}: {expr} is negative at the values given")
                return Proof(name, statement, Status.REFUTED, expected,
                             f"negative for {label} at the values given", witness, steps=steps,
                             sampling=Sampling(examined, seed))
        steps.append(f"{label}: sign of {expr} not decided by the assumptions; no negative "
                     f"value found")
        sampled.append(label)
    if sampled:
        sampling = require_samples(name, Sampling(examined, seed), "random values")
        return Proof(name, statement, Status.CHECKED, expected,
                     f"sign not decided symbolically for {', '.join(sampled)}; no negative value "
                     f"in {sampling.describe()}", steps=steps, sampling=sampling)
    return Proof(name, statement, Status.PROVED, expected,
                 "non-negative in every sign case of w_ij under the domain's assumptions",
                 steps=steps)
