"""One layer's certified contributions R_ij for chosen output neurons (layer-local verification).

Layer-local verification takes the engine's own relevance above a layer as given (float64, so
exact balls), recomputes the contributions R_ij of a sample of that layer's output neurons by
the rule's definition in balls, and compares them with the engine's. :func:`layer_contributions`
is that recomputation for one node of a network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from lrp_num.certified.balls import require_flint, to_balls, working_precision
from lrp_num.certified.layers import (FORMULA_RULES, ROOT_POINT_RULES, NodeRecord, formula_contributions,
                                      root_point_contributions)
from lrp_num.certified.network import prepare_balls
from lrp_num.errors import LRPError, ShapeError, UnknownRuleError


@dataclass
class Contributions:
    """R_ij of the output neurons ``neurons`` of one linear node, as balls.

    ``inputs[k, m]`` is the flattened input index of slot m of neuron ``neurons[k]`` (the value
    ``n_in`` and ``connected[k, m] == False`` mark a padding slot), ``relevance[k, m]`` its
    R_ij ball; ``undecided[k]`` says the enclosure could not decide neuron k (its row is NaN).
    """

    neurons: np.ndarray
    inputs: np.ndarray
    connected: np.ndarray
    relevance: np.ndarray
    undecided: np.ndarray
    reasons: dict


def layer_contributions(network, node: str, x: np.ndarray, relevance_above: np.ndarray, neurons,
                        rule: str, parameters: Mapping[str, Any] | None = None, *, input_shape: tuple[int, ...],
                        dps: int = 50, conventions=None, lower=None, upper=None) -> Contributions:
    """The contributions R_ij of ``neurons`` (flattened output indices) of the linear node ``node``.

    Parameters
    ----------
    network : Graph or Sequential
    node : str
        The node's name (``layer{k}`` in a Sequential).
    x : ndarray
        The node's input for one sample (float64, any shape; flattened in C order), taken as exact.
    relevance_above : ndarray
        The relevance arriving at the node's output for that sample (float64), taken as exact.
    neurons : sequence of int
        Output neurons to recompute.
    rule, parameters : str, mapping
        The node's rule and its parameters (defaults of the rule where omitted).
    input_shape : tuple
        The network's per-sample input shape (to lay out its nodes).
    lower, upper : ndarray, optional
        The input box (z^B at a first linear node), the node input's shape.

    Returns
    -------
    Contributions
        R_ij = c_j w_ij (x_i - x~_ij) for root-point rules (Montavon et al. 2017), the formula of
        the rule otherwise (Bach et al. 2015), as balls containing the exact values.
    """
    require_flint()
    from lrp_num.reference.api import _conventions
    from lrp_num.reference.directions import RULE_DEFAULTS

    balls = prepare_balls(network, tuple(input_shape), dps)
    by_name = {n.name: n for n in balls.nodes}
    if node not in by_name or by_name[node].index not in balls.matrices:
        raise LRPError(f"{node!r} is no linear node of the network")
    matrix = balls.matrices[by_name[node].index]
    x = np.asarray(x, dtype=np.float64).ravel()
    relevance_above = np.asarray(relevance_above, dtype=np.float64).ravel()
    if x.size != matrix.n_in or relevance_above.size != matrix.n_out:
        raise ShapeError(f"node {node!r} takes {matrix.n_in} inputs and has {matrix.n_out} outputs, "
                         f"got {x.size} and {relevance_above.size}")
    neurons = np.asarray(neurons, dtype=np.int64).ravel()
    if neurons.size and (neurons.min() < 0 or neurons.max() >= matrix.n_out):
        raise ShapeError(f"neurons must lie in 0 .. {matrix.n_out - 1}")
    if rule not in ROOT_POINT_RULES and rule not in FORMULA_RULES:
        raise UnknownRuleError(f"unknown rule {rule!r}")
    parameters = {**RULE_DEFAULTS.get(rule, {}), **dict(parameters or {})}
    conv = _conventions(conventions)
    record = NodeRecord(node, rule)
    with working_precision(balls.bits):
        x_ext = np.append(to_balls(x), require_flint().arb(0))
        r = to_balls(relevance_above)
        if rule in ROOT_POINT_RULES:
            bounds = None
            if rule == "zbox":
                if lower is None or upper is None:
                    from lrp_num.errors import MissingBoundsError
                    raise MissingBoundsError("rule 'zbox' needs lower= and upper=")
                zero = require_flint().arb(0)
                bounds = tuple(np.append(to_balls(np.broadcast_to(b, x.shape).ravel() if np.ndim(b) else
                                                  np.full(x.size, float(b))), zero) for b in (lower, upper))
            rel = root_point_contributions(rule, matrix, x_ext, r, neurons, parameters, conv, bounds, record)
        else:
            rel = formula_contributions(rule, matrix, x_ext, r, neurons, parameters, conv, record)
    undecided = np.isin(neurons, record.undecided)
    return Contributions(neurons, matrix.index[neurons], matrix.connected[neurons], rel, undecided,
                         dict(record.reasons))


__all__ = ["Contributions", "layer_contributions"]
