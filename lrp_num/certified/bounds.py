"""Proved error bounds of the float64 engine from certified enclosures.

For an engine value e and the ball [m +- r] that contains the exact value R,
|e - R| <= |e - m| + r, evaluated in ball arithmetic and rounded up: a proved bound. Per node
(the relevance arriving at its output) and for the input relevance, :func:`node_bounds` states
it in ulps of the largest |R|: "every engine value lies within k ulps of the exact result",
with k = max_p (|e_p - m_p| + r_p) / ulp(max_p |m_p|). Values whose ball is NaN (they depend on
a neuron the enclosure could not decide) are left out and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lrp_num.certified.balls import radius_float, require_flint, upper_float, working_precision


@dataclass
class NodeBound:
    """The proved bound at one node (or the input) over the samples seen.

    ``ulps``: k, the largest proved |engine - exact| in ulps of max |R| there; ``max_error``:
    the largest proved |engine - exact|; ``relative_radius``: the largest radius / max |R|;
    ``undecided_neurons``: neurons of this node the enclosure could not decide (summed over
    samples); ``uncertified``: values at this node whose ball is NaN.
    """

    node: str
    rule: str
    ulps: float = 0.0
    max_error: float = 0.0
    relative_radius: float = 0.0
    undecided_neurons: int = 0
    uncertified: int = 0


def proved_errors(engine: np.ndarray, balls: np.ndarray, bits: int) -> np.ndarray:
    """Per value, a float64 upper bound on |engine - exact| (inf where the ball is NaN)."""
    arb = require_flint().arb
    engine = np.asarray(engine, dtype=np.float64).ravel()
    out = np.empty(len(engine))
    with working_precision(bits):
        for k, (value, ball) in enumerate(zip(engine, balls)):
            out[k] = upper_float(abs(arb(float(value)) - ball)) if ball.is_finite() else math.inf
    return out


def measure(bound: NodeBound, engine: np.ndarray, balls: np.ndarray, bits: int) -> np.ndarray:
    """Fold one sample's values at a node into ``bound``; return the per-value proved errors."""
    errors = proved_errors(engine, balls, bits)
    finite = np.isfinite(errors)
    bound.uncertified += int((~finite).sum())
    if finite.any():
        mids = np.array([abs(float(b.mid())) for b, f in zip(balls, finite) if f])
        radii = np.array([radius_float(b) for b, f in zip(balls, finite) if f])
        scale = float(mids.max()) or 1.0
        bound.ulps = max(bound.ulps, float(errors[finite].max() / np.spacing(scale)))
        bound.max_error = max(bound.max_error, float(errors[finite].max()))
        bound.relative_radius = max(bound.relative_radius, float(radii.max() / scale))
    return errors


def node_bounds(results, engine_at: list[dict[str, np.ndarray]], rules: dict[str, str]) -> list[NodeBound]:
    """One :class:`NodeBound` per node that has engine values, input last, over the samples.

    ``results``: :class:`~lrp_num.certified.network.CertifiedResult` per sample; ``engine_at``:
    per sample, node name -> the engine's relevance arriving at that node's output (and the
    input's name -> the input relevance); ``rules``: node name -> rule (for the report).
    """
    bounds: dict[str, NodeBound] = {}
    for result, engine in zip(results, engine_at):
        for name, values in engine.items():
            if name not in result.relevance_at:
                continue
            bound = bounds.setdefault(name, NodeBound(name, rules.get(name, "")))
            measure(bound, values, result.relevance_at[name], result.bits)
        for name, record in result.records.items():
            if record.undecided:
                bound = bounds.setdefault(name, NodeBound(name, rules.get(name, "")))
                bound.undecided_neurons += len(record.undecided)
    # nodes that only pass relevance on (ReLU, Flatten, ...) repeat the node above: shown where undecided
    ordered = [bound for name, bound in bounds.items() if name != results[0].input_name
               and (bound.rule not in ("pass", "") or bound.undecided_neurons)]
    if results[0].input_name in bounds:
        ordered.append(bounds[results[0].input_name])
    return ordered


__all__ = ["NodeBound", "measure", "node_bounds", "proved_errors"]
