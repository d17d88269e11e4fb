"""Shared by the code-generation tests: the derived rules (derived once) and a 50-digit reference.

The reference evaluates a Derivation's own relevance expression R_ij (``results["relevance"]``,
written by SymPy with Sums and Heaviside, not through the generator's separated form) with
mpmath at 50 digits on a concrete dense layer, neuron by neuron, and sums R_i = sum_j R_ij.
It shares no code with the generated kernels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import mpmath
import numpy as np
from sympy import Rational, S, sympify

from lrp_sym.codegen import derive_folder
from lrp_sym.numeric import LayerInstance
from lrp_sym.sums import over_inputs
from lrp_sym.symbols import R, b, eps, h, j, l, w, x

EPS64 = float(np.finfo(np.float64).eps)


@functools.lru_cache(maxsize=1)
def shipped_sources():
    """The shipped derivations, derived once per test session."""
    return tuple(derive_folder())


def shipped_derivations() -> dict:
    return {source.derivation.name: source.derivation for source in shipped_sources()}


@dataclass
class Reference:
    """R_i at 50 digits and the scale of its rounding errors, per sample and input."""

    relevance: np.ndarray  # float64 rounding of the 50-digit values
    scale: np.ndarray  # sum_j sum_k |R^k_ij| (1 + sum_i'|q^k_i'j| / |d_kj|), for tolerances


def _exact(value: float) -> Rational:
    return Rational(float(value))  # exact binary value of the float64


def reference_relevance(derivation, weight, bias, x_batch, relevance_out, parameters=None,
                        lower=None, upper=None) -> Reference:
    """Evaluate ``derivation.results["relevance"]`` at 50 digits on a dense layer.

    The rule's own stabiliser eps (LRP-epsilon) enters the symbolic R_ij as +eps (active
    neuron); for a neuron with negative denominator it is evaluated with -eps, matching
    eps sign(d).
    """
    n_in, n_out = weight.shape
    parameters = dict(parameters or {})
    values_of_parameters = {p: _exact(parameters.get(str(p), derivation.defaults[p]))
                            for p in derivation.parameters}
    relevance = derivation.results["relevance"]
    terms = [(sympify(t.coefficient), sympify(t.q), sympify(t.bias_share))
             for t in derivation.terms]
    stabiliser = sympify(derivation.stabiliser)
    batch = x_batch.shape[0]
    out = np.zeros((batch, n_in))
    scale = np.zeros((batch, n_in))
    for sample in range(batch):
        totals = [mpmath.mpf(0)] * n_in
        for neuron in range(n_out):
            values = dict(values_of_parameters)
            for m in range(1, n_in + 1):
                values[x[m]] = _exact(x_batch[sample, m - 1])
                values[w[m, j]] = _exact(weight[m - 1, neuron])
                if lower is not None:
                    values[l[m]] = _exact(np.broadcast_to(lower, x_batch.shape)[sample, m - 1])
                    values[h[m]] = _exact(np.broadcast_to(upper, x_batch.shape)[sample, m - 1])
            values[b[j]] = _exact(bias[neuron])
            values[R[j]] = _exact(relevance_out[sample, neuron])
            layer = LayerInstance(n_in, values)
            if stabiliser != 0:  # eps sign(d): the sign of the unstabilised denominator
                (coefficient, q, share), = terms
                d = layer.evaluate(over_inputs(q) + share)
                if d < 0:
                    values[eps] = -values[eps]
            with mpmath.workdps(50):
                for m in range(1, n_in + 1):
                    totals[m - 1] += layer.evaluate(relevance, m)
                for coefficient, q, share in terms:
                    d = layer.evaluate(over_inputs(q) + share + stabiliser)
                    spread = layer.evaluate(over_inputs(abs(q))) + abs(layer.evaluate(
                        share + stabiliser if share + stabiliser != 0 else S.Zero))
                    for m in range(1, n_in + 1):
                        part = layer.evaluate(coefficient * q * R[j], m) / d
                        scale[sample, m - 1] += float(abs(part) * (1 + spread / abs(d)))
        out[sample] = [float(total) for total in totals]
    return Reference(out, scale)


def ulps(value: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|value - reference| in units of the last place of the reference."""
    return np.abs(value - reference) / np.spacing(np.maximum(np.abs(reference), np.finfo(float).tiny))
