"""Deriving a propagation rule from a search direction: one deep Taylor decomposition step.

Neuron j: z_j = sum_i x_i w_ij + b_j, x_j = max(0, z_j), relevance model R_j = c_j x_j with
c_j >= 0 locally constant (Montavon et al. 2017, Pattern Recognition 65, Sec. 3-4). Given a
search direction v_ij, the root point is x~ = x - t* v_j with t* solved from

    sum_i (x_i - t v_ij) w_ij + b_j = 0,

and the relevance of connection (i, j) is the i-th term of the first-order Taylor expansion of
R_j at x~: R_ij = (dR_j/dx_i at x~) (x_i - x~_i). The ReLU has no derivative on its hinge, where
x~ lies; we take the gradient of the active branch (z_j > 0), i.e. the one-sided derivative from
the side the input x is on.

A neuron without activation (``activation="identity"``: an addition y = sum_i x_i, say) has the
relevance model R_j = c_j z_j with c_j = R_j / z_j locally constant and of either sign; the same
steps apply for either sign of z_j, on the unconstrained input space.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sympy import (Eq, Expr, Indexed, IndexedBase, Le, Piecewise, S, Symbol, diff, fraction,
                   simplify, solve, together)

from lrp_sym.derivation import Derivation, DerivationError, RatioTerm
from lrp_sym.directions import negative_part, positive_part
from lrp_sym.domains import Domain
from lrp_sym.numeric import sample_instance
from lrp_sym.domain_proof import (STANDARD_STATEMENT, prove_domain_condition,
                                  prove_domain_standard)
from lrp_sym.proofs import (NUMERIC_SLACK, Proof, Sampling, Status, prove_nonnegative_cases,
                            prove_zero, require_samples)
from lrp_sym.sums import (SIGN_CASES, WEIGHT, by_weight_sign, combine_sums, expand_sums, over_inputs,
                          split_positive_negative)
from lrp_sym.symbols import R, b, c, i, j, k, t, w, x

#: coordinate symbols introduced by domain parameterizations and sign cases
_STEP = Symbol("T", positive=True)
#: the sampling cross-checks of the domain proofs: random layers drawn, and their seeds
DOMAIN_CHECK_TRIALS = 200
DOMAIN_CHECK_SEED = 1
STANDARD_CHECK_TRIALS = 150
STANDARD_CHECK_SEED = 2
#: the relevance models: R_j = c_j max(0, z_j), c_j >= 0 (ReLU), or R_j = c_j z_j, c_j real
ACTIVATIONS = ("relu", "identity")
_SIGNED_C = IndexedBase("c", real=True)


def preactivation(weights: Expr = w[i, j], bias: Expr = b[j]) -> Expr:
    """z_j = sum_i x_i w_ij + b_j."""
    return over_inputs(x[i] * weights) + bias


def _resolve_index_range(expr: Expr) -> Expr:
    """Drop the 1 <= k <= n guard that differentiating a sum leaves (k is an input index)."""
    return expr.replace(lambda e: isinstance(e, Piecewise), lambda e: e.args[0].expr)


def _at(expr: Expr, point: Expr) -> Expr:
    """Evaluate ``expr`` with every x_m replaced by the root point's m-th coordinate."""
    return expr.replace(lambda e: isinstance(e, Indexed) and e.base == x,
                        lambda e: point.subs(i, e.indices[0]))


def canonical_q(q: Expr) -> Expr:
    """Write q_ij as f_+ w_ij^+ + f_- w_ij^- where that form exists, else simplified as it is."""
    parts = split_positive_negative(q)
    if parts is None:
        return simplify(q)
    f_plus, f_minus = parts
    if simplify(f_plus - f_minus) == 0:
        return f_plus * w[i, j]
    return f_plus * positive_part(w[i, j]) + f_minus * negative_part(w[i, j])


@dataclass
class RootPointRule:
    """A rule declared by its search direction in an input domain.

    Parameters
    ----------
    name, title, paper : str
        Registry name, human title, and the reference it comes from.
    direction : Expr
        v_ij, in ``x[i]``, ``w[i, j]``, ``l[i]``, ``h[i]`` and rule parameters.
    domain : Domain
        Where the input, and so the root point, must lie.
    parameters : tuple
        Rule parameters appearing in the direction (for example ``gamma``).
    unit_weights : bool
        Derive for the neuron with every w_ij replaced by 1 (the flat rule).
    weights : Expr, optional
        Fixed weights replacing w_ij (1/n for average pooling); overrides ``unit_weights``.
    bias : Expr
        The neuron's bias, b_j by default (0 for pooling layers).
    activation : {"relu", "identity"}
        ``"relu"`` (default): x_j = max(0, z_j), relevance model R_j = c_j x_j with c_j >= 0,
        derived for active neurons. ``"identity"``: a neuron without activation (an addition),
        R_j = c_j z_j with c_j = R_j / z_j of either sign, derived for z_j != 0; only on R^n.
    defaults : dict
        Default value of each parameter (Symbol -> float) for generated kernels.
    expected : dict
        Expected status of proofs that the literature says do not hold (``{"positivity":
        Status.REFUTED}``); all others are expected to be proved, except the sampling
        cross-checks ``domain_check`` and ``domain_standard_check``, expected ``checked``.
    """

    name: str
    title: str
    paper: str
    direction: Expr
    domain: Domain
    parameters: tuple = ()
    unit_weights: bool = False
    weights: Expr | None = None
    bias: Expr = b[j]
    activation: str = "relu"
    defaults: dict = field(default_factory=dict)
    expected: dict[str, Status] = field(default_factory=dict)

    def derive(self) -> Derivation:
        """Solve the root point, expand, extract q_ij, and attempt every proof obligation."""
        if self.activation not in ACTIVATIONS:
            raise DerivationError(f"{self.name}: activation must be one of {ACTIVATIONS}, "
                                  f"not {self.activation!r}")
        if self.activation == "identity" and self.domain.membership(x[i]):
            raise DerivationError(f"{self.name}: a neuron without activation is derived on R^n "
                                  f"only (its step t* takes either sign)")
        weights = self._weights()
        direction = self.direction.subs(w[i, j], weights)
        z = preactivation(weights, self.bias)

        # 1. the step and the root point, solved by SymPy from the root condition
        root_condition = expand_sums(over_inputs((x[i] - t * direction) * weights) + self.bias)
        steps = solve(root_condition, t)
        if len(steps) != 1:
            raise DerivationError(
                f"{self.name}: the root condition {root_condition} = 0 has "
                f"{'no solution' if not steps else f'{len(steps)} solutions'} for the step t "
                f"(a unique t* needs sum_i v_ij w_ij not identically 0)")
        (step,) = steps
        root_point = x[i] - step * direction

        # 2. R_ij by differentiating the active branch of R_j = c_j max(0, z_j) at the root point
        # (or R_j = c_j z_j itself for a neuron without activation)
        if self.activation == "relu":
            coefficient = c[j]
            active_relevance = coefficient * Piecewise((z, z > 0), (0, True)).args[0].expr
        else:
            coefficient = _SIGNED_C[j]
            active_relevance = coefficient * z
        gradient = _resolve_index_range(diff(active_relevance, x[k]).doit())
        relevance = _at(gradient, root_point).subs(k, i) * (x[i] - root_point)
        # relevance model on the active side (on either side without activation): c_j = R_j / z_j
        relevance = simplify(relevance.subs(coefficient, R[j] / z))

        # 3. canonical form R_ij = q_ij / sum_i q_ij R_j
        q, denominator = fraction(together(relevance / R[j]))
        if simplify(q + w[i, j] * direction) == 0:  # fix the sign so that sum_i q_ij is the
            q, denominator = -q, -denominator  # denominator of t*, sum_i v_ij w_ij
        if simplify(expand_sums(denominator - over_inputs(q))) != 0:
            raise DerivationError(f"{self.name}: R_ij is not of the form q_ij / sum_i q_ij R_j")
        q = canonical_q(q)

        derivation = Derivation(
            name=self.name, title=self.title, paper=self.paper, domain=self.domain,
            terms=[RatioTerm(S.One, q)], parameters=self.parameters, defaults=dict(self.defaults),
            # step 2 differentiated the active branch (z_j > 0) of a ReLU neuron's relevance
            # model; without activation R_j = c_j z_j holds on either side
            z_sign="positive" if self.activation == "relu" else "any",
        )
        # the bound on t* is against sum_i v_ij w_ij, the denominator of t* (q_ij may have lost
        # a constant factor such as the 1/n of average pooling when R_ij was reduced)
        condition = self._domain_condition(direction, step, canonical_q(direction * weights), z)
        derivation.rows = [
            *([("relevance model", "R_j = c_j z_j, c_j = R_j / z_j locally constant, "
                "either sign (no activation)")] if self.activation == "identity" else []),
            ("search direction v_ij", direction),
            ("root condition", Eq(root_condition, 0)),
            ("step t*", step),
            ("root point x~_i", root_point),
            ("relevance R_ij", relevance),
            ("q_ij", q),
            ("rule R_i", "sum_j q_ij / (sum_i' q_i'j) R_j"),
            ("root point in domain when", condition if condition is not None else "no closed form"),
        ]
        derivation.results.update(step=step, root_point=root_point, relevance=relevance, q=q,
                                  preactivation=z, activation=self.activation,
                                  direction=direction)
        if condition is not None:
            derivation.results["domain_condition"] = condition
        derivation.proofs = self._prove(derivation, condition)
        return derivation

    def _weights(self) -> Expr:
        if self.weights is not None:
            return self.weights
        return S.One if self.unit_weights else w[i, j]

    # -- the domain condition -----------------------------------------------------------------

    def _domain_condition(self, direction: Expr, step: Expr, q: Expr, z: Expr) -> Expr | None:
        """Derive the relational on layer quantities that puts x~ inside the domain.

        Each coordinate of x~ = x - t v in each sign case of w_ij is linear in t; the domain's
        inequalities give bounds on t. For t* > 0 (active neuron, q_ij >= 0) the binding bounds
        are upper bounds U, and t* <= U rewrites as z_j <= U sum_i q_ij. The rule is meant for
        active neurons with sum_i q_ij > 0, so t* > 0 is assumed throughout.
        """
        if not self.domain.membership(x[i]):
            return S.true
        interior = self.domain.parameterization(strict=True)
        upper_bounds = []
        coordinate_symbols = set(interior.values()) | {WEIGHT}
        coordinate_symbols = {s for e in coordinate_symbols for s in e.free_symbols}
        for _, weight in SIGN_CASES:
            moved = (x[i] - _STEP * direction).subs(w[i, j], weight)
            for inequality in self.domain.membership(moved):
                value = simplify(inequality.subs(interior))
                slope = simplify(diff(value, _STEP))
                offset = simplify(value.subs(_STEP, 0))
                if slope == 0:
                    if not offset.is_nonnegative:
                        return None
                elif slope.is_negative:
                    bound = simplify(-offset / slope)
                    if bound.free_symbols & coordinate_symbols:
                        return None  # depends on the coordinate: no layer-level condition
                    upper_bounds.append(bound)
                elif slope.is_positive:
                    if not simplify(-offset / slope).is_nonpositive:
                        return None
                else:
                    return None
        if not upper_bounds:
            return S.true
        bound = upper_bounds[0]
        for other in upper_bounds[1:]:
            if simplify(bound - other).is_nonnegative:
                bound = other
            elif not simplify(other - bound).is_nonnegative:
                return None
        numerator, denominator = fraction(together(bound))
        lhs = z * denominator - numerator * over_inputs(q)
        summand, rest = combine_sums(lhs)
        return Le(over_inputs(canonical_q(summand)) + simplify(rest), 0)

    # -- proofs ---------------------------------------------------------------------------------

    def _sampler(self, standard: bool = False):
        return lambda rng: sample_instance(self.domain, rng, size=3, nonpositive_bias=standard,
                                           standard_box=standard)

    def _prove(self, derivation: Derivation, condition: Expr | None) -> list[Proof]:
        results = derivation.results
        expected = self.expected.get
        domain = prove_domain_condition(
            self.domain, results["direction"], self._weights(), results["preactivation"],
            results["step"], condition, expected("domain", Status.PROVED))
        standard_sample = self._sample_domain_standard(derivation)
        proofs = [
            prove_zero(
                "hinge", "the root point lies on the hinge: sum_i x~_i w_ij + b_j = 0",
                expand_sums(over_inputs(results["root_point"] * self._weights()) + self.bias),
                self._sampler(), expected("hinge", Status.PROVED)),
            prove_zero(
                "conservation", "conservation: sum_i R_ij = R_j",
                expand_sums(over_inputs(results["relevance"])) - R[j],
                self._sampler(), expected("conservation", Status.PROVED)),
            domain,
            *([self._check_condition(derivation, condition)] if condition is not None else []),
            self._prove_domain_standard(condition, domain, standard_sample),
            self._check_domain_standard(standard_sample),
            prove_nonnegative_cases(
                "positivity", f"positivity: R_ij >= 0 on {self.domain.name} (q_ij >= 0)"
                if self.activation == "relu" else
                f"positivity: R_ij >= 0 whenever R_j >= 0, on {self.domain.name} (q_ij >= 0)",
                by_weight_sign(results["q"].subs(self.domain.parameterization())),
                expected("positivity", Status.PROVED)),
        ]
        return proofs

    @staticmethod
    def _applies(instance, derivation) -> bool:
        """The rule is for active neurons (z_j > 0) with sum_i q_ij > 0, i.e. t* > 0; without
        activation for z_j != 0 with sum_i q_ij != 0 (t* finite and non-zero)."""
        z = instance.evaluate(derivation.results["preactivation"])
        total = instance.evaluate(over_inputs(derivation.results["q"]))
        if derivation.results["activation"] == "identity":
            return z != 0 and total != 0
        return z > 0 and total > 0

    def _root_point_inside(self, instance, derivation) -> bool:
        point = derivation.results["root_point"]
        return all(instance.evaluate(e, m) >= -NUMERIC_SLACK
                   for m in range(1, instance.size + 1)
                   for e in self.domain.membership(point))

    def _check_condition(self, derivation: Derivation, condition: Expr) -> Proof:
        """Sampling cross-check of the domain proof: condition against a direct check of x~."""
        statement = ("the derived condition agrees with a direct check of x~ on random active "
                     "neurons")
        expected = self.expected.get("domain_check", Status.CHECKED)
        rng = random.Random(DOMAIN_CHECK_SEED)
        checked = 0
        for _ in range(DOMAIN_CHECK_TRIALS):
            instance = self._sampler()(rng)
            if not self._applies(instance, derivation):
                continue
            checked += 1
            holds = bool(condition) if condition in (S.true, S.false) else bool(
                instance.evaluate(condition.lhs) <= 0)
            if holds != self._root_point_inside(instance, derivation):
                return Proof("domain_check", statement, Status.REFUTED, expected,
                             "the condition and a direct check of x~ disagree",
                             instance.describe(derivation.results["root_point"],
                                               derivation.results["preactivation"]),
                             sampling=Sampling(checked, DOMAIN_CHECK_SEED))
        sampling = require_samples("domain_check", Sampling(checked, DOMAIN_CHECK_SEED),
                                   "active neurons")
        return Proof("domain_check", statement, Status.CHECKED, expected,
                     f"condition and direct check of x~ agree: {sampling.describe()}",
                     steps=[f"{DOMAIN_CHECK_TRIALS} random layers of n = 3 drawn in the domain; "
                            f"the {checked} with z_j > 0 and sum_i q_ij > 0 kept",
                            "on each, the condition's truth equals x~ lying in the domain"],
                     sampling=sampling)

    def _sample_domain_standard(self, derivation: Derivation) -> tuple[int, object]:
        """Random active neurons under the standard assumptions: (how many, first one whose
        root point leaves the domain or None)."""
        rng = random.Random(STANDARD_CHECK_SEED)
        checked = 0
        for _ in range(STANDARD_CHECK_TRIALS):
            instance = self._sampler(standard=True)(rng)
            if not self._applies(instance, derivation):
                continue
            checked += 1
            if not self._root_point_inside(instance, derivation):
                return checked, instance.describe(derivation.results["root_point"],
                                                  derivation.results["preactivation"])
        return checked, None

    def _prove_domain_standard(self, condition: Expr | None, domain: Proof,
                               sample: tuple[int, object]) -> Proof:
        expected = self.expected.get("domain_standard", Status.PROVED)
        proof = prove_domain_standard(self.domain, condition, domain, expected)
        if proof is not None:
            return proof
        checked, witness = sample
        statement = STANDARD_STATEMENT
        if witness is not None:
            return Proof("domain_standard", statement, Status.REFUTED, expected,
                         "x~ leaves the domain", witness,
                         steps=["not proved symbolically", "a random active neuron with b_j <= 0 "
                                "whose root point leaves the domain (seed "
                                f"{STANDARD_CHECK_SEED})"],
                         sampling=Sampling(checked, STANDARD_CHECK_SEED))
        return Proof("domain_standard", statement, Status.UNDECIDED, expected,
                     "not proved symbolically (see domain_standard_check for the sampling)")

    def _check_domain_standard(self, sample: tuple[int, object]) -> Proof:
        statement = ("x~ lies in the domain on random active neurons with b_j <= 0 (and "
                     "l_i <= 0 <= h_i on a box)")
        expected = self.expected.get("domain_standard_check", Status.CHECKED)
        checked, witness = sample
        if witness is not None:
            return Proof("domain_standard_check", statement, Status.REFUTED, expected,
                         "x~ leaves the domain", witness,
                         sampling=Sampling(checked, STANDARD_CHECK_SEED))
        sampling = require_samples("domain_standard_check",
                                   Sampling(checked, STANDARD_CHECK_SEED), "active neurons")
        return Proof("domain_standard_check", statement, Status.CHECKED, expected,
                     f"x~ inside on every sampled neuron: {sampling.describe()}",
                     steps=[f"{STANDARD_CHECK_TRIALS} random layers of n = 3 with b_j <= 0 (and "
                            f"l_i <= 0 <= h_i); the {checked} active ones kept",
                            "on each, every coordinate of x~ satisfies the domain's inequalities "
                            "at 50 digits"], sampling=sampling)
