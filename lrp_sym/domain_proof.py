"""Symbolic proofs that a root point lies in its domain exactly when the derived condition holds.

For a root-point rule the root point is x~_i = x_i - t* v_ij with t* = z_j / D, D = sum_i v_ij w_ij;
the rule applies to active neurons, z_j > 0 and D > 0, so t* > 0. The argument, for a symbolic
number n of inputs and symbolic rule parameters (Montavon et al. 2017, Pattern Recognition 65,
Sec. 4):

1. t* = z_j / D is checked with every sum over i written as a combination of basis sums
   (sum_i x_i w_ij^+, sum_i l_i w_ij^+, ...) that enter as symbols.
2. Per sign case of w_ij, each inequality of the domain at the root point's coordinate is linear
   in t = t*: with a point of the domain written through sign-constrained symbols, it holds for
   every t > 0, or exactly when t <= U with U free of the coordinate.
3. U* = min U (every other bound is >= U*, decided from the assumptions). Sufficiency: t* <= U*
   puts every coordinate inside (on the domain's boundary too: the inequalities are polynomial
   in the coordinate symbols, so their signs carry over to symbols = 0). Necessity: D > 0 needs some i with v_ij w_ij > 0, and every sign
   case where v_ij w_ij can be positive has a bound U* whose slope in t is a negative multiple of
   v_ij w_ij, so that coordinate leaves the domain when t* > U*.
4. t* <= U* with U* = N / M (M > 0) and D > 0 is z_j M - N D <= 0; this equals the derived
   condition's left side times a positive factor (the sums as symbols).

``domain_standard`` (b_j <= 0, and l_i <= 0 <= h_i on a box) then follows when the condition's left
side is <= 0 with each basis sum carrying the sign its terms have under those assumptions.
"""

from __future__ import annotations

from sympy import Expr, S, Symbol, diff, fraction, simplify, together

from lrp_sym.domains import Domain
from lrp_sym.proofs import Proof, Status
from lrp_sym.sums import SIGN_CASES, over_inputs, sums_as_symbols
from lrp_sym.symbols import b, h, i, j, l, w, x

#: the step t* as a positive symbol (the rule applies where t* > 0)
STEP = Symbol("T", positive=True)

DOMAIN_STATEMENT = "the root point lies in the domain exactly when the derived condition holds"
STANDARD_STATEMENT = ("with b_j <= 0 (and l_i <= 0 <= h_i on a box) the root point lies in the "
                      "domain for every active neuron")


def _undecided(name: str, statement: str, expected: Status, steps: list[str], reason: str) -> Proof:
    return Proof(name, statement, Status.UNDECIDED, expected, reason, steps=[*steps, reason])


def prove_domain_condition(domain: Domain, direction: Expr, weights: Expr, z: Expr, step: Expr,
                           condition: Expr | None, expected: Status = Status.PROVED) -> Proof:
    """Prove symbolically: x~ in ``domain`` <=> ``condition`` (see the module docstring).

    Parameters
    ----------
    domain : Domain
    direction : Expr
        v_ij, with the neuron's weights already substituted for w_ij where they are fixed.
    weights : Expr
        The neuron's weight: w_ij, or a fixed value (1, 1/n) for pooling.
    z, step : Expr
        z_j = sum_i x_i w_ij + b_j and the solved t*.
    condition : relational, True, or None
        The derived condition (``lhs <= 0``), None when no closed form was found.
    """
    name, statement = "domain", DOMAIN_STATEMENT
    if not domain.membership(x[i]):
        if condition is S.true:
            return Proof(name, statement, Status.PROVED, expected,
                         "R^n has no constraint: every root point lies in it",
                         steps=["the domain R^n puts no constraint on a coordinate",
                                "the derived condition is True"])
        return _undecided(name, statement, expected, [], "R^n with a condition that is not True")
    if condition is None:
        return _undecided(name, statement, expected, [],
                          "no closed-form condition on the layer's quantities")
    steps: list[str] = []
    # 1. t* = z_j / D with the sums as symbols
    z_s = sums_as_symbols(z)
    d_s = sums_as_symbols(over_inputs(direction * weights))
    if simplify(sums_as_symbols(step) - z_s / d_s) != 0:
        return _undecided(name, statement, expected, steps, "t* is not z_j / sum_i v_ij w_ij")
    steps.append(f"t* = z_j / D, z_j = {z_s}, D = sum_i v_ij w_ij = {d_s} (sums as symbols); "
                 f"the rule applies where z_j > 0 and D > 0, so t* = T > 0")
    # 2. per sign case, the domain's inequalities at the root point's coordinate, linear in T
    interior = domain.parameterization(strict=True)
    coordinate = {s for e in interior.values() for s in e.free_symbols}
    steps.append("a coordinate inside the domain: " + ", ".join(
        f"{key} = {value}" for key, value in interior.items()) + " (symbols > 0)")
    cases = []
    for label, weight in SIGN_CASES:
        v_case, weight_case = direction.subs(w[i, j], weight), weights.subs(w[i, j], weight)
        product = simplify((v_case * weight_case).subs(interior))
        bounds = []
        for inequality in domain.membership(x[i] - STEP * v_case):
            value = simplify(inequality.subs(interior))
            slope, offset = simplify(diff(value, STEP)), simplify(value.subs(STEP, 0))
            if simplify(value - offset - slope * STEP) != 0:
                return _undecided(name, statement, expected, steps,
                                  f"{label}: {value} >= 0 is not linear in T")
            if slope.is_negative:
                bound = simplify(-offset / slope)
                if bound.free_symbols & (coordinate | weight.free_symbols):
                    return _undecided(name, statement, expected, steps,
                                      f"{label}: the bound {bound} on T depends on the coordinate")
                bounds.append((bound, slope))
                steps.append(f"{label}: {value} >= 0  <=>  T <= {bound}")
            elif (slope.is_nonnegative and offset.is_nonnegative):
                steps.append(f"{label}: {value} >= 0 for every T > 0")
            else:
                return _undecided(name, statement, expected, steps,
                                  f"{label}: the sign of {value} is not decided")
        cases.append((label, product, bounds))
    all_bounds = [bound for *_, bounds in cases for bound, _ in bounds]
    if not all_bounds:
        if condition is S.true:
            steps.append("no sign case bounds T: every root point lies in the domain; the "
                         "condition is True")
            return Proof(name, statement, Status.PROVED, expected, "no bound on t*", steps=steps)
        return _undecided(name, statement, expected, steps, "no bound on T, condition not True")
    # 3. the least bound, and a coordinate that attains it
    least = next((u for u in all_bounds if all(simplify(v - u).is_nonnegative for v in all_bounds)),
                 None)
    if least is None:
        return _undecided(name, statement, expected, steps, "the least bound is not decided")
    steps.append(f"least bound U* = {least} (every other bound minus U* is >= 0): t* <= U* "
                 f"puts every coordinate inside")
    for label, product, bounds in cases:
        if product.is_nonpositive:
            steps.append(f"{label}: v_ij w_ij = {product} <= 0, no positive term of D")
            continue
        binding = [slope for bound, slope in bounds if simplify(bound - least) == 0
                   and simplify(slope / product).is_negative]
        if not binding:
            return _undecided(name, statement, expected, steps,
                              f"{label}: v_ij w_ij can be > 0 but no bound U* binds there")
        steps.append(f"{label}: where v_ij w_ij = {product} > 0 the bound U* binds (slope "
                     f"{binding[0]} < 0)")
    steps.append("D > 0 needs a coordinate with v_ij w_ij > 0, which leaves the domain when "
                 "t* > U*: x~ in the domain <=> t* <= U*")
    # 4. t* <= U* as a condition on the sums
    numerator, denominator = fraction(together(least))
    if not denominator.is_positive:
        return _undecided(name, statement, expected, steps, f"sign of {denominator} not decided")
    link = simplify(z_s * denominator - numerator * d_s)
    if condition is S.true:
        if link != 0:
            return _undecided(name, statement, expected, steps,
                              f"condition True but z_j M - N D = {link}")
        steps.append(f"t* <= U* <=> z_j {denominator} - {numerator} D <= 0, which is 0 <= 0: "
                     f"the condition is True")
    else:
        lhs = sums_as_symbols(condition.lhs)
        factor = simplify(lhs / link)
        if not factor.is_positive:
            return _undecided(name, statement, expected, steps,
                              f"the condition's left side is not a positive multiple of {link}")
        steps.append(f"t* <= U* <=> z_j ({denominator}) - ({numerator}) D = {link} <= 0 "
                     f"(D > 0); the condition's left side {lhs} is {factor} times that")
    return Proof(name, statement, Status.PROVED, expected,
                 "per sign case of w_ij, bounds on t* from the domain's inequalities; their "
                 "least bound is the derived condition (SymPy, sums as symbols)", steps=steps)


def _sign_text(symbol: Symbol) -> str:
    return ">= 0" if symbol.is_nonnegative else "<= 0" if symbol.is_nonpositive else "real"


def prove_domain_standard(domain: Domain, condition: Expr | None, domain_proof: Proof,
                          expected: Status = Status.PROVED) -> Proof | None:
    """Prove that the condition holds under b_j <= 0 (and l_i <= 0 <= h_i); None if not closed.

    Needs the ``domain`` proof (condition <=> root point inside) to be ``proved``.
    """
    name, statement = "domain_standard", STANDARD_STATEMENT
    if not domain.membership(x[i]) and condition is S.true:
        return Proof(name, statement, Status.PROVED, expected, "R^n: every root point lies in it",
                     steps=["the domain is R^n"])
    if domain_proof.status is not Status.PROVED or condition is None:
        return None
    steps = ["the domain proof: x~ in the domain <=> the derived condition"]
    if condition is S.true:
        steps.append("the condition is True for every layer")
        return Proof(name, statement, Status.PROVED, expected, "the condition is always true",
                     steps=steps)
    standard = {b[j]: -Symbol("B", nonnegative=True), l[i]: -Symbol("A", nonnegative=True),
                h[i]: Symbol("H", nonnegative=True),
                x[i]: Symbol("X", nonnegative=True) if domain.name == "orthant"
                else Symbol("X", real=True)}
    lhs = simplify(sums_as_symbols(condition.lhs, signs=standard).subs(standard))
    signs = ", ".join(f"{s} {_sign_text(s)}" for s in sorted(lhs.free_symbols, key=str))
    steps.append(f"b_j = -B, l_i = -A, h_i = H (A, B, H >= 0); the basis sums take the sign of "
                 f"their terms: {signs}")
    if not lhs.is_nonpositive:
        return None
    steps.append(f"the condition's left side {lhs} is <= 0 under these signs")
    return Proof(name, statement, Status.PROVED, expected,
                 "every term of the condition's left side is <= 0 under the assumptions "
                 "(sums as sign-constrained symbols); with the domain proof, x~ lies inside",
                 steps=steps)
