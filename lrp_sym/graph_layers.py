"""Layers of residual and branching networks: addition, per-channel affine maps, concatenation.

* An addition y = sum_k a_k of K >= 2 tensors of one shape is, element by element, a neuron
  without activation: unit weights, no bias. Its addends play the role of the inputs x_i
  (a_k = x_i, K = n, symbolic), and its rules are derived like those of a dense neuron
  (:class:`Addition`, a root-point step with the relevance model R = c y, c = R / y of either
  sign), or declared as a stabilised ratio (:class:`AdditionEpsilon`).
* A per-channel affine layer y_c = s_c x_c + t_c (a batch norm that cannot be folded into a
  preceding linear layer) is a diagonal linear layer: every neuron has exactly one input
  (w_cc = s_c, b_c = t_c). :class:`AffineChannel` derives (s, t) from the batch-norm parameters
  and what every root-point rule and LRP-epsilon give on a one-input neuron.
* A concatenation routes: each output coordinate is a one-input neuron with weight 1 and no bias
  (:class:`Concatenation`), so every rule hands its relevance back to that one input.

References: Montavon et al. (2017), Pattern Recognition 65, 211-222 (deep Taylor
decomposition); Montavon et al. (2019), LNCS 11700, Sec. 10 (LRP rules, batch normalisation);
Bach et al. (2015), PLOS ONE 10(7), e0130140 (LRP-epsilon).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sympy import (Eq, Expr, Indexed, IndexedBase, Rational, S, Sum, Symbol, simplify, solve,
                   sqrt)

from lrp_sym.derivation import Derivation, RatioTerm
from lrp_sym.domains import REAL_SPACE
from lrp_sym.layers import _proved_if
from lrp_sym.numeric import sample_instance
from lrp_sym.proofs import Proof, Status, prove_zero
from lrp_sym.ratio_rules import RatioRule
from lrp_sym.root_point import RootPointRule
from lrp_sym.sums import expand_sums, over_inputs
from lrp_sym.symbols import (R, b, bn_beta, bn_eps, bn_gamma, bn_mean, bn_var, eps, h, i, j, l,
                             n, t, w, x)

#: the addition's output y = sum_i x_i
ADDITION = over_inputs(x[i])
_Y = Symbol("y")

_ADDITION_NOTES = (
    "An addition y = sum_k a_k of K >= 2 tensors of one shape (a residual connection) is, "
    "element by element, a neuron without activation: unit weights, no bias. Here the addends "
    "a_k are the inputs x_i and K = n is symbolic, so every result holds for any number of "
    "addends. The relevance model is R = c y with c = R / y locally constant: without a ReLU it "
    "holds for either sign of y.",
    "Kernel layout: x holds the addends stacked on axis 1, shape (N, K, ...), relevance_out the "
    "sum's relevance, shape (N, ...); op is the addition's linear operator (forward sums axis 1, "
    "transpose broadcasts back, no bias). The result has the shape of x.",
)


def _addition_rows(derivation: Derivation) -> None:
    derivation.rows.insert(0, ("addition y", Eq(_Y, ADDITION)))
    derivation.notes[:0] = list(_ADDITION_NOTES)


# -- addition ---------------------------------------------------------------------------------

@dataclass
class Addition:
    """An addition's relevance split, derived from a root point along ``direction``.

    ``RootPointRule`` on the neuron y = sum_i x_i (unit weights, no bias) without activation on
    R^n: the root condition sum_i (x_i - t v_i) = 0 gives t*, and R_i = c t* v_i with c = R / y.

    Parameters
    ----------
    name, title, paper : str
    direction : Expr
        v_i in ``x[i]``: ``x[i]`` (the proportional z-rule) or its positive part.
    positive_when_same_sign : bool
        Also prove that R_i >= 0 whenever R >= 0 and every addend has the sign of the sum (the
        condition under which the z-rule is positive).
    expected : dict
        Expected statuses of proofs that do not hold.
    notes : tuple of str
        Further paragraphs for the docs page.
    """

    name: str
    title: str
    paper: str
    direction: Expr
    positive_when_same_sign: bool = False
    expected: dict[str, Status] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def derive(self) -> Derivation:
        derivation = RootPointRule(self.name, self.title, self.paper, direction=self.direction,
                                   domain=REAL_SPACE, unit_weights=True, bias=S.Zero,
                                   activation="identity", expected=dict(self.expected)).derive()
        _addition_rows(derivation)
        derivation.neuron = "sum"
        derivation.notes += list(self.notes)
        positivity = derivation.proof("positivity")
        if positivity.status is Status.REFUTED:
            _refuting_addends(positivity, derivation.results["relevance"])
        if self.positive_when_same_sign:
            derivation.proofs.append(_same_sign_positivity(derivation.results["relevance"]))
        return derivation


def _refuting_addends(proof: Proof, relevance: Expr, trials: int = 100) -> None:
    """Replace a sign-case witness by a whole addition (addends, R) with some R_i < 0, R > 0."""
    rng = random.Random(5)
    for _ in range(trials):
        instance = sample_instance(REAL_SPACE, rng, size=3)
        if instance.evaluate(ADDITION) == 0:
            continue
        for m in range(1, instance.size + 1):
            if instance.evaluate(relevance, m) < 0:
                proof.method = (f"R_i < 0 for i = {m} with R > 0 (an addend of the other sign "
                                f"than the sum)")
                proof.counterexample = instance.describe(relevance)
                return


def _same_sign_positivity(relevance: Expr) -> Proof:
    """R_i >= 0 for R >= 0 when every x_i has the sign sigma of the sum (sigma = +1 or -1).

    x_i = sigma a_i with a_i >= 0; sum_i a_i > 0 since y != 0. Each case is decided by the
    assumptions of a_i, of that sum and of R.
    """
    statement = ("positivity where every addend has the sign of the sum: R_i >= 0 whenever "
                 "R >= 0 and sign(a_k) = sign(y) for all k")
    magnitude = IndexedBase("a", nonnegative=True)
    total, upper, share = (Symbol("A", positive=True), Symbol("R", nonnegative=True),
                           Symbol("X", nonnegative=True))
    for sign in (1, -1):
        cased = expand_sums(relevance.xreplace({x[i]: sign * magnitude[i]}))
        cased = simplify(cased.subs(over_inputs(magnitude[i]), total))
        cased = cased.subs({magnitude[i]: share, R[j]: upper})
        if not cased.is_nonnegative:
            return Proof("positivity_same_sign", statement, Status.UNDECIDED, Status.PROVED,
                         f"sign of {cased} not decided for sign(y) = {sign}")
    return Proof("positivity_same_sign", statement, Status.PROVED, Status.PROVED,
                 "x_i = sign(y) a_i with a_i >= 0: R_i = a_i / sum_i' a_i' R in both sign cases")


def _positive_sum_sampler(rng: random.Random):
    """Addends with y = sum_i x_i > 0 (the sign of every addend flipped where y < 0)."""
    instance = sample_instance(REAL_SPACE, rng, size=3)
    if instance.evaluate(ADDITION) < 0:
        for m in range(1, instance.size + 1):
            instance.values[x[m]] = -instance.values[x[m]]
    return instance


@dataclass
class AdditionEpsilon:
    """The epsilon-stabilised split R_i = x_i / (y + eps sign(y)) R of an addition.

    Declared as a ratio rule with q_i = x_i and no bias share; its proofs show what the
    stabiliser absorbs. Written for y > 0 (stabiliser +eps); the rule is odd in the addends
    (a -> -a, y -> -y leaves R_i unchanged), so y < 0 is the mirror image.
    """

    name: str
    title: str
    paper: str
    defaults: dict = field(default_factory=dict)
    expected: dict[str, Status] = field(default_factory=dict)

    def derive(self) -> Derivation:
        rule = RatioRule(
            self.name, self.title, self.paper, terms=[RatioTerm(S.One, x[i])],
            domain=REAL_SPACE, stabilised=True, parameters=(eps,), defaults=dict(self.defaults),
            expected=dict(self.expected), preactivation=ADDITION,
            identities={
                "passed_down": ("sum_i R_i = y / (y + eps) R",
                                lambda passed, y: passed - y / (y + eps) * R[j]),
                "absorbed": ("the stabiliser absorbs R - sum_i R_i = eps / (y + eps) R",
                             lambda passed, y: R[j] - passed - eps / (y + eps) * R[j]),
            },
        )
        derivation = rule.derive()
        # the formula is written for y > 0: look for the counterexample there
        conservation = derivation.proof("conservation")
        derivation.proofs[derivation.proofs.index(conservation)] = prove_zero(
            "conservation", conservation.statement, derivation.results["passed"] - R[j],
            _positive_sum_sampler, conservation.expected)
        _addition_rows(derivation)
        derivation.neuron = "sum"
        derivation.notes.append(
            "Written for y > 0, where the stabiliser eps sign(y) is +eps; for y < 0 the "
            "kernel uses -eps, and the rule is the mirror image (a -> -a leaves R_k unchanged), "
            "so the stabiliser absorbs eps / (|y| + eps) of R in either case.")
        return derivation


# -- one-input neurons: the per-channel affine layer and concatenation --------------------------

#: a one-input neuron y = s x + t: its input, weight (scale) and bias (shift), box bounds
_X, _L, _H = Symbol("x", real=True), Symbol("l", real=True), Symbol("h", real=True)
SCALE, SHIFT = Symbol("s", real=True), Symbol("t_c", real=True)
_C = Symbol("c", real=True)
#: a generic search direction (any non-zero value)
_V = Symbol("v", real=True)


def one_input_step(direction: Expr, weight: Expr = SCALE, bias: Expr = SHIFT
                   ) -> tuple[Expr, Expr, Expr]:
    """(t*, root point, R_1) of the one-input neuron y = weight x + bias along ``direction``.

    The root condition weight (x - t v) + bias = 0 is solved for t; R_1 is the Taylor term of
    R = c y at the root point, c = R / y: R_1 = c weight (x - x~).
    """
    values = {x[i]: _X, w[i, j]: weight, l[i]: _L, h[i]: _H, b[j]: bias}
    v = direction.xreplace(values)
    (step,) = solve(weight * (_X - t * v) + bias, t)
    root_point = simplify(_X - step * v)
    relevance = simplify((_C * weight * (_X - root_point)).subs(_C, R[j] / (weight * _X + bias)))
    return step, root_point, relevance


def one_input_ratio(term: RatioTerm, stabilised: bool) -> Expr:
    """R_1 of a ratio rule on the one-input neuron y = s x + t (active: stabiliser +eps)."""
    rule = RatioRule("one_input", "", "", terms=[term], domain=REAL_SPACE, stabilised=stabilised)
    relevance = rule.relevance().subs(n, 1).doit().subs(i, 1)
    return simplify(relevance.xreplace({x[1]: _X, w[1, j]: SCALE, b[j]: SHIFT}))


def _bn_sampler(rng: random.Random):
    instance = sample_instance(REAL_SPACE, rng, size=1)
    for symbol, (low, high) in {bn_gamma: (-2, 2), bn_beta: (-2, 2), bn_mean: (-2, 2),
                                bn_var: (0, 3), bn_eps: (1e-5, 1e-1)}.items():
        instance.values[symbol] = Rational(rng.uniform(low, high))
    return instance


@dataclass
class AffineChannel:
    """A per-channel affine layer y_c = s_c x_c + t_c, derived as a diagonal linear layer.

    From batch normalisation y = gamma (x - mu) / sqrt(var + eps) + beta: s = dy/dx and
    t = y at x = 0 (derived, as for folding). Each neuron c of a diagonal layer has the single
    input x_c, so every rule reduces to its one-input form:

    * a root-point rule along any direction v with s v != 0: the root point is the unique zero
      x~ = -t/s of the neuron, and R_c goes whole to x_c (the bias sits in z, not in the
      denominator: the DTD convention);
    * LRP-epsilon keeps s x / (s x + t + eps) R (bias and stabiliser in the denominator).

    Parameters
    ----------
    name, title, paper : str
    root_point_directions : dict
        Rule name -> search direction v_ij of the shipped root-point rules, evaluated at one
        input (tests check they are the declared ones).
    unit_weight_rules : tuple of str
        Those of them derived for unit weights (the flat rule).
    ratio_rules : dict
        Rule name -> (RatioTerm, stabilised) of ratio rules to evaluate at one input.
    """

    name: str
    title: str
    paper: str
    root_point_directions: dict[str, Expr] = field(default_factory=dict)
    unit_weight_rules: tuple[str, ...] = ()
    ratio_rules: dict[str, tuple[RatioTerm, bool]] = field(default_factory=dict)

    def derive(self) -> Derivation:
        normalised = bn_gamma * (x[i] - bn_mean) / sqrt(bn_var + bn_eps) + bn_beta
        scale = simplify(normalised.diff(x[i]))
        shift = simplify(normalised.subs(x[i], 0))
        step, root_point, relevance = one_input_step(_V)
        derivation = Derivation(self.name, self.title, self.paper, domain=REAL_SPACE)
        derivation.notes = [
            "A batch normalisation that does not follow a Dense or Conv2d layer (e.g. in "
            "pre-activation residual blocks) cannot be folded. It is the per-channel affine map "
            "y_c = s_c x_c + t_c, a linear layer with diagonal weights w_cc = s_c and bias "
            "b_c = t_c: each neuron has exactly one input, so each rule takes its one-input form "
            "below, and the engine applies the ordinary rules through a diagonal linear "
            "operator.",
            "Under the DTD bias convention (bias in z, not in the denominator) every root-point "
            "rule gives the whole R_c to x_c wherever its root point exists (s v != 0); a rule "
            "whose q vanishes there (z+ with s < 0, or x = 0) has no root point and passes "
            "nothing. LRP-epsilon and the bias-as-neuron convention keep s x / (s x + t [+ eps]) "
            "of R_c.",
        ]
        derivation.rows = [
            ("batch norm y_c", normalised),
            ("scale s_c = dy_c/dx_c", scale),
            ("shift t_c = y_c at x_c = 0", shift),
            ("affine layer", Eq(Symbol("y_c"), SCALE * x[i] + SHIFT)),
            ("one-input root condition (any direction v)", Eq(SCALE * (_X - t * _V) + SHIFT, 0)),
            ("step t*", step),
            ("root point x~ (every direction)", root_point),
            ("relevance R_c -> x_c (every direction, s v != 0)", relevance),
        ]
        derivation.results.update(normalised=normalised, scale=scale, shift=shift,
                                  step=step, root_point=root_point, relevance=relevance)
        sampler = _bn_sampler
        derivation.proofs = [
            _proved_if("constant_scale", "dy/dx does not depend on x (y is affine)",
                       not scale.has(x), "no x in the derived gradient"),
            prove_zero("affine", "y = s x + t with the derived s and t",
                       normalised - (scale * x[i] + shift), sampler),
            _proved_if("root_point", "every direction v with s v != 0 reaches the same root "
                       "point x~ = -t/s", simplify(root_point + SHIFT / SCALE) == 0,
                       "solved for a generic direction v"),
            _proved_if("whole_relevance", "every root-point rule gives R_1 = R (s v != 0)",
                       simplify(relevance - R[j]) == 0, "solved for a generic direction v"),
        ]
        for rule, direction in self.root_point_directions.items():
            unit = rule in self.unit_weight_rules
            _, point, share = one_input_step(direction, S.One if unit else SCALE)
            q = simplify((S.One if unit else SCALE) * direction.xreplace(
                {x[i]: _X, w[i, j]: SCALE, l[i]: _L, h[i]: _H}))
            derivation.rows.append((f"{rule}: R_1 where q = {q} != 0", share))
            derivation.results[f"relevance_{rule}"] = share
            derivation.proofs.append(_proved_if(
                f"whole_relevance_{rule}", f"{rule} on one input: R_1 = R where q = {q} != 0",
                simplify(share - R[j]) == 0, "root condition solved at one input"))
        for rule, (term, stabilised) in self.ratio_rules.items():
            share = one_input_ratio(term, stabilised)
            closed = SCALE * _X / (SCALE * _X + SHIFT + (eps if stabilised else S.Zero)) * R[j]
            derivation.rows.append((f"{rule}: R_1", share))
            derivation.results[f"relevance_{rule}"] = share
            derivation.proofs.append(_proved_if(
                f"one_input_{rule}", f"{rule} on one input: R_1 = {closed}",
                simplify(share - closed) == 0, "the ratio evaluated at n = 1"))
        return derivation


@dataclass
class Concatenation:
    """Concatenation y = (a^(1), ..., a^(K)) along one axis: relevance is routed back.

    Each output coordinate y_j = a_{pi(j)} is a one-input neuron with weight 1 and no bias, so
    every root-point rule (any direction) gives the whole R_j to its one input, and relevance
    is sliced back. Conservation is a re-indexing, proved for two blocks of symbolic sizes;
    K blocks follow by induction (concatenating K tensors is concatenating two, K - 1 times).
    """

    name: str
    title: str
    paper: str

    def derive(self) -> Derivation:
        _, root_point, relevance = one_input_step(_V, S.One, S.Zero)
        first, second = (Symbol("n_1", integer=True, positive=True),
                         Symbol("n_2", integer=True, positive=True))
        inputs = (Sum(R[i], (i, 1, first))
                  + Sum(R[i + first], (i, 1, second)).change_index(i, i + first))
        outputs = Sum(R[i], (i, 1, first + second))
        derivation = Derivation(self.name, self.title, self.paper, domain=REAL_SPACE)
        derivation.notes = [
            "Concatenation is routing: the relevance of the concatenated tensor is sliced back "
            "to the tensors it was made from, each input receiving exactly the relevance of its "
            "own block. No rule choice arises: every output coordinate is a copy of one input "
            "coordinate (weight 1, no bias), and every root-point rule hands a one-input "
            "neuron's relevance to that input whole (see affine_channel). The engine does the "
            "slicing; there is no kernel.",
        ]
        derivation.rows = [
            ("output coordinate", Eq(Symbol("y_j"), Indexed(IndexedBase("a"), Symbol("pi_j")))),
            ("root point (any direction v)", root_point),
            ("relevance R_pi(j) (any direction v)", relevance),
            ("relevance of the inputs, two blocks", inputs),
            ("relevance of the output", outputs),
        ]
        derivation.results.update(root_point=root_point, relevance=relevance)
        derivation.proofs = [
            _proved_if("routing", "every root-point rule routes R_j whole to its one input",
                       simplify(relevance - R[j]) == 0, "solved for a generic direction v"),
            _proved_if("root_point_origin", "the root point of a copied coordinate is 0",
                       root_point == 0, "solved for a generic direction v"),
            _proved_if("conservation", "conservation: the blocks' relevances sum to the output's "
                       "(blocks of symbolic sizes n_1, n_2)",
                       simplify(inputs - outputs) == 0,
                       "re-indexed and combined by SymPy; K blocks by induction"),
        ]
        return derivation
