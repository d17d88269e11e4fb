"""Whole-function explanations of a one-layer ReLU network with a sum-pooling top.

The network is f(x) = sum_{j=1}^{H} max(0, z_j), z_j = sum_i x_i w_ij + b_j. On a region where
the active set A = {j : z_j > 0} does not change, max(0, z_j) = a_j z_j with a_j = 1[j in A]
constant, and f is affine:

    f(x) = sum_i x_i W_i + B,   W_i = sum_{j in A} w_ij,   B = sum_{j in A} b_j.

Two explanations of f from the seed text are analysed on that region:

* sensitivity analysis, R_p = (df/dx_p)^2: sums to ||grad f||^2, which is not f(x);
* Taylor decomposition at a root point reached by steepest descent, x~ = x - t grad f with
  f(x~) = 0: R_p = (df/dx_p at x~)(x_p - x~_p), exact (zero residual) when the segment [x~, x]
  stays in the region.

Reference: Montavon, Samek, Mueller (2018), "Methods for interpreting and understanding deep
neural networks", Digital Signal Processing 73, 1-15, Sec. 3-4 (sensitivity analysis and simple
Taylor decomposition); Montavon et al. (2017), Pattern Recognition 65, Sec. 2.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import mpmath
from sympy import (Eq, Expr, Indexed, IndexedBase, Rational, Sum, Symbol, simplify, solve)

from lrp_sym.derivation import Derivation
from lrp_sym.domains import REAL_SPACE
from lrp_sym.layers import partial_derivative
from lrp_sym.numeric import DIGITS, LayerInstance
from lrp_sym.proofs import (NUMERIC_SLACK, SEARCH_TRIALS, Proof, Sampling, Status, prove_zero,
                            require_samples)
from lrp_sym.sums import expand_sums, over_inputs
from lrp_sym.symbols import b, i, j, t, w, x

#: number of hidden ReLU neurons, the active-set indicators a_j = 1[z_j > 0]
hidden = Symbol("H", integer=True, positive=True)
active = IndexedBase("a", nonnegative=True)
#: the active-set sums W_i = sum_{j in A} w_ij and B = sum_{j in A} b_j
W = IndexedBase("W", real=True)
B = Symbol("B", real=True)


def over_hidden(summand: Expr) -> Sum:
    """Return sum_{j=1}^{H} summand."""
    return Sum(summand, (j, 1, hidden))


def network_on_region() -> Expr:
    """f(x) = sum_j a_j z_j: the network where the active set is fixed."""
    return over_hidden(active[j] * (over_inputs(x[i] * w[i, j]) + b[j]))


def affine_network() -> Expr:
    """f(x) = sum_i x_i W_i + B, the same function in the active-set sums."""
    return over_inputs(x[i] * W[i]) + B


def active_set_sums() -> dict[Expr, Expr]:
    """The definitions W_i = sum_j a_j w_ij and B = sum_j a_j b_j."""
    return {W[i]: over_hidden(active[j] * w[i, j]), B: over_hidden(active[j] * b[j])}


def in_network_terms(expr: Expr) -> Expr:
    """``expr`` with W_m and B replaced by their definitions (also inside sums over i)."""
    expr = expr.replace(lambda e: isinstance(e, Indexed) and e.base == W,
                        lambda e: over_hidden(active[j] * w[e.indices[0], j]))
    return expr.subs(B, over_hidden(active[j] * b[j]))


def _flatten_double_sums(expr: Expr) -> Expr:
    """sum_outer c sum_inner g  ->  one double sum of c g, inputs i innermost (finite sums)."""
    def flatten(outer: Sum) -> Sum:
        (inner,) = [arg for arg in outer.function.atoms(Sum)]
        coefficient = simplify(outer.function / inner)  # free of the inner index
        double = Sum(coefficient * inner.function, inner.limits[0], outer.limits[0])
        return double if double.limits[0][0] == i else double.reorder((0, 1))

    return expr.replace(lambda e: isinstance(e, Sum) and e.function.has(Sum), flatten)


def prove_affine_region() -> Proof:
    """On a fixed active set, sum_j a_j z_j = sum_i x_i W_i + B (exchange of finite sums)."""
    statement = ("on a region with fixed active set A, f(x) = sum_i x_i W_i + B with "
                 "W_i = sum_{j in A} w_ij, B = sum_{j in A} b_j")
    network = _flatten_double_sums(expand_sums(network_on_region()))
    collapsed = _flatten_double_sums(expand_sums(in_network_terms(affine_network())))
    holds = simplify(network - collapsed) == 0
    return Proof("affine_region", statement, Status.PROVED if holds else Status.UNDECIDED,
                 Status.PROVED, "both written as one double sum over i and j (finite sums "
                 "exchange) and simplified" if holds else "the double sums did not match")


def _affine_sampler(rng: random.Random, size: int = 3) -> LayerInstance:
    """Values of x, W and B with f(x) > 0 (some neuron active)."""
    values = {}
    for index in range(1, size + 1):
        values[x[index]] = Rational(rng.uniform(-2, 2))
        values[W[index]] = Rational(rng.uniform(-1.5, 1.5))
    linear = sum(values[x[index]] * values[W[index]] for index in range(1, size + 1))
    values[B] = -linear + Rational(rng.uniform(0.1, 2))
    return LayerInstance(size, values)


def _at(expr: Expr, point: Expr) -> Expr:
    """``expr`` with every x_m replaced by the m-th coordinate of ``point`` (given at index i)."""
    return expr.replace(lambda e: isinstance(e, Indexed) and e.base == x,
                        lambda e: point.subs(i, e.indices[0]))


# -- sensitivity analysis -----------------------------------------------------------------------

@dataclass
class SensitivityAnalysis:
    """R_p = (df/dx_p)^2 for the one-layer network, on a region with fixed active set."""

    name: str
    title: str
    paper: str

    def derive(self) -> Derivation:
        network = network_on_region()
        gradient = partial_derivative(network)  # sum_j a_j w_pj = W_p
        relevance = gradient ** 2
        squared_norm = over_inputs(gradient * gradient)
        affine = affine_network()
        affine_relevance = partial_derivative(affine) ** 2
        derivation = Derivation(self.name, self.title, self.paper, domain=REAL_SPACE)
        derivation.rows = [
            ("network on a fixed active set", Eq(Symbol("f"), network)),
            ("gradient df/dx_p", gradient),
            ("relevance R_p = (df/dx_p)^2", relevance),
            ("in the active-set sums", affine_relevance),
            ("sum_p R_p", over_inputs(affine_relevance)),
        ]
        derivation.results.update(network=network, gradient=gradient, relevance=relevance,
                                  relevance_affine=affine_relevance, squared_norm=squared_norm)
        derivation.proofs = [
            prove_affine_region(),
            prove_zero("gradient", "df/dx_p = W_p = sum_{j in A} w_pj",
                       gradient - in_network_terms(W[i]), _affine_sampler),
            _prove_gradient_norm(network, affine_relevance),
            Proof("positivity", "R_p >= 0", Status.PROVED if relevance.is_nonnegative
                  else Status.UNDECIDED, Status.PROVED, "a square of a real number"),
            prove_zero("decomposition", "sum_p R_p = f(x): the relevances decompose f",
                       over_inputs(affine_relevance) - affine, _affine_sampler,
                       expected=Status.REFUTED),
        ]
        return derivation


def _prove_gradient_norm(network: Expr, affine_relevance: Expr) -> Proof:
    """sum_p R_p with R_p = W_p^2 (the active-set form) against ||grad f||^2 of the layer function.

    The gradient on the right is differentiated from f = sum_j a_j z_j itself, not from the
    affine form, so the identity checks that the active-set sums W_p = sum_j a_j w_pj carry the
    layer's gradient (for symbolic n and H).
    """
    statement = ("sum_p R_p = ||grad f(x)||^2, R_p = W_p^2 in the active-set sums and the "
                 "gradient differentiated from f = sum_j a_j z_j (symbolic n, H)")
    layer_gradient = partial_derivative(network)
    squared_norm = over_inputs(layer_gradient ** 2)
    total = in_network_terms(over_inputs(affine_relevance))
    holds = simplify(total - squared_norm) == 0
    steps = [f"df/dx_p of the layer function: {layer_gradient}",
             f"||grad f||^2 = {squared_norm}",
             f"sum_p R_p with W_p = sum_j a_j w_pj written out: {total}",
             "SymPy simplifies the difference to 0" if holds else "the difference did not "
             "simplify to 0"]
    return Proof("gradient_norm", statement, Status.PROVED if holds else Status.UNDECIDED,
                 Status.PROVED, "the gradient differentiated from the layer function; the "
                 "active-set form squared and summed; SymPy simplifies the difference to 0"
                 if holds else "the symbolic check did not close", steps=steps)


# -- Taylor decomposition of the whole function ---------------------------------------------------

@dataclass
class TaylorDecomposition:
    """First-order Taylor decomposition of f at the steepest-descent root point.

    f(x) = f(x~) + sum_p (df/dx_p at x~)(x_p - x~_p) + eps with x~ = x - t* grad f(x) and
    f(x~) = 0. Under the assumption that the active set is the same at every point of the
    segment [x~, x], f is the affine sum_i x_i W_i + B there and eps = 0.
    """

    name: str
    title: str
    paper: str

    def derive(self) -> Derivation:
        affine = affine_network()
        gradient = partial_derivative(affine)
        root_condition = expand_sums(_at(affine, x[i] - t * gradient))
        (step,) = solve(root_condition, t)
        root_point = x[i] - step * gradient
        relevance = simplify(_at(gradient, root_point) * (x[i] - root_point))
        at_root = expand_sums(_at(affine, root_point))
        residual = expand_sums(affine - at_root - over_inputs(relevance))
        derivation = Derivation(self.name, self.title, self.paper, domain=REAL_SPACE)
        derivation.rows = [
            ("network on the active region", Eq(Symbol("f"), affine)),
            ("active-set sums", str(active_set_sums())),
            ("search direction grad f", gradient),
            ("root condition f(x - t grad f) = 0", Eq(root_condition, 0)),
            ("step t*", step),
            ("root point x~_p", root_point),
            ("relevance R_p", relevance),
            ("residual eps", simplify(residual)),
        ]
        derivation.results.update(network=affine, gradient=gradient, step=step,
                                  root_point=root_point, relevance=relevance, residual=residual)
        assumption = "assuming the active set is the same at every point of the segment [x~, x]"
        derivation.proofs = [
            prove_affine_region(),
            prove_zero("root_point", f"f(x~) = 0 ({assumption})", at_root, _affine_sampler),
            prove_zero("residual", f"the residual eps is 0 ({assumption})", residual,
                       _affine_sampler),
            prove_zero("conservation", f"sum_p R_p = f(x) ({assumption})",
                       expand_sums(over_inputs(relevance)) - affine, _affine_sampler),
            _prove_positivity(relevance, affine),
            _refute_changing_active_set(step, relevance),
        ]
        return derivation


def _prove_positivity(relevance: Expr, affine: Expr) -> Proof:
    """R_p = W_p^2 f(x) / sum W^2 >= 0 when f(x) >= 0."""
    value, norm = Symbol("F", nonnegative=True), Symbol("N", positive=True)
    written = simplify(relevance.subs(over_inputs(W[i] ** 2), norm)
                       .subs(B, value - over_inputs(x[i] * W[i])))
    holds = written.is_nonnegative
    return Proof("positivity", "R_p >= 0 when f(x) >= 0",
                 Status.PROVED if holds else Status.UNDECIDED, Status.PROVED,
                 f"R_p = {written} with f(x) = F >= 0, sum_p W_p^2 = N > 0" if holds
                 else "sign not decided")


def _refute_changing_active_set(step: Expr, relevance: Expr, size: int = 2,
                                neurons: int = 2) -> Proof:
    """Without the assumption the residual is not 0: search concrete networks for a witness.

    A random network with ``neurons`` hidden ReLUs and ``size`` inputs is drawn; the derived t*
    and R_p are evaluated with its active-set sums, and the true f(x~) = sum_j max(0, z_j(x~))
    is compared at 50 digits.
    """
    statement = ("the residual eps is 0 for the true network even when the active set changes "
                 "between x and x~")
    rng = random.Random(5)
    examined = 0
    for _ in range(SEARCH_TRIALS):
        weights = [[Rational(rng.uniform(-1.5, 1.5)) for _ in range(neurons)] for _ in range(size)]
        biases = [Rational(rng.uniform(-1, 1)) for _ in range(neurons)]
        point = [Rational(rng.uniform(-2, 2)) for _ in range(size)]

        def outputs(xs):
            return [sum(xs[m] * weights[m][h] for m in range(size)) + biases[h]
                    for h in range(neurons)]

        on = [h for h, z in enumerate(outputs(point)) if z > 0]
        if not on:
            continue
        examined += 1
        values = {x[m + 1]: point[m] for m in range(size)}
        values.update({W[m + 1]: sum(weights[m][h] for h in on) for m in range(size)})
        values[B] = sum(biases[h] for h in on)
        instance = LayerInstance(size, values)
        with mpmath.workdps(DIGITS):
            t_star = instance.evaluate(step)
            root = [mpmath.mpf(point[m].p) / point[m].q - t_star * _mp(values[W[m + 1]])
                    for m in range(size)]
            value = sum(max(mpmath.mpf(0), z) for z in outputs([_mp(v) for v in point]))
            at_root = sum(max(mpmath.mpf(0), z) for z in outputs(root))
            passed = sum(instance.evaluate(relevance, m) for m in range(1, size + 1))
            residual = value - at_root - passed
        if abs(residual) > NUMERIC_SLACK:
            witness = {f"w[{m + 1},{h + 1}]": str(weights[m][h].evalf(6))
                       for m in range(size) for h in range(neurons)}
            witness.update({f"b[{h + 1}]": str(biases[h].evalf(6)) for h in range(neurons)})
            witness.update({f"x[{m + 1}]": str(point[m].evalf(6)) for m in range(size)})
            return Proof("residual_active_set_changes", statement, Status.REFUTED,
                         Status.REFUTED, f"a neuron switches on at x~: eps = "
                         f"{mpmath.nstr(residual, 6)} at 50 digits", witness,
                         sampling=Sampling(examined, 5))
    sampling = require_samples("residual_active_set_changes", Sampling(examined, 5),
                               "networks with an active neuron")
    return Proof("residual_active_set_changes", statement, Status.CHECKED, Status.REFUTED,
                 f"no witness in {sampling.describe()}", sampling=sampling)


def _mp(value: Rational) -> mpmath.mpf:
    return mpmath.mpf(value.p) / value.q
