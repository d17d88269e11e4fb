"""Operations of attention: softmax and products of two activations, derived by Taylor expansion.

* **Softmax** s_j = exp(x_j) / sum_k exp(x_k) over n logits (n symbolic). The relevance model
  is f(x) = sum_j c_j s_j(x) with c_j = R_j / s_j held constant (R_j the relevance arriving at
  output j). Its first-order expansion *at the point x itself*, read as the tangent plane
  f(x) = sum_i x_i df/dx_i(x) + beta(x) with the intercept beta = f(x) - x . grad f(x) as a bias,
  gives R_i = x_i df/dx_i(x) = x_i (R_i - s_i sum_j R_j) (AttnLRP Prop. 3.1); the bias beta,
  which receives no input, absorbs sum_j R_j (1 - x_j + sum_k s_k x_k). Expanding instead at
  the root x~ = 0 (the gradient at the uniform softmax) gives another rule: the identity with
  the paper's closed form is refuted there.
* **Product** y = a b of two activations: the Shapley values of f(a, b) = a b with baseline 0
  are (ab/2, ab/2), so with R = c y (c = R / y constant) each factor receives R / 2 (the uniform
  rule, AttnLRP Prop. 3.3). Gradient times input would hand each factor c a b = R: twice R in
  all, which is why the bilinear case needs the Shapley (or half-gradient) split.
* **Matrix product** C = A B (Q K^T, A V): each C_ij = sum_k A_ik B_kj is an addition of the
  products z_k = A_ik B_kj. LRP-epsilon on that addition, R_k = z_k / (C_ij + eps sign C_ij) R_ij,
  then the uniform rule on each product: A_ik and B_kj each receive R_k / 2 (AttnLRP
  Prop. 3.3). The stabiliser absorbs eps / (|C_ij| + eps) R_ij; nothing else is lost.
* **Matrix product with one factor held constant** C = A B, A constant (CP-LRP's attention
  weights, Ali et al. 2022, Sec. 3): C is linear in B, so the product a_k b_k is expanded to
  first order in b alone at the root b~ = 0, a held: the term a_k b_k goes to b_k whole and a_k
  receives nothing (shares (0, 1)); LRP-epsilon on the sum over k as above.

References: Achtibat et al. (2024), AttnLRP, ICML, Sec. 3.3 (Prop. 3.1, 3.3); Ali et al.
(2022), XAI for Transformers (CP-LRP), ICML; Shapley (1953).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sympy import (Add, Eq, Expr, Indexed, IndexedBase, Piecewise, Rational, S, Sum, Symbol, diff, exp,
                   expand, factor_terms, simplify)

from lrp_sym.derivation import Derivation
from lrp_sym.proofs import Proof, Status
from lrp_sym.symbols import R, eps, i, j, k, n, x

#: softmax input (logit) index and the dummy of its normaliser
_m = Symbol("m", integer=True)
#: the relevance model's locally constant coefficients c_j = R_j / s_j (any sign)
coefficient = IndexedBase("c", real=True)
#: the normaliser Z = sum_m exp(x_m)
NORMALISER = Sum(exp(x[_m]), (_m, 1, n))
#: the softmax s_i and its symbol in closed forms
SOFTMAX_I = exp(x[i]) / NORMALISER
s = IndexedBase("s", positive=True)
#: the two factors of a product (scalars) and of one entry of a matrix product (indexed by i = k)
a, g = Symbol("a", real=True), Symbol("b", real=True)
first, second = IndexedBase("a", real=True), IndexedBase("b", real=True)
#: the relevance arriving at the product / at one entry C_ij, and the entry itself
R_out, C = Symbol("R", real=True), Symbol("C", real=True)
#: how many random instances a numeric check uses, and its precision
_TRIALS, _DIGITS = 40, 50


def _drop_guards(expr: Expr) -> Expr:
    """Differentiating a Sum over 1..n by x_k leaves 1 <= k <= n: k is an input index."""
    return expr.replace(lambda e: isinstance(e, Piecewise), lambda e: e.args[0].expr)


def gradient(expr: Expr) -> Expr:
    """d expr / d x_i for an expression in Sums over other indices (symbolic n)."""
    return _drop_guards(diff(expr, x[k]).doit()).subs(k, i)


def _concrete(expr: Expr, size: int) -> Expr:
    """``expr`` with n = size and every Sum written out."""
    return expr.subs(n, size).doit()


def _instance(rng: random.Random, size: int, symbols_of: dict) -> dict:
    values = {}
    for base, low, high in symbols_of:
        for index in range(1, size + 1):
            values[base[index]] = Rational(rng.randint(int(low * 8), int(high * 8)), 8)
    return values


def _canonical_sums(expr: Expr) -> Expr:
    """Every sum over 1..n split over additions, its constant factors pulled out, its dummy
    renamed to one canonical index, and each distinct sum replaced by a symbol: sums that
    differ only in the name of their index then cancel (n stays symbolic)."""
    expr = expand(expr.doit())
    for _ in range(3):
        expr = expand(expr.replace(lambda e: isinstance(e, Sum),
                                   lambda e: factor_terms(Sum(expand(e.function), *e.limits))))
        expr = expr.replace(lambda e: isinstance(e, Sum) and isinstance(e.function, Add),
                            lambda e: Add(*(Sum(term, *e.limits) for term in e.function.args)))
    dummy = Symbol("nu", integer=True)
    renamed = expr.replace(lambda e: isinstance(e, Sum) and len(e.limits) == 1,
                           lambda e: Sum(e.function.subs(e.limits[0][0], dummy),
                                         (dummy, *e.limits[0][1:])))
    symbols = {}
    for total in sorted(renamed.atoms(Sum), key=str):
        symbols[total] = Symbol(f"S{len(symbols)}", real=True)
    return renamed.xreplace(symbols)


def _simplifies_to_zero(expr: Expr) -> bool:
    """SymPy simplifies ``expr`` to 0, directly or once its sums are canonical (a failure inside
    SymPy's own Sum simplification counts as no)."""
    for attempt in (_canonical_sums, lambda e: e):  # canonical sums first: raw Sum simplification is slow
        try:
            if simplify(attempt(expr)) == 0:
                return True
        except (StopIteration, RecursionError, TypeError, ValueError):
            continue
    return False


def prove_identity(name: str, statement: str, expr: Expr, bases: tuple, index: Symbol = i,
                   expected: Status = Status.PROVED, sizes: tuple[int, ...] = (2, 3, 4),
                   extra: dict | None = None, seed: int = 0) -> Proof:
    """``expr == 0``: by simplification for symbolic n; else exactly for each n in ``sizes``
    (every entry symbolic, Sums written out), reported as checked; else a counterexample from
    random rationals. ``bases`` lists (IndexedBase, low, high) for the random entries."""
    claim = f"claim: {expr} = 0"
    if _simplifies_to_zero(expr):
        return Proof(name, statement, Status.PROVED, expected, "SymPy simplifies it to 0",
                     steps=[claim, "SymPy simplifies the left side to 0 (n symbolic)"])
    rng = random.Random(seed)
    for size in sizes:
        for position in range(1, size + 1):
            concrete = _concrete(expr.subs(index, position), size).subs(extra or {})
            if not _simplifies_to_zero(concrete):
                for _ in range(_TRIALS):
                    values = _instance(rng, size, bases)
                    value = concrete.subs(values).evalf(_DIGITS)
                    if abs(value) > S(10) ** -30:
                        witness = {str(key): str(v) for key, v in values.items()}
                        witness.update({"n": str(size), str(index): str(position),
                                        "residual": f"{float(value):.6g}"})
                        return Proof(name, statement, Status.REFUTED, expected,
                                     f"counterexample at n = {size}, residual {float(value):.6g}",
                                     witness, steps=[claim, f"n = {size}, {index} = {position}: "
                                                     f"residual {float(value):.6g} at {witness}"])
                return Proof(name, statement, Status.UNDECIDED, expected,
                             f"not simplified at n = {size}; no counterexample found")
    described = ", ".join(map(str, sizes))
    return Proof(name, statement, Status.CHECKED, expected,
                 f"exact for n = {described} (every entry symbolic), not simplified for symbolic n",
                 steps=[claim, f"with n = {described} and the sums written out, SymPy simplifies "
                        "the left side to 0 for every index"])


# -- softmax -------------------------------------------------------------------------------------

def _softmax_rules() -> dict[str, Expr]:
    """The relevance model, its gradient, the tangent rule at x and the rule at the root 0."""
    model = Sum(coefficient[j] * exp(x[j]), (j, 1, n)) / NORMALISER  # f = sum_j c_j s_j
    grad = gradient(model)
    # c_j = R_j / s_j = R_j Z / exp(x_j): held constant, then written in the arriving relevance
    held = {coefficient[j]: R[j] * NORMALISER / exp(x[j]),
            coefficient[i]: R[i] * NORMALISER / exp(x[i])}
    tangent = simplify((x[i] * grad).xreplace(held).doit())
    at_zero = grad.replace(lambda e: isinstance(e, Indexed) and e.base == x, lambda e: S.Zero).doit()
    root_zero = (x[i] * at_zero).xreplace(held)
    return {"model": model, "gradient": grad, "tangent": tangent, "root_zero": root_zero}


#: the paper's closed form R_i = x_i (R_i - s_i sum_j R_j), with s_i = softmax(x)_i
def closed_form(softmax_i: Expr = SOFTMAX_I) -> Expr:
    return x[i] * (R[i] - softmax_i * Sum(R[j], (j, 1, n)))


@dataclass
class SoftmaxTaylor:
    """The softmax rule of AttnLRP, derived from the relevance model sum_j c_j s_j(x).

    Parameters
    ----------
    name, title, paper : str
    expected : dict
        Expected statuses of proofs that do not hold.
    """

    name: str
    title: str
    paper: str
    expected: dict[str, Status] = field(default_factory=dict)

    def derive(self) -> Derivation:
        rules = _softmax_rules()
        derivation = Derivation(self.name, self.title, self.paper)
        derivation.neuron = "softmax"
        total = Sum(R[j], (j, 1, n))
        paper = closed_form()
        weighted_mean = Sum(exp(x[_m]) * x[_m], (_m, 1, n)) / NORMALISER  # sum_k s_k x_k
        # the intercept of the tangent plane at x, per output j: beta_j = s_j - sum_i x_i ds_j/dx_i
        absorbed = Sum(R[j] * (1 - x[j]), (j, 1, n)) + total * weighted_mean
        passed = Sum(x[i] * R[i], (i, 1, n)) - weighted_mean * total
        derivation.rows = [
            ("softmax s_i", Eq(s[i], SOFTMAX_I)),
            ("relevance model f(x) = sum_j c_j s_j(x), c_j = R_j / s_j", rules["model"]),
            ("gradient df/dx_i", rules["gradient"]),
            ("tangent at x: R_i = x_i df/dx_i(x)", rules["tangent"]),
            ("closed form (AttnLRP Prop. 3.1)", paper),
            ("expansion at the root x~ = 0: R_i = x_i df/dx_i(0)", rules["root_zero"]),
            ("passed down sum_i R_i", passed),
            ("absorbed by the bias beta = f(x) - x . grad f(x)", absorbed),
        ]
        derivation.results.update(
            tangent=rules["tangent"], closed_form=paper, root_zero=rules["root_zero"],
            passed=passed, absorbed=absorbed,
            # the kernel's formula, in the softmax s_i, x_i, R_i and T = sum_j R_j
            relevance=x[i] * (R[i] - s[i] * Symbol("T")))
        derivation.notes = [
            "The relevance arriving at softmax output j is modelled as R_j = c_j s_j(x) with "
            "c_j held constant (the usual DTD relevance model, of either sign here). The "
            "first-order expansion of f = sum_j c_j s_j at the point x itself, written as the "
            "tangent plane f(x) = sum_i x_i df/dx_i(x) + beta, gives each logit x_i the linear "
            "term x_i df/dx_i(x) and leaves the intercept beta to a bias that no input receives: "
            "this is the decomposition AttnLRP uses, and the closed form follows.",
            "What is conserved: sum_i R_i + beta = sum_j R_j exactly, with beta = sum_j R_j "
            "(1 - x_j + sum_k s_k x_k). The bias is 0 only when sum_j R_j (x_j - sum_k s_k x_k) = "
            "sum_j R_j; in general relevance is not conserved through a softmax. Because the "
            "gradient sums to 0 over i, sum_i R_i does not change when the same constant is "
            "added to every logit (softmax is shift-invariant, and so is what passes), while "
            "each R_i does.",
            "Expanding at the root x~ = 0 (gradient at the uniform softmax 1/n) gives a "
            "different rule, x_i (c_i - mean_j c_j) / n: the identity with the closed form is "
            "refuted there, so the paper's rule is the tangent at x, not an expansion at a root.",
            "Kernel layout: x holds the logits, s = softmax(x) along the node's axis, "
            "relevance_out the relevance of s; T = sum_j R_j along the axis.",
        ]
        sizes = (2, 3)
        bases = ((x, -2, 2), (R, -2, 2))
        derivation.proofs = [
            prove_identity("tangent_is_closed_form",
                           "the tangent at x gives AttnLRP's closed form x_i (R_i - s_i sum_j R_j)",
                           rules["tangent"] - paper, bases, sizes=sizes),
            prove_identity("root_zero_is_closed_form",
                           "the expansion at the root x~ = 0 gives the same closed form",
                           rules["root_zero"] - paper, bases, sizes=sizes,
                           expected=self.expected.get("root_zero_is_closed_form", Status.PROVED)),
            prove_identity("gradient_sums_to_zero",
                           "sum_i df/dx_i = 0 (the model is shift-invariant)",
                           Sum(rules["gradient"], (i, 1, n)), ((x, -2, 2), (coefficient, -2, 2)),
                           sizes=sizes),
            prove_identity("bias_absorbs",
                           "sum_i R_i + beta = sum_j R_j with beta = sum_j R_j (1 - x_j + "
                           "sum_k s_k x_k)", Sum(paper, (i, 1, n)) + absorbed - total, bases,
                           sizes=sizes),
            prove_identity("conservation", "sum_i R_i = sum_j R_j",
                           Sum(paper, (i, 1, n)) - total, bases, sizes=sizes,
                           expected=self.expected.get("conservation", Status.PROVED)),
        ]
        return derivation


# -- products ------------------------------------------------------------------------------------

def shapley_pair(f, u: Expr, v: Expr) -> tuple[Expr, Expr]:
    """Shapley values of the two players of f(u, v) with baseline (0, 0)."""
    phi_u = Rational(1, 2) * ((f(u, 0) - f(0, 0)) + (f(u, v) - f(0, v)))
    phi_v = Rational(1, 2) * ((f(0, v) - f(0, 0)) + (f(u, v) - f(u, 0)))
    return simplify(phi_u), simplify(phi_v)


def _bilinear(u: Expr, v: Expr) -> Expr:
    return u * v


def _proved_if(name: str, statement: str, holds: bool, method: str, expected=Status.PROVED,
               counterexample: dict | None = None) -> Proof:
    status = Status.PROVED if holds else (Status.REFUTED if counterexample else Status.UNDECIDED)
    return Proof(name, statement, status, expected, method, counterexample)


def _uniform_split() -> dict[str, Expr]:
    """Shapley values of y = a b, and the shares of R = c y they give each factor."""
    phi_a, phi_b = shapley_pair(_bilinear, a, g)
    held = R_out / (a * g)  # c = R / y
    return {"phi_first": phi_a, "phi_second": phi_b,
            "relevance_first": simplify(held * phi_a), "relevance_second": simplify(held * phi_b),
            "gradient_first": simplify(held * a * diff(a * g, a)),
            "gradient_second": simplify(held * g * diff(a * g, g))}


@dataclass
class ProductUniform:
    """The uniform rule of the product y = a b of two activations (element-wise gating)."""

    name: str
    title: str
    paper: str
    expected: dict[str, Status] = field(default_factory=dict)

    def derive(self) -> Derivation:
        split = _uniform_split()
        derivation = Derivation(self.name, self.title, self.paper)
        derivation.neuron = "product"
        share_a = simplify(split["relevance_first"] / R_out)
        share_b = simplify(split["relevance_second"] / R_out)
        derivation.rows = [
            ("product y", Eq(Symbol("y"), a * g)),
            ("Shapley value of a (baseline 0)", split["phi_first"]),
            ("Shapley value of b (baseline 0)", split["phi_second"]),
            ("R_a = c phi_a, c = R / y", split["relevance_first"]),
            ("R_b = c phi_b", split["relevance_second"]),
            ("gradient x input of R = c a b (for comparison): R_a, R_b",
             f"{split['gradient_first']}, {split['gradient_second']}"),
        ]
        derivation.results.update(split, share_first=share_a, share_second=share_b)
        derivation.notes = [
            "With the relevance model R = c y, c = R / y held constant, the product's relevance "
            "is c a b. Its Shapley values with baseline 0 (the two orders of adding a and b) are "
            "a b / 2 each, since f(a, 0) = f(0, b) = f(0, 0) = 0; so each factor receives R / 2. "
            "Gradient times input of the same model gives each factor c a b = R (twice R in "
            "all): the bilinear function is homogeneous of degree 2, not 1.",
            "Kernel layout: a and b are the two inputs (one shape), relevance_out the relevance "
            "of a * b; the rule returns (share_a R, share_b R).",
        ]
        derivation.proofs = [
            _proved_if("shapley_values", "the Shapley values of a b with baseline 0 are "
                       "(a b / 2, a b / 2)",
                       simplify(split["phi_first"] - a * g / 2) == 0
                       and simplify(split["phi_second"] - a * g / 2) == 0,
                       "phi = 1/2 [(f(a,0) - f(0,0)) + (f(a,b) - f(0,b))], SymPy simplifies"),
            _proved_if("conservation", "R_a + R_b = R",
                       simplify(split["relevance_first"] + split["relevance_second"] - R_out) == 0,
                       "c (phi_a + phi_b) = c a b = R (efficiency of Shapley values)"),
            _proved_if("uniform", "R_a = R_b = R / 2 (independent of a and b)",
                       share_a == Rational(1, 2) and share_b == Rational(1, 2),
                       f"share of a = {share_a}, share of b = {share_b}"),
            _proved_if("gradient_input_conserves",
                       "gradient x input of R = c a b conserves: R_a + R_b = R",
                       simplify(split["gradient_first"] + split["gradient_second"] - R_out) == 0,
                       f"gradient x input sums to "
                       f"{simplify(split['gradient_first'] + split['gradient_second'])}",
                       expected=Status.REFUTED, counterexample={"a": "1", "b": "1", "R": "1",
                                                                "sum": "2"}),
        ]
        return derivation


def _epsilon_sum_proofs(passed: Expr, stabilised: Expr, conservation: Status) -> list[Proof]:
    """What LRP-epsilon on the sum over k of a matrix product's entry passes down (``passed``, its
    denominator ``stabilised`` = C + eps): the stabiliser's share, the eps -> 0 limit, and
    conservation for eps > 0 (expected ``conservation``)."""
    bases = ((first, 0, 2), (second, 0, 2))  # C_ij >= 0: the case the formula is written for
    return [
        prove_identity("absorbed",
                       "the stabiliser absorbs R - sum_k (R_A_k + R_B_k) = eps / (C + eps) R",
                       R_out - passed - eps / stabilised * R_out, bases, index=k),
        _proved_if("conservation_eps_zero",
                   "with eps -> 0 every entry passes R_ij whole: sum = R",
                   simplify(passed.doit().subs(eps, 0) - R_out) == 0,
                   "the eps = 0 limit of the passed-down sum simplifies to R"),
        prove_identity("conservation", "sum_k (R_A_k + R_B_k) = R for eps > 0",
                       passed - R_out, bases, index=k, expected=conservation,
                       extra={eps: Rational(1, 4), R_out: 1}),
    ]


@dataclass
class MatrixProductEpsilon:
    """C = A B: LRP-epsilon on the sum over k, then the uniform rule on each product A_ik B_kj.

    Written for one entry C_ij = sum_k a_k b_k (a_k = A_ik, b_k = B_kj, n symbolic) with
    C_ij > 0 (stabiliser +eps); the kernel uses eps sign(C_ij), the mirror image for C_ij < 0.
    """

    name: str
    title: str
    paper: str
    defaults: dict = field(default_factory=dict)
    expected: dict[str, Status] = field(default_factory=dict)

    def derive(self) -> Derivation:
        entry = Sum(first[k] * second[k], (k, 1, n))
        stabilised = entry + eps
        product_relevance = first[k] * second[k] / stabilised * R_out  # epsilon on the sum
        split = _uniform_split()
        share_a = simplify(split["relevance_first"] / R_out)
        share_b = simplify(split["relevance_second"] / R_out)
        to_a, to_b = share_a * product_relevance, share_b * product_relevance
        passed = Sum(to_a + to_b, (k, 1, n))
        derivation = Derivation(self.name, self.title, self.paper, parameters=(eps,),
                                defaults=dict(self.defaults))
        derivation.neuron = "matmul"
        derivation.stabiliser = eps
        derivation.rows = [
            ("entry C_ij = sum_k A_ik B_kj", Eq(C, entry)),
            ("LRP-epsilon on the sum: R_k", product_relevance),
            ("uniform rule on A_ik B_kj: share of A_ik, of B_kj", f"{share_a}, {share_b}"),
            ("R_{A_ik} from entry ij", to_a),
            ("R_{B_kj} from entry ij", to_b),
            ("passed down sum_k (R_{A_ik} + R_{B_kj})", simplify(passed.doit())),
        ]
        ratio = R_out / C  # R_ij / stab(C_ij), the kernel's coefficient with C stabilised
        derivation.results.update(share_first=share_a, share_second=share_b, ratio=ratio,
                                  product_relevance=product_relevance, passed=passed)
        derivation.notes = [
            "Each entry C_ij = sum_k A_ik B_kj of a matrix product is an addition of the "
            "products A_ik B_kj: its relevance R_ij is split over k by LRP-epsilon, "
            "R_k = A_ik B_kj / (C_ij + eps sign(C_ij)) R_ij, and each product hands half of R_k "
            "to each factor (the uniform rule, derived in product_uniform). A_ik collects its "
            "shares over j, B_kj over i: R_A = A * (rho B^T) / 2 and R_B = B * (A^T rho) / 2 with "
            "rho_ij = R_ij / (C_ij + eps sign(C_ij)).",
            "What is absorbed: the stabiliser keeps eps / (|C_ij| + eps) of R_ij; with eps -> 0 "
            "(the z-rule on the sum) everything is passed down wherever C_ij != 0.",
            "Kernel layout: a (..., p, q) and b (..., q, r) (b (..., r, q) with transpose_b, "
            "for Q K^T), relevance_out (..., p, r); returns (R_a, R_b) in their shapes.",
        ]
        derivation.proofs = _epsilon_sum_proofs(passed, stabilised, self.expected.get("conservation", Status.PROVED))
        return derivation


def _held_constant_split(held: str) -> dict[str, Expr]:
    """Shares of R = c a b when the factor ``held`` ("first": a, "second": b) is a constant.

    The product is then a one-variable function of the other factor, f(u) = a u (or u b). Its
    first-order Taylor expansion at the root u~ = 0 is f(u~) + f'(u~)(u - u~) = f'(0) u; with
    c = R / (a b) held, the free factor receives c f'(0) u and the held one, no variable of the
    expansion, receives nothing.
    """
    if held not in ("first", "second"):
        raise ValueError(f"held must be 'first' or 'second', got {held!r}")
    free = g if held == "first" else a
    root = Symbol("u_root", real=True)  # the root point of the free factor
    product = a * g
    at_root = product.subs(free, root)
    expansion = at_root.subs(root, 0) + diff(at_root, root).subs(root, 0) * (free - 0)
    held_relevance = R_out / product  # c = R / y
    term = simplify(held_relevance * expansion)  # what the free factor receives
    shares = {free: simplify(term / R_out), (a if free is g else g): S.Zero}
    return {"expansion": expansion, "relevance_free": term,
            "share_first": shares[a], "share_second": shares[g]}


@dataclass
class MatrixProductConstant:
    """C = A B with one factor held constant: LRP-epsilon on the sum over k, then every product
    A_ik B_kj to the free factor (its first-order Taylor term at the root 0).

    Written for one entry C_ij = sum_k a_k b_k (n symbolic) with C_ij > 0 (stabiliser +eps); the
    kernel uses eps sign(C_ij). ``held``: "first" (A constant, CP-LRP's A V with A the attention
    weights) or "second".
    """

    name: str
    title: str
    paper: str
    held: str = "first"
    defaults: dict = field(default_factory=dict)
    expected: dict[str, Status] = field(default_factory=dict)

    def derive(self) -> Derivation:
        entry = Sum(first[k] * second[k], (k, 1, n))
        stabilised = entry + eps
        product_relevance = first[k] * second[k] / stabilised * R_out  # epsilon on the sum
        split = _held_constant_split(self.held)
        share_a, share_b = split["share_first"], split["share_second"]
        to_a, to_b = share_a * product_relevance, share_b * product_relevance
        passed = Sum(to_a + to_b, (k, 1, n))
        held_relevance = Sum(to_a if self.held == "first" else to_b, (k, 1, n))
        uniform = _uniform_split()
        uniform_passed = Sum((uniform["relevance_first"] + uniform["relevance_second"]) / R_out
                             * product_relevance, (k, 1, n))
        derivation = Derivation(self.name, self.title, self.paper, parameters=(eps,),
                                defaults=dict(self.defaults))
        derivation.neuron = "matmul"
        derivation.stabiliser = eps
        held_word, free_word = ("A_ik", "B_kj") if self.held == "first" else ("B_kj", "A_ik")
        derivation.rows = [
            ("entry C_ij = sum_k A_ik B_kj", Eq(C, entry)),
            (f"{held_word} held constant: first-order Taylor term of a b in {free_word} at the root 0",
             split["expansion"]),
            (f"{free_word} receives c times that term, c = R / (a b)", split["relevance_free"]),
            ("LRP-epsilon on the sum: R_k", product_relevance),
            ("share of A_ik, of B_kj", f"{share_a}, {share_b}"),
            ("R_{A_ik} from entry ij", to_a),
            ("R_{B_kj} from entry ij", to_b),
            ("passed down sum_k (R_{A_ik} + R_{B_kj})", simplify(passed.doit())),
        ]
        ratio = R_out / C  # R_ij / stab(C_ij), the kernel's coefficient with C stabilised
        derivation.results.update(share_first=share_a, share_second=share_b, ratio=ratio,
                                  product_relevance=product_relevance, passed=passed,
                                  held=self.held)
        derivation.notes = [
            f"CP-LRP (Ali et al. 2022, Sec. 3) treats the attention weights as constants: with "
            f"{held_word} held, C_ij = sum_k A_ik B_kj is linear in the free factor. Each product "
            f"is a function of {free_word} alone; its first-order Taylor expansion at the root 0 "
            f"is the product itself, so {free_word} receives its whole term and {held_word} none "
            f"(shares {share_a}, {share_b}). LRP-epsilon on the sum over k splits R_ij: "
            "R_k = A_ik B_kj / (C_ij + eps sign(C_ij)) R_ij.",
            "In matrix form (A held): R_A = 0 and R_B = B * (A^T rho), "
            "rho_ij = R_ij / (C_ij + eps sign(C_ij)); with eps -> 0 this is gradient x input of "
            "C with A detached, which is what LXT's cplrp does by detaching q and k.",
            "Everything that computes the held factor (the softmax, Q K^T, q and k) receives no "
            "relevance through this node.",
            "What is absorbed: the stabiliser keeps eps / (|C_ij| + eps) of R_ij, as for "
            "matmul_epsilon: both pass the same total, only its split between the factors differs.",
            "Kernel layout: a (..., p, q) and b (..., q, r) (b (..., r, q) with transpose_b), "
            "relevance_out (..., p, r); returns (R_a, R_b) in their shapes, R of the held "
            "factor zero.",
        ]
        bases = ((first, 0, 2), (second, 0, 2))  # C_ij >= 0: the case the formula is written for
        derivation.proofs = [
            *_epsilon_sum_proofs(passed, stabilised, self.expected.get("conservation", Status.PROVED)),
            _proved_if("held_receives_nothing",
                       f"the held factor ({held_word}) receives 0 for every k, eps and R",
                       simplify(held_relevance.doit()) == 0,
                       f"its share of the Taylor term is {share_a if self.held == 'first' else share_b}"),
            prove_identity("same_total_as_uniform",
                           "the same total passes as under matmul_epsilon (uniform split): only "
                           "the split between the factors differs",
                           passed - uniform_passed, bases, index=k),
        ]
        return derivation
