"""Rules declared by their propagation formula rather than by a root point.

LRP-epsilon, LRP-alpha-beta and the "bias as a neuron" convention are not one exact root-point
step. They are declared as sums of ratio terms,

    R_ij = sum_k a_k q^(k)_ij / (sum_i q^(k)_ij + s_k) R_j,

and analysed by the same proof machinery: what sum_i R_ij is (so what the stabiliser and bias
absorb), when the rule conserves relevance, and whether it is positive. Neurons are taken active
(z_j > 0), so a stabiliser eps sign(d) adds +eps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from sympy import Expr, S, Symbol, simplify, solve, sympify

from lrp_sym.derivation import Z_SIGNS, Derivation, DerivationError, RatioTerm
from lrp_sym.domains import Domain
from lrp_sym.numeric import sample_instance
from lrp_sym.proofs import (NUMERIC_SLACK, Proof, Sampling, Status, prove_zero,
                            require_samples)
from lrp_sym.sums import by_weight_sign, expand_sums, over_inputs
from lrp_sym.symbols import R, b, eps, i, j, w, x

#: the positivity search: random neurons drawn at most, active ones examined, seed
POSITIVITY_TRIALS = 400
POSITIVITY_SAMPLES = 100
POSITIVITY_SEED = 3


@dataclass
class RatioRule:
    """A rule given as ratio terms; see the module docstring.

    Parameters
    ----------
    name, title, paper : str
    terms : list of RatioTerm
        The a_k, q^(k)_ij and bias shares s_k.
    domain : Domain
    stabilised : bool
        Whether each denominator d carries the stabiliser eps sign(d) by definition.
    parameters : tuple
    defaults : dict
        Default value of each parameter (Symbol -> float) for generated kernels.
    expected : dict
        Expected status of proofs that do not hold (all others are expected proved).
    solve_conservation_for : Symbol, optional
        Solve sum_i R_ij = R_j for this parameter (alpha for LRP-alpha-beta).
    identities : dict
        ``name -> (statement, f)`` where ``f(passed, z)`` must vanish; ``passed`` is sum_i R_ij
        and ``z`` the pre-activation z_j. Each is proved or refuted like any other obligation.
    preactivation : Expr, optional
        The neuron's z_j when it is not the dense sum_i x_i w_ij + b_j (an addition:
        sum_i x_i, unit weights and no bias).
    z_sign : {"any", "positive", "negative"}
        The sign of z_j the rule is declared for (:attr:`lrp_sym.derivation.Derivation.z_sign`):
        ``"any"`` (default) for a rule defined on neurons of both signs.
    """

    name: str
    title: str
    paper: str
    terms: list[RatioTerm]
    domain: Domain
    stabilised: bool = False
    parameters: tuple = ()
    defaults: dict = field(default_factory=dict)
    expected: dict[str, Status] = field(default_factory=dict)
    solve_conservation_for: Symbol | None = None
    identities: dict[str, tuple[str, Callable[[Expr, Expr], Expr]]] = field(default_factory=dict)
    preactivation: Expr | None = None
    z_sign: str = "any"

    def neuron(self) -> Expr:
        """z_j: the declared pre-activation, or sum_i x_i w_ij + b_j."""
        if self.preactivation is not None:
            return self.preactivation
        return over_inputs(x[i] * w[i, j]) + b[j]

    def relevance(self) -> Expr:
        """R_ij for an active neuron (stabiliser +eps)."""
        stabiliser = eps if self.stabilised else S.Zero
        return sum((term.coefficient * term.q / (over_inputs(term.q) + term.bias_share + stabiliser)
                    for term in self.terms), S.Zero) * R[j]

    def derive(self) -> Derivation:
        relevance = self.relevance()
        passed = simplify(expand_sums(over_inputs(relevance)))
        absorbed = simplify(R[j] - passed)
        derivation = Derivation(
            name=self.name, title=self.title, paper=self.paper, domain=self.domain,
            terms=list(self.terms), stabiliser=eps if self.stabilised else S.Zero,
            parameters=self.parameters, defaults=dict(self.defaults), z_sign=self.z_sign,
        )
        if self.z_sign not in Z_SIGNS:
            raise DerivationError(f"{self.name}: z_sign must be one of {Z_SIGNS}, not {self.z_sign!r}")
        derivation.rows = [
            ("relevance R_ij (active neuron)", relevance),
            ("passed down sum_i R_ij", passed),
            ("absorbed R_j - sum_i R_ij", absorbed),
        ]
        derivation.results.update(relevance=relevance, passed=passed, absorbed=absorbed)
        sampler = lambda rng: sample_instance(self.domain, rng, size=3)  # noqa: E731
        derivation.proofs = [
            prove_zero("conservation", "conservation: sum_i R_ij = R_j", passed - R[j], sampler,
                       self.expected.get("conservation", Status.PROVED)),
            self._prove_positivity(relevance),
        ]
        z = self.neuron()
        for name, (statement, identity) in self.identities.items():
            derivation.proofs.append(prove_zero(name, statement, expand_sums(identity(passed, z)),
                                                sampler, self.expected.get(name, Status.PROVED)))
        if self.solve_conservation_for is not None:
            derivation.proofs.append(self._conservation_condition(passed))
        return derivation

    def _conservation_condition(self, passed: Expr) -> Proof:
        symbol = self.solve_conservation_for
        solutions = solve(passed - R[j], symbol)
        statement = f"conservation holds exactly when {symbol} = ..."
        if len(solutions) == 1:
            derivation_text = f"sum_i R_ij = R_j  <=>  {symbol} = {solutions[0]}"
            return Proof("conservation_condition", derivation_text, Status.PROVED,
                         self.expected.get("conservation_condition", Status.PROVED),
                         "solved by SymPy (with both sums non-zero)")
        return Proof("conservation_condition", statement, Status.UNDECIDED,
                     self.expected.get("conservation_condition", Status.PROVED),
                     f"SymPy found {len(solutions)} solutions")

    def _prove_positivity(self, relevance: Expr) -> Proof:
        """Proved when every term is >= 0 in each sign case (symbolic); else a search of random
        active neurons refutes it or leaves it ``checked``."""
        statement = f"positivity: R_ij >= 0 on {self.domain.name} for active neurons"
        expected = self.expected.get("positivity", Status.PROVED)
        if all(self._term_nonnegative(term) for term in self.terms):
            return Proof("positivity", statement, Status.PROVED, expected,
                         "every term a_k q_ij / (sum_i q_ij + s_k) is >= 0 in each sign case",
                         steps=["a_k >= 0, and q_ij and the bias share s_k have one sign in each "
                                "sign case of w_ij (so do their sums over i): every ratio >= 0"])
        rng = random.Random(POSITIVITY_SEED)
        # only active neurons (z_j > 0) where every term is defined (denominator non-zero)
        z = self.neuron()
        stabiliser = eps if self.stabilised else S.Zero
        denominators = [over_inputs(term.q) + term.bias_share + stabiliser for term in self.terms]
        checked = 0
        for _ in range(POSITIVITY_TRIALS):
            if checked == POSITIVITY_SAMPLES:
                break
            instance = sample_instance(self.domain, rng, size=3)
            if instance.evaluate(z) <= 0 or any(instance.evaluate(d) == 0 for d in denominators):
                continue
            checked += 1
            for m in range(1, instance.size + 1):
                if instance.evaluate(relevance, m) < -NUMERIC_SLACK:
                    return Proof("positivity", statement, Status.REFUTED, expected,
                                 f"R_ij < 0 for i = {m} at an active neuron (z_j > 0)",
                                 instance.describe(relevance, z),
                                 steps=["not every term is >= 0 by the assumptions",
                                        f"random active neuron {checked} (seed {POSITIVITY_SEED},"
                                        f" 50 digits) has R_ij < 0 at i = {m}"],
                                 sampling=Sampling(checked, POSITIVITY_SEED))
        sampling = require_samples("positivity", Sampling(checked, POSITIVITY_SEED),
                                   "active neurons")
        return Proof("positivity", statement, Status.CHECKED, expected,
                     f"not proved symbolically; no R_ij < 0 on {sampling.describe()} "
                     f"(active neurons, z_j > 0)", sampling=sampling)

    def _term_nonnegative(self, term: RatioTerm) -> bool:
        """a_k >= 0 with q_ij and the bias share of one sign (so the ratio is >= 0)."""
        coefficient, bias_share = sympify(term.coefficient), sympify(term.bias_share)
        if not coefficient.is_nonnegative:
            return False
        cases = [value for _, value in by_weight_sign(term.q.subs(self.domain.parameterization()))]
        if all(value.is_nonnegative for value in cases) and bias_share.is_nonnegative:
            return True
        return all(value.is_nonpositive for value in cases) and bool(bias_share.is_nonpositive)
