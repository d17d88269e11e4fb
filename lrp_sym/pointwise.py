"""Element-wise nonlinearities y = g(x) (GELU, SiLU, tanh, sigmoid): the identity rule and the
first-order Taylor rule at a root point, derived for each g.

Each neuron of an element-wise layer has exactly one input. Two rules follow from two relevance
models of that one-input neuron, R(x) = c g(x) with c = R_out / g(x) held constant:

* the **identity rule** R_in = R_out: g replaced on [x~, x] by its secant through the root
  point x~ (a one-input affine neuron s x + t), where every root-point step hands the neuron's
  relevance whole to its input (as for the per-channel affine layer); conservation is exact for
  every g (AttnLRP, Achtibat et al. 2024, ICML, Sec. 3.3: the identity rule for element-wise
  nonlinearities);
* the **Taylor rule** R_in = c g'(x~) (x - x~), the first-order term of R(x) at the expansion
  point x~: the root of g where one exists (g(0) = 0 for GELU, SiLU, tanh), else the declared
  point (sigmoid has no real root; it is expanded at 0). It conserves only up to what it drops:
  R_out - R_in = c (g(x~) + r(x)) with the remainder r(x) = g(x) - g(x~) - g'(x~)(x - x~) of
  order (x - x~)^2, and the zero-order term c g(x~) wherever g(x~) != 0 (sigmoid: c / 2).
  Montavon et al. (2017), Pattern Recognition 65 (deep Taylor decomposition).

The kernel of either rule is R_in = rho(x) R_out with the ratio rho printed from its derivation
(``results["ratio_<g>"]``: the numerator and denominator after cancelling common factors, and
the limit of rho where the denominator vanishes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import mpmath
from sympy import (Eq, Expr, Function, S, Symbol, diff, erfc, exp, fraction, limit, pi,
                   series, simplify, sqrt, tanh)

from lrp_sym.derivation import Derivation
from lrp_sym.domains import REAL_SPACE
from lrp_sym.graph_layers import SCALE, SHIFT, one_input_step
from lrp_sym.proofs import NUMERIC_SLACK, Proof, Sampling, Status
from lrp_sym.symbols import R, j

#: the neuron's input (the pre-activation) and its relevance model's constant c = R_out / g(x)
X = Symbol("x", real=True)
C = Symbol("c", real=True)
#: the expansion point x~ of the Taylor rule
X_ROOT = Symbol("x_tilde", real=True)
class normal_cdf(Function):  # noqa: N801 - a SymPy function, spelled like erfc
    """The standard normal CDF Phi(x) = erfc(-x / sqrt(2)) / 2, kept whole.

    SymPy rewrites erfc(-z) as 2 - erfc(z), which cancels in floating point where x << 0; this
    function keeps Phi unevaluated (derivative, value at 0, sign and 50-digit value are its own)
    and the printer spells it ``kernel_runtime.normal_cdf``.
    """

    is_real = True

    @classmethod
    def eval(cls, arg):
        if arg.is_zero:
            return S.Half

    def fdiff(self, argindex: int = 1) -> Expr:
        (arg,) = self.args
        return exp(-arg**2 / 2) / sqrt(2 * pi)

    def _eval_is_positive(self):
        return True if self.args[0].is_extended_real else None

    def _eval_rewrite_as_erfc(self, arg, **kwargs):
        return erfc(-arg / sqrt(2)) / 2

    def _eval_evalf(self, prec):
        return self.rewrite(erfc)._eval_evalf(prec)


#: GELU's tanh approximation: u = sqrt(2/pi) (x + 0.044715 x^3)
_GELU_TANH_K = sqrt(2 / pi)

#: name -> g(x): GELU in its exact form x Phi(x) (Phi the normal CDF), GELU's tanh approximation (torch's approximate='tanh'), SiLU x sigmoid(x), tanh, the logistic sigmoid
ACTIVATIONS: dict[str, Expr] = {
    "gelu": X * normal_cdf(X),
    # x (1 + tanh(u)) / 2 = x / (1 + exp(-2u)): the same function, without 1 + tanh cancelling
    "gelu_tanh": X / (1 + exp(-2 * _GELU_TANH_K * (X + S("0.044715") * X**3))),
    "silu": X / (1 + exp(-X)),
    "tanh": tanh(X),
    "sigmoid": 1 / (1 + exp(-X)),
}
#: the expansion point of the Taylor rule: the root of g where one exists; sigmoid has none and
#: is expanded at 0 (the point the literature's Taylor rule uses for it)
EXPANSION_POINTS: dict[str, Expr] = {name: S.Zero for name in ACTIVATIONS}
#: where rho(x) is sampled for the sign and conservation checks
_SAMPLE_RANGE = (-6.0, 6.0)
_SAMPLES = 60


def ratio_parts(ratio: Expr, point: Expr = S.Zero) -> tuple[Expr, Expr, Expr]:
    """(numerator, denominator, rho's limit at x~) of rho = numerator / denominator.

    The denominator g(x) vanishes at the root x~ = ``point``; rho's limit there is the value the
    kernel uses where the denominator is exactly 0.
    """
    numerator, denominator = fraction(ratio)
    return numerator, denominator, limit(numerator / denominator, X, point)


def _sampled_values(expr: Expr, seed: int) -> list[tuple[mpmath.mpf, mpmath.mpf]]:
    rng = random.Random(seed)
    values = []
    with mpmath.workdps(50):
        for _ in range(_SAMPLES):
            point = mpmath.mpf(rng.uniform(*_SAMPLE_RANGE))
            values.append((point, expr.subs(X, point).evalf(50)))
    return values


def _sign_proof(name: str, statement: str, ratio: Expr, at_root: Expr,
                expected: Status) -> Proof:
    """rho(x) >= 0 for every real x: decided by SymPy where it can (for x real, else in the sign
    cases x > 0, x < 0 and the limit at x = 0), else sampled."""
    claim = f"claim: {ratio} >= 0 for every real x"
    if ratio.is_nonnegative:
        return Proof(name, statement, Status.PROVED, expected, "non-negative by the assumptions "
                     "of x (real)", steps=[claim, "SymPy decides the sign from x real"])
    magnitude = Symbol("P", positive=True)
    cases = [("x > 0", ratio.subs(X, magnitude)), ("x < 0", ratio.subs(X, -magnitude))]
    if all(case.is_nonnegative for _, case in cases) and at_root.is_nonnegative:
        return Proof(name, statement, Status.PROVED, expected,
                     "non-negative in the sign cases x = P > 0 and x = -P < 0, and its limit at "
                     "x = 0", steps=[claim] + [f"{label}: {case} >= 0 (P > 0)"
                                                for label, case in cases]
                     + [f"x = 0: the limit {at_root} >= 0"])
    seed = 0
    for examined, (point, value) in enumerate(_sampled_values(ratio, seed), 1):
        if value < -NUMERIC_SLACK:
            return Proof(name, statement, Status.REFUTED, expected,
                         f"rho < 0 at x = {mpmath.nstr(point, 6)}",
                         {"x": mpmath.nstr(point, 6), "rho": mpmath.nstr(value, 6)},
                         steps=[claim, f"sample {examined} gives rho = {mpmath.nstr(value, 6)}"],
                         sampling=Sampling(examined, seed))
    sampling = Sampling(_SAMPLES, seed)
    return Proof(name, statement, Status.CHECKED, expected,
                 f"sign not decided symbolically; no negative value for x in "
                 f"[{_SAMPLE_RANGE[0]:g}, {_SAMPLE_RANGE[1]:g}]",
                 steps=[claim, "SymPy does not decide the sign",
                        f"rho >= 0 on every sample: {sampling.describe()}"], sampling=sampling)


@dataclass
class IdentityNonlinear:
    """The identity rule R_in = R_out of an element-wise nonlinearity, derived for any g.

    g is replaced on the segment [x~, x] by its secant through the root point: the one-input
    affine neuron y = s x + t with s = (g(x) - g(x~)) / (x - x~). A root-point step along any
    direction v with s v != 0 reaches the same root and hands R whole to the input
    (:func:`lrp_sym.graph_layers.one_input_step`). The derivation uses an undefined function g,
    so it holds for every activation; the kernel is printed for each of :data:`ACTIVATIONS`.
    """

    name: str
    title: str
    paper: str
    activations: tuple[str, ...] = tuple(ACTIVATIONS)

    def derive(self) -> Derivation:
        g = Function("g", real=True)
        secant = (g(X) - g(X_ROOT)) / (X - X_ROOT)
        step, root_point, relevance = one_input_step(Symbol("v", real=True))
        derivation = Derivation(self.name, self.title, self.paper, domain=REAL_SPACE,
                                neuron="pointwise")
        derivation.notes = [
            "An element-wise nonlinearity y = g(x) is a layer of one-input neurons. Replacing g "
            "on the segment from the root point x~ to x by its secant (slope s, intercept t) "
            "makes each neuron the one-input affine neuron of affine_channel, where every "
            "root-point step hands the neuron's relevance whole to its one input. The rule is "
            "the same for every g: R_in = R_out, so relevance is conserved exactly; it is the "
            "rule AttnLRP and LXT use for element-wise nonlinearities.",
            "Kernel: relevance(op, x, relevance_out) with op.activation one of "
            + ", ".join(self.activations) + " (the activation is not needed by the rule; the "
            "argument keeps one signature for the element-wise rules).",
        ]
        derivation.rows = [
            ("secant of g through the root point (slope s)", Eq(SCALE, secant)),
            ("intercept t", Eq(SHIFT, simplify(g(X_ROOT) - secant * X_ROOT))),
            ("one-input step t* (any direction v)", step),
            ("root point x~", root_point),
            ("relevance R_in", relevance),
        ]
        derivation.results.update(relevance=relevance, root_point=root_point)
        for name in self.activations:
            derivation.results[f"ratio_{name}"] = simplify(relevance / R[j])
        whole = simplify(relevance - R[j]) == 0
        derivation.proofs = [
            Proof("conservation", "conservation: R_in = R_out for every g and every x",
                  Status.PROVED if whole else Status.UNDECIDED, Status.PROVED,
                  "the one-input root-point step solved for a generic direction v",
                  steps=[f"R_in = {relevance}", "R_in - R_out simplifies to 0"]),
            Proof("positivity", "positivity: R_in >= 0 whenever R_out >= 0",
                  Status.PROVED if whole else Status.UNDECIDED, Status.PROVED,
                  "R_in = R_out"),
        ]
        return derivation


@dataclass
class TaylorNonlinear:
    """The first-order Taylor rule of y = g(x) at the expansion point x~, for each g.

    Relevance model R(x) = c g(x), c = R_out / g(x) held constant; its Taylor expansion
    R(x) = c g(x~) + c g'(x~) (x - x~) + c r(x) keeps the first-order term as R_in:

        R_in = g'(x~) (x - x~) / g(x) R_out = rho(x) R_out.

    Proofs per g (named ``<proof>_<g>``): the expansion point is a root of g (fails for the
    sigmoid, which has no real root), the remainder r(x) is of second order, what is absorbed
    (R_out - R_in = c (g(x~) + r(x))), that conservation fails (a counterexample), and the sign
    of rho (R_in has the sign of R_out).

    Parameters
    ----------
    name, title, paper : str
    activations : tuple of str
        Names in :data:`ACTIVATIONS`.
    expected : dict
        Expected statuses of proofs that do not hold, by proof name.
    """

    name: str
    title: str
    paper: str
    activations: tuple[str, ...] = tuple(ACTIVATIONS)
    expected: dict[str, Status] = field(default_factory=dict)

    def derive(self) -> Derivation:
        derivation = Derivation(self.name, self.title, self.paper, domain=REAL_SPACE,
                                neuron="pointwise")
        derivation.notes = [
            "Relevance model of a one-input neuron y = g(x): R(x) = c g(x) with c = R_out / g(x) "
            "held constant. Its first-order Taylor term at the expansion point x~ is the "
            "relevance of the input, R_in = c g'(x~) (x - x~). What the rule does not pass on "
            "is the zero-order term c g(x~) and the remainder c r(x), r(x) = g(x) - g(x~) - "
            "g'(x~)(x - x~) = O((x - x~)^2): R_out - R_in = c (g(x~) + r(x)).",
            "GELU, SiLU and tanh have the root x~ = 0, so only the remainder is lost; the "
            "sigmoid has no real root (g > 0), so it is expanded at 0 and the rule also drops "
            "c g(0) = R_out / (2 sigmoid(x)), which is most of R_out near x = 0. Prefer the "
            "identity rule (identity_nonlinear) where conservation matters.",
            "Kernel: relevance(op, x, relevance_out) with op.activation one of "
            + ", ".join(self.activations) + "; R_in = rho(x) R_out with rho printed below, "
            "and rho's limit where its denominator is 0 (x = x~).",
        ]
        for name in self.activations:
            self._derive_one(derivation, name)
        return derivation

    def _expect(self, proof: str, default: Status = Status.PROVED) -> Status:
        return self.expected.get(proof, default)

    def _derive_one(self, derivation: Derivation, name: str) -> None:
        g = ACTIVATIONS[name]
        point = EXPANSION_POINTS[name]
        slope = simplify(diff(g, X).subs(X, point))
        at_point = simplify(g.subs(X, point))
        relevance_in = C * slope * (X - point)
        # SymPy cancels the common factor x of GELU and SiLU itself; no further simplification,
        # which would write the sigmoid's rho with exp(x) exp(-x) (overflow for large |x|)
        ratio = relevance_in.subs(C, 1) / g
        remainder = g - at_point - slope * (X - point)
        numerator, denominator, at_zero = ratio_parts(ratio, point)
        derivation.rows += [
            (f"{name}: g(x)", g),
            (f"{name}: expansion point x~", point),
            (f"{name}: g(x~)", at_point),
            (f"{name}: g'(x~)", slope),
            (f"{name}: R_in = c g'(x~)(x - x~), c = R_out / g(x)", relevance_in),
            (f"{name}: rho = R_in / R_out", ratio),
            (f"{name}: rho where g(x) = 0 (limit)", at_zero),
        ]
        derivation.results.update({
            f"ratio_{name}": ratio, f"ratio_numerator_{name}": numerator,
            f"ratio_denominator_{name}": denominator, f"ratio_at_root_{name}": at_zero,
            f"g_{name}": g, f"remainder_{name}": remainder, f"at_point_{name}": at_point,
        })
        derivation.proofs += [
            self._root_proof(name, at_point),
            self._remainder_proof(name, remainder, point),
            self._absorbed_proof(name, g, relevance_in, at_point, remainder),
            self._conservation_proof(name, ratio),
            _sign_proof(f"positivity_{name}", f"{name}: positivity, rho(x) = R_in / R_out >= 0 "
                        f"for every real x", ratio, at_zero, self._expect(f"positivity_{name}")),
        ]

    def _root_proof(self, name: str, at_point: Expr) -> Proof:
        statement = f"{name}: the expansion point is a root, g(x~) = 0"
        expected = self._expect(f"root_point_{name}")
        if at_point == 0:
            return Proof(f"root_point_{name}", statement, Status.PROVED, expected,
                         "g(x~) simplifies to 0")
        g = ACTIVATIONS[name]
        no_root = g.is_positive or (-g).is_positive
        method = (f"g(x~) = {at_point} != 0" + ("; g has no real root (its sign is fixed for "
                                                  "real x), so no expansion point is a root"
                                                  if no_root else ""))
        return Proof(f"root_point_{name}", statement, Status.REFUTED, expected, method,
                     {"x~": "0", "g(x~)": str(at_point)})

    def _remainder_proof(self, name: str, remainder: Expr, point: Expr) -> Proof:
        statement = (f"{name}: the remainder r(x) = g(x) - g(x~) - g'(x~)(x - x~) is of second "
                     f"order: r = O((x - x~)^2)")
        low_order = simplify(series(remainder, X, point, 2).removeO())
        holds = low_order == 0
        return Proof(f"remainder_order_{name}", statement,
                     Status.PROVED if holds else Status.REFUTED,
                     self._expect(f"remainder_order_{name}"),
                     "the series of r at x~ has no term below (x - x~)^2" if holds else
                     f"the series of r at x~ starts with {low_order}")

    def _absorbed_proof(self, name: str, g: Expr, relevance_in: Expr, at_point: Expr,
                        remainder: Expr) -> Proof:
        statement = (f"{name}: what is absorbed: R_out - R_in = c (g(x~) + r(x)), c = R_out / "
                     f"g(x); zero-order part c g(x~) = c ({at_point})")
        residual = simplify((C * g - relevance_in) - C * (at_point + remainder))
        return Proof(f"absorbed_{name}", statement,
                     Status.PROVED if residual == 0 else Status.UNDECIDED,
                     self._expect(f"absorbed_{name}"), "SymPy simplifies the difference to 0"
                     if residual == 0 else "the symbolic check did not close")

    def _conservation_proof(self, name: str, ratio: Expr) -> Proof:
        statement = f"{name}: conservation, R_in = R_out for every x (rho = 1)"
        expected = self._expect(f"conservation_{name}", Status.REFUTED)
        witness = S.One
        value = (ratio - 1).subs(X, witness).evalf(50)
        if abs(value) > NUMERIC_SLACK:
            return Proof(f"conservation_{name}", statement, Status.REFUTED, expected,
                         f"rho(1) - 1 = {value.evalf(6)}: R_out - R_in = c (g(x~) + r(x)) != 0",
                         {"x": "1", "rho - 1": str(value.evalf(6))})
        return Proof(f"conservation_{name}", statement, Status.UNDECIDED, expected,
                     "no counterexample at x = 1")


__all__ = ["ACTIVATIONS", "normal_cdf", "EXPANSION_POINTS", "IdentityNonlinear", "TaylorNonlinear",
           "ratio_parts"]
