"""What the audit finds beyond a deviation: rules applied outside their domain, and the causes
of a departure from the deep Taylor derivation.

**Domains.** Every root-point rule is derived on an input domain (z+ and gamma on x >= 0, z^B on
its box, w^2 and LRP-0 on R^n: the reference's table
:data:`lrp_num.reference.ROOT_POINT_RULES`). A library that applies z+ to inputs of both signs
evaluates a formula outside the domain where it was derived: the audit counts those inputs and
the relevance they carry, and compares the library with the generalisation that does hold there
(:data:`GENERALISATIONS`: z+ with the input split by sign, Montavon et al. 2017 on x >= 0 and
LRP-alpha1-beta0 of Bach et al. 2015 on R^n). The DTD reference uses that generalisation on such
layers, so a library can no longer "agree with DTD" by evaluating the same formula outside its
domain.

**Causes.** Where the library's convention departs from DTD, each term of the convention
that the profile names is measured per layer, as a fraction of f_c(x) (the worst sample):

* the bias in the denominator (b^+ for zennit's z+, b^2 for its w^2, the full b for captum)
  and the stabiliser absorb the relevance the reference records for them at that layer
  (:attr:`lrp_num.reference.LayerTrace.absorbed_bias` and ``absorbed_stabiliser``), under the
  library's convention less under DTD;
* a missing input split moves relevance: sum over the inputs outside the orthant of
  |R_convention - R_DTD| at the layer's input;
* whatever else the layer absorbs beyond those two terms (a neuron with z_j = 0 whose
  relevance the library drops) is the difference of the absorbed fractions left over.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the rule that holds where a root-point rule meets inputs outside its domain
GENERALISATIONS = {"zplus": "zplus_split", "gamma": "gamma_split"}
#: how the report writes each domain
DOMAIN_TEXT = {"orthant": "x >= 0", "box": "l <= x <= h", "R^n": "R^n"}
_SPLIT_RULES = ("zplus_split", "gamma_split")
#: the kinds of cause: the bias in the denominator, the stabiliser, an input split DTD does not
#: have, a missing input split, and relevance absorbed otherwise (dropped neurons)
CAUSES = ("bias", "stabiliser", "input-split", "missing-input-split", "dropped")


@dataclass
class Cause:
    """One term of a library's convention and what it does to the relevance at one layer.

    ``kind`` is one of :data:`CAUSES`; ``term`` says it in words; ``effect`` is "absorbs" (the
    term keeps ``share`` f_c from the layer's inputs, signed) or "moves" (it redistributes
    ``share`` f_c among them).
    """

    kind: str
    term: str
    effect: str
    share: float


def domain_of(rule: str) -> str:
    """The input domain rule ``rule`` is derived for ("R^n" for formula rules, defined everywhere)."""
    from lrp_num.reference import ROOT_POINT_RULES

    return ROOT_POINT_RULES.get(rule, "R^n")


def outside_domain(rule: str, a: np.ndarray, input_domain=None, first: bool = False) -> np.ndarray:
    """Mask of the entries of a layer's input ``a`` (batch, n) outside the domain of ``rule``.

    The box of z^B is the model's input box, so it applies at the first linear layer (``first``).
    """
    domain = domain_of(rule)
    a = np.asarray(a, dtype=np.float64)
    if domain == "orthant":
        return a < 0
    if domain == "box" and input_domain is not None and first:
        low = np.broadcast_to(input_domain.low, a.shape[1:]).reshape(1, -1)
        high = np.broadcast_to(input_domain.high, a.shape[1:]).reshape(1, -1)
        flat = a.reshape(len(a), -1)
        return ((flat < low) | (flat > high)).reshape(a.shape)
    return np.zeros(a.shape, dtype=bool)


def generalisation(rule: str) -> str | None:
    """The rule that holds where ``rule`` meets inputs outside its domain (None: none derived)."""
    return GENERALISATIONS.get(rule)


def bias_term(conventions, rule: str) -> str | None:
    """The bias term a library's convention puts in rule ``rule``'s denominator (None: no bias)."""
    bias = conventions.bias
    if bias == "dtd" or rule in ("zbox", "flat"):
        return None
    if bias == "zennit":
        return {"zplus": "b^+ in the denominator", "zplus_split": "b^+ in the denominator",
                "w2": "b^2 in w2's denominator", "gamma": "b + gamma b^+ in the denominator",
                "gamma_split": "b + gamma b^+ in the denominator",
                "alphabeta": "b^+ and b^- in the two denominators"}.get(rule, "b in the denominator")
    if bias == "captum":
        return "the full bias b in the denominator"
    return "the bias as a neuron (b in the denominator)"


def stabiliser_term(conventions) -> str:
    where = "every denominator" if conventions.stabilise == "everywhere" else "zero denominators"
    return f"the stabiliser {conventions.eps:g} sign(d) on {where}"


def absorbed_terms(results, key) -> dict[object, tuple[np.ndarray, np.ndarray]]:
    """Per node (``key(trace)``): (relevance kept by the bias, by the stabiliser), per sample;
    traces with the same key add up."""
    from lrp_num import reference

    terms: dict[object, list[list[float]]] = {}
    for s, result in enumerate(results):
        for trace in result.traces:
            pair = terms.setdefault(key(trace), [[0.0] * len(results), [0.0] * len(results)])
            pair[0][s] += float(reference.to_float(np.asarray(trace.absorbed_bias)))
            pair[1][s] += float(reference.to_float(np.asarray(trace.absorbed_stabiliser)))
    return {k: (np.array(v[0]), np.array(v[1])) for k, v in terms.items()}


def trace_terms(results, key) -> dict[object, dict[str, np.ndarray]]:
    """Per node (``key(trace)``), per sample: what its trace records of the relevance it keeps
    ("bias", "stabiliser", "absorbed": sum R_out - sum R_in) and passes down ("relevance_in",
    (batch, n))."""
    from lrp_num import reference

    values: dict[object, dict[str, list]] = {}
    for result in results:
        for trace in result.traces:
            entry = values.setdefault(key(trace), {"bias": [], "stabiliser": [], "absorbed": [], "relevance_in": []})
            relevance_in = reference.to_float(np.asarray(trace.relevance_in)).ravel()
            relevance_out = reference.to_float(np.asarray(trace.relevance_out)).ravel()
            entry["bias"].append(float(reference.to_float(np.asarray(trace.absorbed_bias))))
            entry["stabiliser"].append(float(reference.to_float(np.asarray(trace.absorbed_stabiliser))))
            entry["absorbed"].append(float(relevance_out.sum() - relevance_in.sum()))
            entry["relevance_in"].append(relevance_in)
    return {k: {name: np.array(v) for name, v in entry.items()} for k, entry in values.items()}


def _worst(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values[np.argmax(np.abs(values))]) if values.size else 0.0


def causes(conventions, own_rule: str, dtd_rule: str, own_terms, dtd_terms, absorbed_own: np.ndarray,
           absorbed_dtd: np.ndarray, outside: np.ndarray | None, own_in: np.ndarray | None,
           dtd_in: np.ndarray | None, f_c: np.ndarray, threshold: float) -> list[Cause]:
    """The terms of the convention that make one layer depart from DTD (see the module docstring).

    ``own_terms`` / ``dtd_terms``: (bias, stabiliser) absorbed at the layer under the library's
    convention and under DTD, per sample (None: the layer has no trace); ``absorbed_*``: what
    the layer absorbs in all, fractions of f_c per sample; ``outside``: the mask of the layer's
    inputs outside the orthant, with the relevance there (``own_in``, ``dtd_in``, (batch, n)).
    Terms whose share stays within ``threshold`` (fractions of f_c) are left out.
    """
    scale = np.where(f_c != 0, np.abs(f_c), 1.0)
    zero = np.zeros(len(f_c))
    own_bias, own_stab = own_terms if own_terms is not None else (zero, zero)
    dtd_bias, dtd_stab = dtd_terms if dtd_terms is not None else (zero, zero)
    found = []
    bias = (own_bias - dtd_bias) / scale
    stabiliser = (own_stab - dtd_stab) / scale
    term = bias_term(conventions, own_rule)
    if term is not None and np.max(np.abs(bias)) > threshold:
        found.append(Cause("bias", term, "absorbs", _worst(bias)))
    if np.max(np.abs(stabiliser)) > threshold:
        found.append(Cause("stabiliser", stabiliser_term(conventions), "absorbs", _worst(stabiliser)))
    if outside is not None and outside.any() and own_in is not None and dtd_in is not None \
            and (own_rule in _SPLIT_RULES) != (dtd_rule in _SPLIT_RULES):
        moved = np.where(outside, np.abs(own_in - dtd_in), 0.0).reshape(len(f_c), -1).sum(axis=1) / scale
        if np.max(moved) > threshold:
            what = ("the input split by sign (x^+ w^+ + x^- w^-), which DTD does not have"
                    if own_rule in _SPLIT_RULES else
                    "the input split by sign missing: x w^+ on negative inputs instead of x^- w^-")
            kind = "input-split" if own_rule in _SPLIT_RULES else "missing-input-split"
            found.append(Cause(kind, what, "moves", float(np.max(moved))))
    if absorbed_own is not None and absorbed_dtd is not None:
        rest = np.nan_to_num(absorbed_own - absorbed_dtd) - bias - stabiliser
        if np.max(np.abs(rest)) > threshold:
            found.append(Cause("dropped", "relevance absorbed beyond the bias and stabiliser terms "
                               "(e.g. neurons with z_j = 0 whose relevance is dropped)", "absorbs", _worst(rest)))
    return found


def describe(causes_: list[Cause]) -> str:
    """'term absorbs 0.12 f_c more than under DTD; term moves 0.03 f_c'."""
    def one(c: Cause) -> str:
        if c.effect == "absorbs":
            return f"{c.term} absorbs {abs(c.share):.3g} f_c {'more' if c.share > 0 else 'less'} than under DTD"
        return f"{c.term} moves {c.share:.3g} f_c"
    return "; ".join(one(c) for c in causes_)


__all__ = ["CAUSES", "Cause", "DOMAIN_TEXT", "GENERALISATIONS", "absorbed_terms", "bias_term", "causes", "describe",
           "domain_of", "generalisation", "outside_domain", "stabiliser_term", "trace_terms"]
