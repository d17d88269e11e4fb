"""Identities between rules: one rule as a special case or a limit of another.

Each identity is checked on the derived rules themselves (q_ij, R_ij, t*, domain conditions as
:meth:`derive` returns them), in each sign case of w_ij where the rules contain w^+ and w^-.
Limits of normalised ratios q_ij / sum_i q_ij treat the sums over i as positive (or signed)
symbols, since the limit is taken with the layer's inputs and weights fixed.

The claims come from the literature's list of limits (Montavon et al. 2017, Pattern Recognition
65; Montavon et al. 2019, LNCS 11700, Sec. 10.2). One of them, z^B with l = 0 and h -> infinity
giving z+, does not hold: it is recorded refuted, with the limit it does have, next to the
identity that does hold (z^B on the box [0, x] is z+).
"""

from __future__ import annotations

from typing import Callable

from sympy import Expr, Indexed, IndexedBase, Max, Min, S, Symbol, limit, oo, simplify

from lrp_sym.derivation import Derivation
from lrp_sym.proofs import Proof, Status
from lrp_sym.sums import by_weight_sign, expand_sums, over_inputs
from lrp_sym.symbols import R, alpha, b, beta, gamma, h, i, j, l, w, x

#: the derivations an identity is stated on
REQUIRED = ("alphabeta", "flat", "gamma", "lrp0", "sumpool", "w2", "zbox", "zplus")

_X = Symbol("X", nonnegative=True)  # an input coordinate on the orthant (or in [0, h])


def _set_indexed(expr: Expr, base: IndexedBase, value: Callable[[Expr], Expr]) -> Expr:
    """Replace every base[m] by value(m), also inside sums over i (where subs does not reach)."""
    return expr.replace(lambda e: isinstance(e, Indexed) and e.base == base,
                        lambda e: value(e.indices[0]))


def _zero_in_every_case(expr: Expr, substitution: dict | None = None) -> bool:
    """expr = 0 in each sign case of w_ij (after ``substitution``, e.g. x_i = X >= 0)."""
    expr = expr.subs(substitution or {})
    return all(simplify(value) == 0 for _, value in by_weight_sign(expr))


def _proof(name: str, statement: str, holds: bool, method: str, expected: Status,
           counterexample: dict | None = None) -> Proof:
    if holds:
        return Proof(name, statement, Status.PROVED, expected, method)
    if counterexample is not None:
        return Proof(name, statement, Status.REFUTED, expected, method, counterexample)
    return Proof(name, statement, Status.UNDECIDED, expected, "the symbolic check did not close")


def _named_sums(expr: Expr, names: dict[Expr, Symbol]) -> Expr:
    """Split sums over i and replace the listed ones by symbols."""
    return expand_sums(expr).subs(names)


# -- the identities ---------------------------------------------------------------------------------

def gamma_zero_is_lrp0(rules: dict[str, Derivation]) -> Proof:
    q_gamma, q_zero = rules["gamma"].results["q"], rules["lrp0"].results["q"]
    holds = _zero_in_every_case(q_gamma.subs(gamma, 0) - q_zero)
    return _proof("gamma_zero_is_lrp0", "LRP-gamma with gamma = 0 is LRP-0: q_ij identical",
                  holds, "q_gamma(gamma = 0) - x_i w_ij = 0 in both sign cases of w_ij",
                  Status.PROVED)


def gamma_infinity_is_zplus(rules: dict[str, Derivation]) -> Proof:
    positive, negative = Symbol("P", positive=True), Symbol("N", nonpositive=True)
    sums = {over_inputs(x[i] * Max(0, w[i, j])): positive,
            over_inputs(x[i] * Min(0, w[i, j])): negative}
    q_gamma, q_plus = rules["gamma"].results["q"], rules["zplus"].results["q"]
    ratio_gamma = q_gamma / _named_sums(over_inputs(q_gamma), sums)
    ratio_plus = q_plus / _named_sums(over_inputs(q_plus), sums)
    limits = [(label, limit(value, gamma, oo))
              for label, value in by_weight_sign(ratio_gamma.subs(x[i], _X))]
    holds = all(simplify(value - plus) == 0
                for (_, value), (_, plus) in zip(limits, by_weight_sign(ratio_plus.subs(x[i], _X))))
    found = "; ".join(f"{label}: {value}" for label, value in limits)
    return _proof("gamma_infinity_is_zplus",
                  "LRP-gamma tends to z+ as gamma -> infinity: q_ij / sum q -> x_i w_ij^+ / "
                  "sum x w^+", holds,
                  f"limit per sign case with P = sum x w^+ > 0, N = sum x w^- <= 0: {found}",
                  Status.PROVED)


def alphabeta_1_0_is_zplus(rules: dict[str, Derivation]) -> Proof:
    """On x >= 0, (x w)^+ = x w^+, so alpha = 1, beta = 0 gives the z+ ratio."""
    relevance = rules["alphabeta"].results["relevance"].subs({alpha: 1, beta: 0})
    termwise = _zero_in_every_case(Max(0, w[i, j] * x[i]) - x[i] * Max(0, w[i, j]), {x[i]: _X})
    rewritten = relevance.replace(Max(0, w[i, j] * x[i]), x[i] * Max(0, w[i, j]))
    q_plus = rules["zplus"].results["q"]
    holds = termwise and simplify(rewritten - q_plus / over_inputs(q_plus) * R[j]) == 0
    return _proof("alphabeta_1_0_is_zplus",
                  "LRP-alpha-beta with alpha = 1, beta = 0 on x >= 0 is z+", holds,
                  "(x_i w_ij)^+ = x_i w_ij^+ for x_i >= 0 in both sign cases; the beta term "
                  "vanishes; then R_ij equal", Status.PROVED)


def flat_is_w2_unit_weights(rules: dict[str, Derivation]) -> Proof:
    w2, flat = rules["w2"].results, rules["flat"].results
    unit = {key: simplify(_set_indexed(w2[key], w, lambda _: S.One))
            for key in ("q", "step", "relevance")}
    holds = all(simplify(unit[key] - flat[key]) == 0 for key in unit)
    return _proof("flat_is_w2_unit_weights", "the flat rule is the w^2 rule with every w_ij = 1",
                  holds, "q_ij, t* and R_ij of w^2 with w = 1 equal those of flat",
                  Status.PROVED)


def sumpool_is_lrp0_unit_weights(rules: dict[str, Derivation]) -> Proof:
    lrp0, pool = rules["lrp0"].results["relevance"], rules["sumpool"].results["relevance"]
    unit = _set_indexed(lrp0, w, lambda _: S.One).subs(b[j], 0)
    return _proof("sumpool_is_lrp0_unit_weights",
                  "sum pooling's rule is LRP-0 with unit weights and no bias",
                  simplify(unit - pool) == 0, "R_ij of LRP-0 with w = 1 equals that of sum pooling",
                  Status.PROVED)


def zbox_l0_h_infinity_is_zplus(rules: dict[str, Derivation]) -> Proof:
    """The literature's claim; it fails: the inhibitory terms (x_i - h_i) w^- dominate.

    With l = 0 and h_i = H eta_i (eta_i > 0 fixed, H -> infinity) the normalised z^B ratio
    tends to eta_i w_ij^- / sum eta w^- = h_i w_ij^- / sum h w^- whenever some w_ij < 0.
    """
    scale, eta = Symbol("H", positive=True), IndexedBase("eta", positive=True)
    positive, negative_x = Symbol("P", positive=True), Symbol("N", nonpositive=True)
    negative_h = Symbol("E", negative=True)  # sum eta w^-, < 0: at least one inhibitory weight
    q_box = _set_indexed(_set_indexed(rules["zbox"].results["q"], l, lambda _: S.Zero),
                         h, lambda m: scale * eta[m])
    sums = {over_inputs(x[i] * Max(0, w[i, j])): positive,
            over_inputs(x[i] * Min(0, w[i, j])): negative_x,
            over_inputs(eta[i] * Min(0, w[i, j])): negative_h}
    ratio = q_box / _named_sums(over_inputs(q_box), sums)
    q_plus = rules["zplus"].results["q"]
    ratio_plus = q_plus / _named_sums(over_inputs(q_plus), sums)
    claimed = by_weight_sign(ratio_plus.subs(x[i], _X))
    limits = [(label, simplify(limit(value, scale, oo)))
              for label, value in by_weight_sign(ratio.subs(x[i], _X))]
    # the limit it does have: eta_i w^- / sum eta w^-, i.e. h_i w^- / sum h w^-
    actual = by_weight_sign((eta[i] * Min(0, w[i, j]) / negative_h))
    is_inhibitory_share = all(simplify(value - other) == 0
                              for (_, value), (_, other) in zip(limits, actual))
    differing = [(label, value, plus) for (label, value), (_, plus) in zip(limits, claimed)
                 if simplify(value - plus) != 0]
    excitatory_only = by_weight_sign(ratio.subs(x[i], _X))[0][1].subs({negative_x: 0,
                                                                       negative_h: 0})
    degenerate = simplify(excitatory_only - claimed[0][1]) == 0
    found = "; ".join(f"{label}: {value}" for label, value in limits)
    method = (f"limit H -> oo with l = 0, h_i = H eta_i, P = sum x w^+, N = sum x w^-, "
              f"E = sum eta w^- < 0: {found}. The actual limit is "
              f"{'h_i w_ij^- / sum_i h_i w_ij^-' if is_inhibitory_share else 'not identified'}"
              f" (only inhibitory inputs receive relevance), not z+."
              + (" With no inhibitory weight (E = N = 0) the ratio is z+ for every H."
                 if degenerate else ""))
    counterexample = None
    if differing:
        label, value, plus = differing[0]
        counterexample = {"case": label, "limit": str(value), "z+ ratio": str(plus),
                          "X": "1", "W": "1", "P": "1"}
    return _proof("zbox_l0_h_infinity_is_zplus",
                  "z^B with l = 0 and h -> infinity tends to z+ (normalised ratio)",
                  not differing, method, Status.REFUTED, counterexample)


def zbox_box_0_x_is_zplus(rules: dict[str, Derivation]) -> Proof:
    """On the box [0, x] (l = 0, h = x) z^B is z+, with the same domain condition."""
    box, plus = rules["zbox"].results, rules["zplus"].results

    def corner(expr: Expr) -> Expr:
        return _set_indexed(_set_indexed(expr, l, lambda _: S.Zero), h, lambda m: x[m])

    same_q = _zero_in_every_case(corner(box["q"]) - plus["q"])
    condition_box = corner(box["domain_condition"].lhs)
    condition_plus = plus["domain_condition"].lhs
    same_condition = simplify(expand_sums(condition_box - condition_plus)) == 0
    return _proof("zbox_box_0_x_is_zplus",
                  "z^B on the box [0, x] (l = 0, h = x) is z+: same q_ij and domain condition",
                  same_q and same_condition,
                  "q_B = x w^+ + (x - x) w^- = x w^+ in both sign cases; conditions equal",
                  Status.PROVED)


IDENTITIES = (gamma_zero_is_lrp0, gamma_infinity_is_zplus, alphabeta_1_0_is_zplus,
              flat_is_w2_unit_weights, sumpool_is_lrp0_unit_weights, zbox_l0_h_infinity_is_zplus,
              zbox_box_0_x_is_zplus)


def prove_identities(derivations: dict[str, Derivation] | None = None) -> list[Proof]:
    """Check every cross-rule identity; return one :class:`Proof` each.

    Parameters
    ----------
    derivations : dict, optional
        Already derived rules by name (``lrp derive --all`` passes its own); the rules in
        :data:`REQUIRED` that are missing are derived from the shipped declarations.
    """
    rules = dict(derivations or {})
    missing = [name for name in REQUIRED if name not in rules]
    if missing:
        from lrp_sym.registry import load_declarations  # imports derivations/ on demand

        declarations = load_declarations()
        rules.update({name: declarations[name].derive() for name in missing})
    return [identity(rules) for identity in IDENTITIES]
