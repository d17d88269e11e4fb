"""Layers other than the dense ReLU neuron: pooling and batch normalisation.

* Sum and average pooling, x_j = sum_i a x_i with a = 1 or 1/n and no bias, are derived by the
  root-point machinery (:class:`RootPointRule` with direction x_i and fixed weights); the z-rule
  R_ij = x_i / sum_i' x_i' R_j follows, the scale a cancelling.
* L_p pooling, x_j = (sum_i x_i^p)^(1/p) on x > 0, is positively 1-homogeneous. Its expansion at
  the root point x~ = 0 with the gradient taken at x is exact by Euler's identity
  sum_i x_i dx_j/dx_i = x_j, giving R_ij = x_i^p / sum_i' x_i'^p R_j.
* Max pooling is the limit p -> infinity of L_p pooling: winner-take-all, m tied maxima sharing
  R_j equally (1/m each), every other input 0.
* Batch normalisation after a dense layer is affine in x and folds into the layer's weights and
  bias, read off as the gradient and the value at x = 0.

References: Montavon et al. (2017), Pattern Recognition 65, 211-222 (Sec. 5, pooling as
p-norms); Montavon et al. (2019), LNCS 11700 (Sec. 10.3, pooling and batch normalisation).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sympy import (Eq, Expr, Indexed, IndexedBase, Piecewise, Rational, S, Sum, Symbol, diff,
                   expand_power_base, factor, factor_terms, limit, oo, powsimp, simplify, sqrt,
                   together)

from lrp_sym.derivation import Derivation, RatioTerm
from lrp_sym.domains import ORTHANT, REAL_SPACE
from lrp_sym.numeric import sample_instance
from lrp_sym.proofs import Proof, Status, prove_zero
from lrp_sym.root_point import RootPointRule, preactivation
from lrp_sym.sums import expand_sums, over_inputs
from lrp_sym.symbols import (R, bn_beta, bn_eps, bn_gamma, bn_mean, bn_var, i, j, k, p, x)

#: the number of tied maxima of a max-pooling window, and the number of other inputs
m = Symbol("m", integer=True, positive=True)
u = Symbol("u", integer=True, nonnegative=True)


def partial_derivative(expr: Expr, base: IndexedBase = x) -> Expr:
    """d expr / d base_i, with sums over i differentiated term by term (symbolic n).

    Differentiating ``Sum(f(x_i), (i, 1, n))`` by x_k leaves a guard 1 <= k <= n; k is an
    input index, so the guard holds and is dropped.
    """
    derivative = diff(expr, base[k]).doit()
    derivative = derivative.replace(lambda e: isinstance(e, Piecewise), lambda e: e.args[0].expr)
    return derivative.subs(k, i)


def _orthant_sampler(rng: random.Random):
    return sample_instance(ORTHANT, rng, size=3)


def _positive_sampler(rng: random.Random):
    """Points with x > 0 (L_p pooling is differentiable there)."""
    instance = sample_instance(ORTHANT, rng, size=3)
    for index in range(1, instance.size + 1):
        instance.values[x[index]] = instance.values[x[index]] + S(1) / 20
    return instance


# -- sum and average pooling ----------------------------------------------------------------------

@dataclass
class LinearPooling:
    """Sum (a = 1) or average (a = 1/n) pooling x_j = sum_i a x_i, derived as a root-point step.

    The input of a pooling layer is a ReLU output, so the domain is the orthant; the direction
    is the input itself (the z-rule). t* = 1 and the root point is x~ = 0. ``notes`` are
    paragraphs for the docs page (which other layers the analysis covers).
    """

    name: str
    title: str
    paper: str
    weight: Expr
    notes: tuple[str, ...] = ()

    def derive(self) -> Derivation:
        derivation = RootPointRule(self.name, self.title, self.paper, direction=x[i],
                                   domain=ORTHANT, weights=self.weight, bias=S.Zero).derive()
        z_rule = x[i] / over_inputs(x[i]) * R[j]
        relevance = derivation.results["relevance"]
        derivation.rows.insert(0, ("pooling x_j", Eq(Symbol("x_j"), preactivation(self.weight, 0))))
        derivation.rows.append(("z-rule (the weight cancels)", z_rule))
        derivation.results["rule"] = z_rule
        derivation.notes = list(self.notes)
        derivation.terms = [RatioTerm(S.One, x[i])]
        derivation.proofs += [
            prove_zero("root_point_origin", "the root point is the origin: x~_i = 0",
                       derivation.results["root_point"], _orthant_sampler),
            prove_zero("z_rule", "R_ij = x_i / sum_i' x_i' R_j, independent of the weight a",
                       relevance - z_rule, _orthant_sampler),
        ]
        return derivation


# -- L_p pooling and max pooling ------------------------------------------------------------------

def lp_norm(exponent: Expr = p) -> Expr:
    """x_j = (sum_i x_i^p)^(1/p)."""
    return over_inputs(x[i] ** exponent) ** (1 / exponent)


@dataclass
class LpPooling:
    """L_p pooling x_j = ||x||_p on x > 0, relevance by gradient times input (Euler)."""

    name: str
    title: str
    paper: str

    def derive(self) -> Derivation:
        norm = lp_norm()
        raw_gradient = partial_derivative(norm)
        gradient = simplify(raw_gradient)
        # relevance model R_j = c_j x_j: R_ij = c_j x_i dx_j/dx_i with c_j = R_j / x_j; the
        # powers combine because every base is positive (x > 0)
        relevance = powsimp(x[i] * raw_gradient / norm, force=True) * R[j]
        share = x[i] ** p / over_inputs(x[i] ** p)
        scale = Symbol("s", positive=True)
        scaled = norm.replace(lambda e: isinstance(e, Indexed) and e.base == x,
                              lambda e: scale * e)
        derivation = Derivation(self.name, self.title, self.paper, domain=ORTHANT,
                                terms=[RatioTerm(S.One, x[i] ** p)], parameters=(p,),
                                defaults={p: 2.0})
        derivation.rows = [
            ("pooling x_j", Eq(Symbol("x_j"), norm)),
            ("gradient dx_j/dx_i", gradient),
            ("root point x~", "0 (x_j is 1-homogeneous: x_j(s x) = s x_j(x), s > 0)"),
            ("relevance R_ij = x_i dx_j/dx_i R_j / x_j", relevance),
            ("rule R_i", "sum_j x_i^p / (sum_i' x_i'^p) R_j"),
        ]
        derivation.results.update(pooling=norm, gradient=gradient, relevance=relevance,
                                  share=share, q=x[i] ** p)
        statement_h = "x_j is positively 1-homogeneous: x_j(s x) = s x_j(x) for s > 0 (x > 0)"
        homogeneous = simplify(powsimp(expand_power_base(expand_sums(scaled), force=True),
                                       force=True) - scale * norm)
        derivation.proofs = [
            Proof("homogeneity", statement_h,
                  Status.PROVED if homogeneous == 0 else Status.UNDECIDED, Status.PROVED,
                  "(s x_i)^p = s^p x_i^p for x_i, s > 0; s^p leaves the sum; (s^p)^(1/p) = s"),
            prove_zero("euler", "Euler: sum_i x_i dx_j/dx_i = x_j (symbolic p and n)",
                       expand_sums(over_inputs(x[i] * gradient)) - norm, _positive_sampler),
            prove_zero("relevance", "R_ij = x_i^p / sum_i' x_i'^p R_j",
                       relevance - share * R[j], _positive_sampler),
            prove_zero("conservation", "conservation: sum_i R_ij = R_j (symbolic p and n)",
                       expand_sums(over_inputs(relevance)) - R[j], _positive_sampler),
            _prove_positive_share("positivity", "positivity: R_ij >= 0 for x > 0, R_j >= 0",
                                  relevance),
        ]
        return derivation


def _prove_positive_share(name: str, statement: str, relevance: Expr) -> Proof:
    """R_ij >= 0 from x_i > 0 and R_j >= 0 (checked on the symbols' assumptions)."""
    xi, total, top = (Symbol("X", positive=True), Symbol("S", positive=True),
                      Symbol("R", nonnegative=True))
    cased = relevance.subs(over_inputs(x[i] ** p), total).subs({x[i]: xi, R[j]: top})
    if cased.is_nonnegative:
        return Proof(name, statement, Status.PROVED, Status.PROVED,
                     "x_i^p > 0 and sum_i x_i^p > 0 for x > 0")
    return Proof(name, statement, Status.UNDECIDED, Status.PROVED, f"sign of {cased} not decided")


@dataclass
class MaxPooling:
    """Max pooling as L_p pooling with p -> infinity: winner-take-all with ties split equally.

    A window has m tied maxima of value M > 0 and u = n - m other inputs x_k = M r_k, with
    0 < r_k <= rho = 1/(1 + s), s > 0 the relative gap to the runner-up. Put into the L_p share
    x_i^p / sum x^p, a winner gets 1/(m + sum_k r_k^p) and a loser r_k^p / (m + sum_k r_k^p).
    Since 0 <= sum_k r_k^p <= u rho^p and rho^p -> 0, squeezing gives 1/m and 0.
    """

    name: str
    title: str
    paper: str

    def derive(self) -> Derivation:
        top, gap = Symbol("M", positive=True), Symbol("s", positive=True)
        ratio = IndexedBase("r", positive=True)
        rho = 1 / (1 + gap)
        share = LpPooling(self.name, self.title, self.paper).derive().results["share"]
        window = m * top ** p + Sum((top * ratio[k]) ** p, (k, 1, u))
        placed = share.subs(over_inputs(x[i] ** p), window)
        losers = Sum(ratio[k] ** p, (k, 1, u))

        def reduce(expr: Expr) -> Expr:
            expr = expand_power_base(expr, force=True)  # (M r)^p = M^p r^p, both positive
            return simplify(expr.replace(lambda e: isinstance(e, Sum), factor_terms))

        winner = reduce(placed.subs(x[i], top))
        loser = reduce(placed.subs(x[i], top * ratio[1]))
        winner_closed, loser_closed = 1 / (m + losers), ratio[1] ** p / (m + losers)
        # squeeze: 0 <= sum_k r_k^p <= u rho^p
        winner_bounds = (1 / (m + u * rho ** p), 1 / m)
        loser_bound = rho ** p / m
        winner_limits = [limit(bound, p, oo) for bound in winner_bounds]
        loser_limit = limit(loser_bound, p, oo)
        winner_share, loser_share = winner_limits[0], loser_limit
        bound_steps, winner_steps, loser_steps = _share_bounds(winner_closed, loser_closed,
                                                               losers, rho)

        derivation = Derivation(self.name, self.title, self.paper, domain=ORTHANT)
        derivation.rows = [
            ("L_p share of input i", share),
            ("window", "m tied maxima M, u = n - m others M r_k with 0 < r_k <= 1/(1+s)"),
            ("winner share", winner),
            ("loser share", loser),
            ("winner bounds", f"{winner_bounds[0]} <= share <= {winner_bounds[1]}"),
            ("loser bound", f"0 <= share <= {loser_bound}"),
            ("winner share, p -> oo", winner_share),
            ("loser share, p -> oo", loser_share),
        ]
        derivation.results.update(winner_share=winner_share, loser_share=loser_share,
                                   winner_share_p=winner, loser_share_p=loser)
        derivation.proofs = [
            _proved_if("shares", "the L_p shares of a window with m tied maxima are 1/(m + sum_k "
                       "r_k^p) (winner) and r_k^p/(m + sum_k r_k^p) (loser)",
                       simplify(winner - winner_closed) == 0 and simplify(loser - loser_closed) == 0,
                       "substituted into x_i^p / sum x^p and simplified (M, r_k > 0)"),
            _limit_proof("winner_share", "a tied maximum receives 1/m of R_j as p -> infinity",
                         bound_steps + winner_steps, winner_limits == [1 / m, 1 / m],
                         f"lower bound {winner_bounds[0]} -> {winner_limits[0]}, upper bound "
                         f"{winner_bounds[1]} -> {winner_limits[1]} (SymPy limit, rho = 1/(1+s) "
                         f"< 1); squeeze theorem: the share -> 1/m",
                         "squeezed between 1/(m + u rho^p) and 1/m, both -> 1/m (SymPy limit); "
                         "the bounds derived from r_k <= rho"),
            _limit_proof("loser_share", "every other input receives 0 as p -> infinity",
                         bound_steps + loser_steps, loser_limit == 0,
                         f"upper bound {loser_bound} -> {loser_limit} (SymPy limit); squeeze "
                         f"theorem with the lower bound 0: the share -> 0",
                         "squeezed between 0 and rho^p/m with rho = 1/(1+s) < 1 (SymPy limit); "
                         "the bound derived from r_k <= rho"),
            _proved_if("conservation", "conservation in the limit: m * winner + u * loser = 1",
                       simplify(m * winner_share + u * loser_share - 1) == 0, "by simplification"),
        ]
        return derivation


#: steps of an argument, each with whether SymPy confirmed it
Steps = list[tuple[str, bool]]


def _share_bounds(winner: Expr, loser: Expr, losers: Expr, rho: Expr
                  ) -> tuple[Steps, Steps, Steps]:
    """The bounds on the max-pooling shares, each step with whether SymPy confirmed it.

    From 0 < r_k <= rho: y -> y^p is increasing on y > 0 (its derivative p y^(p-1) > 0), so
    0 < r_k^p <= rho^p; a sum of u such terms lies in [0, u rho^p]. The winner share
    1/(m + S) decreases in S >= 0; the loser share r^p/(m + S) is at most rho^p/m.
    """
    base, power_sum, slack = (Symbol("y", positive=True), Symbol("S", nonnegative=True),
                              Symbol("d", nonnegative=True))
    top = Symbol("P", positive=True)  # rho^p
    ratio = IndexedBase("r", positive=True)
    derivative = diff(base ** p, base)
    bound_steps = [
        (f"d/dy y^p = {derivative} > 0 for y, p > 0: y^p is increasing, so r_k <= rho gives "
         f"r_k^p <= rho^p", bool(derivative.is_positive)),
        ("r_k^p > 0 and rho^p - r_k^p >= 0 termwise, so 0 <= S = "
         f"{losers} <= u rho^p (sums of u non-negative terms)",
         bool((ratio[k] ** p).is_positive)),
    ]
    slope = diff(winner.subs(losers, power_sum), power_sum)
    winner_steps = [(f"the winner share {winner} has d/dS = {slope} < 0: between its values at "
                     f"S = u rho^p and S = 0", bool(slope.is_negative))]
    # r^p = P - d with P = rho^p, d >= 0: rho^p/m - r^p/(m + S) >= 0
    gap = factor(together(top / m - (top - slack) / (m + power_sum)))
    loser_steps = [(f"the loser share {loser} <= rho^p/m: with r^p = rho^p - d (d >= 0), "
                    f"rho^p/m - r^p/(m + S) = {gap} >= 0", bool(gap.is_nonnegative)),
                   (f"rho = {rho} < 1 for s > 0", bool((1 - rho).is_positive))]
    return bound_steps, winner_steps, loser_steps


def _limit_proof(name: str, statement: str, steps: Steps, limits_hold: bool,
                 limit_step: str, method: str) -> Proof:
    """Proved when every step was confirmed by SymPy and the limits are the claimed ones."""
    lines = [text + ("" if confirmed else "  [not confirmed]") for text, confirmed in steps]
    lines.append(limit_step)
    if all(confirmed for _, confirmed in steps) and limits_hold:
        return Proof(name, statement, Status.PROVED, Status.PROVED, method, steps=lines)
    return Proof(name, statement, Status.UNDECIDED, Status.PROVED,
                 "a step of the bound or the limit did not close", steps=lines)


def _proved_if(name: str, statement: str, holds: bool, method: str,
               expected: Status = Status.PROVED) -> Proof:
    """A symbolic obligation checked in one step: proved when it holds, else undecided."""
    return Proof(name, statement, Status.PROVED if holds else Status.UNDECIDED, expected,
                 method if holds else "the symbolic check did not close")


# -- batch normalisation ------------------------------------------------------------------------

@dataclass
class BatchNormFolding:
    """Batch norm after a dense layer, y_j = gamma (z_j - mu) / sqrt(var + eps) + beta.

    y_j is affine in x, so y_j = sum_i x_i w'_ij + b'_j with w'_ij = dy_j/dx_i (a constant) and
    b'_j = y_j at x = 0. Both are derived, not stated, and the identity is then proved.
    """

    name: str
    title: str
    paper: str

    def derive(self) -> Derivation:
        z = preactivation()
        normalised = bn_gamma * (z - bn_mean) / sqrt(bn_var + bn_eps) + bn_beta
        folded_weight = simplify(partial_derivative(normalised))
        at_origin = normalised.replace(lambda e: isinstance(e, Indexed) and e.base == x,
                                       lambda e: S.Zero)
        folded_bias = at_origin.doit()
        folded = over_inputs(x[i] * folded_weight) + folded_bias
        derivation = Derivation(self.name, self.title, self.paper, domain=REAL_SPACE)
        derivation.rows = [
            ("dense + batch norm y_j", normalised),
            ("folded weight w'_ij = dy_j/dx_i", folded_weight),
            ("folded bias b'_j = y_j at x = 0", folded_bias),
            ("folded layer", folded),
        ]
        derivation.results.update(normalised=normalised, folded_weight=folded_weight,
                                  folded_bias=folded_bias, folded=folded)
        sampler = lambda rng: _batchnorm_sampler(rng)  # noqa: E731
        derivation.proofs = [
            _proved_if("constant_weight", "dy_j/dx_i does not depend on x (y_j is affine)",
                       not folded_weight.has(x), "no x in the derived gradient"),
            prove_zero("fold", "y_j = sum_i x_i w'_ij + b'_j (symbolic n)",
                       expand_sums(normalised - folded), sampler),
        ]
        return derivation


def _batchnorm_sampler(rng: random.Random):
    instance = sample_instance(REAL_SPACE, rng, size=3)
    for symbol, (low, high) in {bn_gamma: (-2, 2), bn_beta: (-2, 2), bn_mean: (-2, 2),
                                bn_var: (0, 3), bn_eps: (1e-5, 1e-1)}.items():
        instance.values[symbol] = Rational(rng.uniform(low, high))
    return instance
