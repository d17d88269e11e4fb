"""LayerNorm and RMSNorm over the last axis, n features (n symbolic): two rules, derived.

LayerNorm y_j = gamma_j (x_j - mu) / sigma + beta_j, mu = sum_k x_k / n,
sigma = sqrt(sum_k (x_k - mu)^2 / n + e); RMSNorm y_j = gamma_j x_j / sigma,
sigma = sqrt(sum_k x_k^2 / n + e) (Ba et al. 2016, arXiv:1607.06450; Zhang & Sennrich 2019,
NeurIPS). Relevance model: F(x) = sum_j c_j y_j(x) with c_j = R_j / y_j held constant (as for the
addition), R_i = x_i dF/dx_i:

* ``detached`` (CP-LRP, Ali et al. 2022, ICML): sigma held constant, the layer becomes the linear
  map y = W x + beta with W_ji = gamma_j (delta_ji - 1/n) / sigma (RMSNorm: gamma_j delta_ji /
  sigma). F is linear, so its Taylor expansion at x~ = 0 is exact: F(x) = F(0) + sum_i R_i with
  F(0) = sum_j c_j beta_j, the bias's share. This is LRP-0 (with a stabiliser, LRP-epsilon) on
  that linear map: conservative up to the bias share; RMSNorm (no bias) conserves exactly.
* ``full``: sigma's dependence on x kept (the whole Jacobian), the first-order term at x
  (gradient x input). y is invariant under scaling x - mu, so by Euler's theorem the Jacobian
  annihilates x - mu up to e: sum_i R_i = e / sigma^2 sum_j c_j (y_j - beta_j); almost all
  relevance is absorbed when e << var.

Every derivative is SymPy's, of sums with symbolic n; the conservation identities are proved by
expanding the sums and substituting the definitions of mu and sigma.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sympy import (Add, Dummy, Expr, IndexedBase, Piecewise, S, Sum, Symbol, expand, factor_terms,
                   simplify, sqrt)

from lrp_sym.derivation import Derivation
from lrp_sym.domains import REAL_SPACE
from lrp_sym.proofs import Proof, Status
from lrp_sym.symbols import i, j, k, n, x

#: the layer's scale and shift, the relevance model's constants c_j = R_j / y_j
norm_gamma = IndexedBase("gamma_n", real=True)
norm_beta = IndexedBase("beta_n", real=True)
norm_c = IndexedBase("c_n", real=True)
#: the layer's variance epsilon, its mean and normaliser (as symbols where held)
norm_eps = Symbol("e", positive=True)
MU = Symbol("mu", real=True)
SIGMA = Symbol("sigma", positive=True)
NORMS = ("layernorm", "rmsnorm")


def definitions(norm: str) -> dict[str, Expr]:
    """mean, sigma (in the symbol mu) and y_j of ``norm``."""
    if norm == "layernorm":
        return {"mean": Sum(x[k], (k, 1, n)) / n,
                "sigma": sqrt(Sum((x[k] - MU) ** 2, (k, 1, n)) / n + norm_eps),
                "output": norm_gamma[j] * (x[j] - MU) / SIGMA + norm_beta[j]}
    return {"mean": S.Zero,
            "sigma": sqrt(Sum(x[k] ** 2, (k, 1, n)) / n + norm_eps),
            "output": norm_gamma[j] * x[j] / SIGMA}


def _in_range(expr: Expr) -> Expr:
    """Take the branch 1 <= i <= n of the Piecewise that summing a KroneckerDelta leaves."""
    return expr.replace(lambda e: isinstance(e, Piecewise), lambda e: e.args[0][0])


def _d_dx(expr: Expr) -> Expr:
    """d expr / d x_i for an expression with sums over the features (1 <= i <= n)."""
    return _in_range(expr.diff(x[i]).doit())


def derivative(norm: str, detached: bool) -> Expr:
    """dF/dx_i of F = sum_j c_j y_j, mu live, sigma held (``detached``) or live, by the chain
    rule through the symbols mu and sigma; returns it with mu and sigma as symbols."""
    parts = definitions(norm)
    objective = Sum(norm_c[j] * parts["output"], (j, 1, n))
    total = _d_dx(objective) + objective.diff(MU).doit() * _d_dx(parts["mean"])
    if not detached:
        sigma_squared = parts["sigma"] ** 2
        # d sigma / d x_i = (d sigma^2/dx_i + d sigma^2/dmu dmu/dx_i) / (2 sigma)
        d_sigma = (_d_dx(sigma_squared) + sigma_squared.diff(MU).doit() * _d_dx(parts["mean"])
                   ) / (2 * SIGMA)
        total += objective.diff(SIGMA).doit() * d_sigma
    return _centred(simplify(total), norm)


def _centred(expr: Expr, norm: str) -> Expr:
    """Use sum_k (x_k - mu) = 0 (mu the mean), which the chain rule leaves as a term."""
    if norm != "layernorm":
        return expr
    def centred(e: Expr) -> bool:
        if not isinstance(e, Sum):
            return False
        factor = simplify(e.function / (x[e.limits[0][0]] - MU))
        return not factor.has(x) and e.limits[0][0] not in factor.free_symbols
    return expr.replace(centred, lambda e: S.Zero)


# -- proving identities of sums over the features -------------------------------------------

def _renamed(expr: Expr, index: Symbol) -> Expr:
    """Every sum over the features with its dummy renamed to ``index``, constants pulled out."""
    def rename(term: Sum) -> Expr:
        (variable, low, high), = term.limits
        return factor_terms(Sum(term.function.xreplace({variable: index}), (index, low, high)))
    expanded = expand(expr)
    expanded = expanded.replace(lambda e: isinstance(e, Sum), lambda e: factor_terms(
        Sum(expand(e.function), e.limits)))
    expanded = expand(expanded.replace(lambda e: isinstance(e, Sum), _split))
    return expanded.replace(lambda e: isinstance(e, Sum), rename)


def _split(term: Sum) -> Expr:
    function = expand(term.function)
    if isinstance(function, Add):
        return Add(*(factor_terms(Sum(part, term.limits)) for part in function.args))
    return factor_terms(term)


def _moments(norm: str, index: Symbol) -> dict[Expr, Expr]:
    """sum_i x_i = n mu, sum_i x_i^2 = n (sigma^2 - e [+ mu^2]): the definitions of mu, sigma."""
    if norm == "layernorm":
        return {Sum(x[index] ** 2, (index, 1, n)): n * (SIGMA**2 - norm_eps + MU**2),
                Sum(x[index], (index, 1, n)): n * MU}
    return {Sum(x[index] ** 2, (index, 1, n)): n * (SIGMA**2 - norm_eps)}


def sums_equal(left: Expr, right: Expr, norm: str) -> bool:
    """left == right for every n, after expanding sums and substituting mu and sigma."""
    index = Dummy("m", integer=True)
    difference = _renamed(left - right, index).subs(_moments(norm, index))
    return simplify(difference) == 0


#: a layer of two features where conservation fails: x = (2, -1), gamma = 1, beta = 1, c = 1, e = 1
_WITNESS = {"x": (2, -1), "gamma_n": (1, 1), "beta_n": (1, 1), "c_n": (1, 1)}


def _witness(total: Expr, claim: Expr, norm: str) -> dict[str, str]:
    """sum_j R_j - sum_i R_i on the layer :data:`_WITNESS` (n = 2, e = 1), exactly."""
    parts = definitions(norm)
    concrete = (claim - total).subs(n, 2).doit()
    concrete = concrete.subs(SIGMA, parts["sigma"].subs(n, 2).doit())
    concrete = concrete.subs(MU, parts["mean"].subs(n, 2).doit())
    values = {base[m + 1]: value for name, entries in _WITNESS.items()
              for base in (IndexedBase(name, real=True),) for m, value in enumerate(entries)}
    values[norm_eps] = 1
    residual = simplify(concrete.subs(values))
    return {**{name: str(entries) for name, entries in _WITNESS.items()}, "e": "1", "n": "2",
            "sum R_j - sum R_i": str(residual)}


@dataclass
class NormalizationRule:
    """One rule for LayerNorm and RMSNorm: sigma ``detached`` (CP-LRP) or kept (full).

    Parameters
    ----------
    name, title, paper : str
    detached : bool
    expected : dict
        Expected statuses of proofs that do not hold, by name.
    """

    name: str
    title: str
    paper: str
    detached: bool
    expected: dict[str, Status] = field(default_factory=dict)

    def derive(self) -> Derivation:
        derivation = Derivation(self.name, self.title, self.paper, domain=REAL_SPACE,
                                neuron="norm")
        derivation.notes = [
            "Normalisation over the last axis of n features (n symbolic), any leading shape "
            "(batch, tokens, ...). Relevance model F(x) = sum_j c_j y_j(x), c_j = R_j / y_j "
            "held constant (the kernel stabilises y_j as LRP-epsilon does: eps and stabilise "
            "as for every ratio rule), and R_i = x_i dF/dx_i.",
            ("sigma is held constant (CP-LRP): the layer is the linear map y = W x + beta, and F "
             "is linear, so F(x) = F(0) + sum_i R_i exactly: the bias takes F(0) = "
             "sum_j c_j beta_j, everything else reaches the input. RMSNorm has no bias and "
             "conserves exactly (with eps = 0)." if self.detached else
             "sigma's dependence on x is kept (the full Jacobian) and the expansion is at x "
             "(gradient x input). y does not change when x - mu is scaled, so the Jacobian "
             "maps x - mu to e / sigma^2 of its image: the input receives only e / sigma^2 of "
             "sum_j c_j (y_j - beta_j), and the rest is absorbed. This is why CP-LRP detaches "
             "sigma."),
            "Kernel: relevance(op, x, relevance_out, eps=0.0, stabilise='zero') with op.norm "
            "'layernorm' or 'rmsnorm', op.weight (gamma), op.bias (beta; zero for RMSNorm) and "
            "op.eps (e).",
        ]
        for norm in NORMS:
            self._derive_one(derivation, norm)
        return derivation

    def _derive_one(self, derivation: Derivation, norm: str) -> None:
        parts = definitions(norm)
        gradient = derivative(norm, self.detached)
        relevance = x[i] * gradient
        derivation.rows += [
            (f"{norm}: y_j", parts["output"]),
            (f"{norm}: mu", parts["mean"]),
            (f"{norm}: sigma", parts["sigma"]),
            (f"{norm}: dF/dx_i, F = sum_j c_j y_j" + (" (sigma held)" if self.detached else ""),
             gradient),
            (f"{norm}: R_i = x_i dF/dx_i", relevance),
        ]
        derivation.results.update({f"mean_{norm}": parts["mean"], f"sigma_{norm}": parts["sigma"],
                                   f"output_{norm}": parts["output"],
                                   f"relevance_{norm}": relevance})
        total = Sum(relevance.subs(i, j), (j, 1, n))
        passed = Sum(norm_c[j] * (parts["output"] - (norm_beta[j] if norm == "layernorm"
                                                      else 0)), (j, 1, n))
        bias_share = Sum(norm_c[j] * norm_beta[j], (j, 1, n)) if norm == "layernorm" else S.Zero
        kept = "c_j (y_j - beta_j)" if norm == "layernorm" else "c_j y_j (no bias)"
        if self.detached:
            claim = passed
            statement = (f"{norm}: sum_i R_i = sum_j {kept}: everything but the bias share "
                         f"sum_j c_j beta_j" if norm == "layernorm" else
                         f"{norm}: sum_i R_i = sum_j {kept}")
        else:
            claim = norm_eps / SIGMA**2 * passed
            statement = f"{norm}: sum_i R_i = e / sigma^2 sum_j {kept}: the rest is absorbed"
        holds = sums_equal(total, claim, norm)
        derivation.proofs.append(Proof(
            f"passed_{norm}", statement, Status.PROVED if holds else Status.UNDECIDED,
            self.expected.get(f"passed_{norm}", Status.PROVED),
            "sums expanded, mu and sigma substituted by their definitions (n symbolic)"
            if holds else "the symbolic check did not close"))
        # conservation: sum_i R_i = sum_j R_j = sum_j c_j y_j (c_j = R_j / y_j, no stabiliser)
        conserved = sums_equal(total, Sum(norm_c[j] * parts["output"], (j, 1, n)), norm)
        derivation.proofs.append(Proof(
            f"conservation_{norm}", f"{norm}: conservation, sum_i R_i = sum_j R_j "
            f"(c_j = R_j / y_j)", Status.PROVED if conserved else Status.REFUTED,
            self.expected.get(f"conservation_{norm}", Status.PROVED),
            "sums expanded, mu and sigma substituted (n symbolic)" if conserved else
            (f"sum_j R_j - sum_i R_i = {bias_share}" if self.detached else
             "sum_j R_j - sum_i R_i = (1 - e / sigma^2) sum_j c_j (y_j - beta_j) + "
             "sum_j c_j beta_j"),
            None if conserved else _witness(total, Sum(norm_c[j] * parts["output"], (j, 1, n)),
                                            norm)))


__all__ = ["MU", "NORMS", "NormalizationRule", "SIGMA", "definitions", "derivative", "norm_beta",
           "norm_c", "norm_eps", "norm_gamma", "sums_equal"]
