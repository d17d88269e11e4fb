"""The network in balls: the forward pass and the relevance pass over the nodes, certified.

:func:`explain_balls` recomputes what :func:`lrp_num.explain` computes, following the rules'
definitions as the mpmath reference does (:mod:`lrp_num.reference`), in Arb's ball arithmetic
(python-flint): each relevance value comes back as a ball [mid +- rad] that provably contains
the exact real-number result of the rule on the float64 weights and inputs.

The structure (which nodes, their window geometry, the rule of each node, where a batch norm
folds) is the reference's (:func:`lrp_num.reference.prepare`, :func:`lrp_num.reference.layer_plan`);
every number is recomputed here in balls:

* Dense, Conv2d and ChannelAffine weights are the float64 parameters, exact balls; a batch norm
  is folded in balls from its parameters (s = gamma / sqrt(var + eps), w' = s w,
  b' = s (b - mu) + beta); sum pooling has weight 1 and average pooling the exact 1 / n;
* ReLU: max(0, z), decided where the ball of z lies on one side of 0 (or is exactly 0), else
  the enclosure [0, max(0, z)] and the neuron counted undecided;
* max pooling: the enclosure of the maximum forward; winner-take-all backward where the balls
  single out the winner (or an exact tie);
* Add, Concat, Flatten, Identity, Dropout as in the reference.

Each node's undecided neurons are counted in a :class:`~lrp_num.certified.layers.NodeRecord`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lrp_num.certified.balls import precision_bits, require_flint, sign, to_balls, working_precision, zeros
from lrp_num.certified.layers import (FORMULA_RULES, ROOT_POINT_RULES, BallMatrix, NodeRecord, add_relevance,
                                     formula_contributions, maxpool_relevance, root_point_contributions)
from lrp_num.checks import check_dps, check_orthant
from lrp_num.errors import MissingBoundsError, UnsupportedLayerError
from lrp_num.layers import (AdaptiveAvgPool2d, Add, AvgPool2d, BatchNorm, ChannelAffine, Concat, ReLU, SumPool2d)
from lrp_num.layers.nonlinear import NONLINEAR
from lrp_num.layers.normalization import NORMALIZATION
from lrp_num.reference.linear import linear_matrix


def _layer_conventions(conventions: dict, rule: str) -> dict:
    """Under ``epsilon_stabilises`` a rule defined with its own stabiliser epsilon (LRP-epsilon and
    its sum-neuron form) gets no further one (:class:`lrp_num.engine.conventions.Conventions`)."""
    if conventions.get("epsilon_stabilises") and rule in ("epsilon", "add_epsilon"):
        return {**conventions, "eps": 0}
    return conventions

#: extra working digits beyond the requested ``dps`` (as the mpmath reference)
GUARD_DIGITS = 10


def _batchnorm_affine(batchnorm: BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """(s, t) per channel in balls: s_c = gamma_c / sqrt(var_c + eps), t_c = beta_c - mu_c s_c."""
    gamma, beta, mean, var = (to_balls(a) for a in (batchnorm.gamma, batchnorm.beta, batchnorm.mean, batchnorm.var))
    eps = to_balls(np.float64(batchnorm.eps))[()]
    scale = np.array([g / (v + eps).sqrt() for g, v in zip(gamma, var)], dtype=object)
    return scale, beta - mean * scale


def ball_matrix(node, prepared, input_shape: tuple[int, ...]) -> BallMatrix:
    """The linear node ``node`` of the reference's ``prepared`` network as a :class:`BallMatrix`."""
    geometry = prepared.matrices[node.index]
    source = node.source
    if isinstance(node.operation, ChannelAffine) and isinstance(source, BatchNorm):
        scale, shift = _batchnorm_affine(source)
        per_channel = geometry.n_out // len(scale)
        weight = np.repeat(scale, per_channel)[:, None]
        bias = np.repeat(shift, per_channel)
    elif isinstance(source, (SumPool2d, AvgPool2d, AdaptiveAvgPool2d)):
        arb = require_flint().arb
        weight = np.empty(geometry.index.shape, dtype=object)
        weight.fill(arb(0))
        for j, row in enumerate(geometry.weight):  # 1 / n exactly, n from the float64 1.0 / n
            for k, value in enumerate(row):
                if geometry.connected[j, k]:
                    weight[j, k] = arb(1) if type(source) is SumPool2d else arb(1) / int(round(1.0 / value))
        bias = zeros(geometry.n_out)
    else:
        plain, _ = linear_matrix(source, input_shape)  # the layer's own float64 parameters
        weight = to_balls(np.where(plain.connected, plain.weight, 0.0))
        bias = to_balls(plain.bias)
        for batchnorm in node.batchnorms:
            scale, shift = _batchnorm_affine(batchnorm)
            channel = np.arange(plain.n_out) // (plain.n_out // len(scale))
            weight = weight * scale[channel][:, None]
            bias = bias * scale[channel] + shift[channel]
    return BallMatrix(geometry.n_in, geometry.n_out, geometry.index, geometry.connected, weight, bias)


class BallNetwork:
    """A network prepared for ball arithmetic at ``bits`` of working precision: the reference's
    node structure and windows, every linear node as a :class:`BallMatrix`."""

    def __init__(self, network, input_shape: tuple[int, ...], dps: int) -> None:
        from lrp_num import reference

        self.prepared = reference.prepare(network, input_shape, dps)
        for node in self.prepared.nodes:
            if isinstance(node.operation, NONLINEAR + NORMALIZATION):
                raise UnsupportedLayerError(
                    f"node {node.name!r} ({node.operation!r}): the certified (ball arithmetic) "
                    f"reference has no element-wise nonlinearity or normalisation; verify without "
                    f"--certified (the mpmath reference covers it)")
        self.bits = precision_bits(dps, GUARD_DIGITS)
        self.matrices: dict[int, BallMatrix] = {}
        with working_precision(self.bits):
            for node in self.prepared.nodes:
                if node.index in self.prepared.matrices:
                    self.matrices[node.index] = ball_matrix(node, self.prepared,
                                                            self.prepared.shapes[node.inputs[0]])

    @property
    def nodes(self):
        return self.prepared.nodes

    def forward(self, x: np.ndarray, records: dict[str, NodeRecord] | None = None) -> dict[str, np.ndarray]:
        """Every node's output (and the input) for one sample, flattened, as balls; undecided
        ReLUs are counted in ``records`` (by node name)."""
        prepared = self.prepared
        values = {prepared.input_name: to_balls(np.asarray(x, dtype=np.float64).ravel())}
        zero = require_flint().arb(0)
        for node in prepared.nodes:
            inputs = [values[name] for name in node.inputs]
            a, operation = inputs[0], node.operation
            if node.index in self.matrices:
                matrix = self.matrices[node.index]
                out = (np.append(a, zero)[matrix.index] * matrix.weight).sum(axis=1) + matrix.bias
            elif node.index in prepared.windows:
                rows, connected = prepared.windows[node.index]
                out = np.empty(len(rows), dtype=object)
                for j, (window, inside) in enumerate(zip(rows, connected)):
                    cells = a[window[inside]]
                    top = cells[0]
                    for value in cells[1:]:
                        top = top.max(value)
                    out[j] = top
            elif isinstance(operation, ReLU):
                out = np.empty(len(a), dtype=object)
                for k, value in enumerate(a):
                    s = sign(value)
                    if s is None:
                        out[k] = value.max(zero)  # the enclosure of max(0, z); which side holds is open
                        if records is not None:
                            record = records.setdefault(node.name, NodeRecord(node.name, "relu"))
                            record.mark(k, "ReLU input contains 0")
                    else:
                        out[k] = value if s > 0 else zero
            elif isinstance(operation, Add):
                out = a
                for addend in inputs[1:]:
                    out = out + addend
            elif isinstance(operation, Concat):
                out = prepared.concatenate(node, inputs)
            else:
                out = a
            values[node.name] = out
        return values

    def node_relevance(self, node, activations, relevance, plan, conventions, bounds, record: NodeRecord,
                       check_domain: bool = True) -> list[np.ndarray]:
        """The relevance ``node`` passes to each of its inputs (balls), by its rule."""
        prepared = self.prepared
        inputs = [activations[name] for name in node.inputs]
        a, index = inputs[0], node.index
        if index in plan and (index in self.matrices or isinstance(node.operation, Add)):
            # LRP-epsilon's epsilon as its layer's only stabiliser (Conventions.epsilon_stabilises)
            conventions = _layer_conventions(conventions, plan[index][0])
        if index in self.matrices:
            rule, parameters = plan[index]
            matrix = self.matrices[index]
            x_ext = np.append(a, require_flint().arb(0))
            rows = np.flatnonzero([not r.is_zero() for r in relevance])
            if rule in ROOT_POINT_RULES:
                if check_domain and rule in ("zplus", "gamma"):
                    check_orthant(a, index, node.operation, rule)
                layer_bounds = None
                if rule == "zbox":
                    layer_bounds = self._box(node, bounds, matrix.n_in)
                rel = root_point_contributions(rule, matrix, x_ext, relevance, rows, parameters, conventions,
                                               layer_bounds, record)
            elif rule in FORMULA_RULES:
                rel = formula_contributions(rule, matrix, x_ext, relevance, rows, parameters, conventions, record)
            else:
                from lrp_num.errors import UnknownRuleError
                raise UnknownRuleError(f"node {node.name!r}: unknown rule {rule!r}")
            relevance_in = zeros(matrix.n_in + 1)
            if len(rows):
                np.add.at(relevance_in, matrix.index[rows], rel)
            return [relevance_in[: matrix.n_in]]
        if isinstance(node.operation, Add):
            rule, parameters = plan[index]
            return add_relevance(rule, inputs, relevance, parameters, conventions, record)
        if index in prepared.windows:
            return [maxpool_relevance(*prepared.windows[index], a, relevance, record,
                                      conventions.get("maxpool_ties", "split"))]
        if isinstance(node.operation, Concat):
            return prepared.split(node, relevance)
        return [relevance]

    def _box(self, node, bounds, n_in: int):
        if not self.prepared._box_allowed(node) or bounds is None:
            raise MissingBoundsError(f"node {node.name!r}: rule 'zbox' needs the input box, which only the "
                                     "network input has")
        zero = require_flint().arb(0)
        return tuple(np.append(bound, zero) for bound in bounds)

    def backward(self, activations, relevance_top, plan, conventions, bounds, check_domain: bool = True):
        """(input relevance, relevance arriving at every node's output, records by node name)."""
        prepared = self.prepared
        arriving = {prepared.output: relevance_top}
        relevance_at: dict[str, np.ndarray] = {}
        records: dict[str, NodeRecord] = {}
        for node in reversed(prepared.nodes):
            relevance = arriving.pop(node.name)
            relevance_at[node.name] = relevance
            rule = plan.get(node.index, ("maxpool" if node.index in prepared.windows else "pass", {}))[0]
            record = records.setdefault(node.name, NodeRecord(node.name, rule))
            lower = self.node_relevance(node, activations, relevance, plan, conventions, bounds, record,
                                        check_domain)
            for name, value in zip(node.inputs, lower):
                arriving[name] = arriving[name] + value if name in arriving else value
        relevance_at[prepared.input_name] = arriving.pop(prepared.input_name)
        return relevance_at[prepared.input_name], relevance_at, records


_PREPARED: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def prepare_balls(network, input_shape: tuple[int, ...], dps: int = 50) -> BallNetwork:
    """The :class:`BallNetwork` of ``network`` for ``input_shape`` at ``dps``; cached."""
    cache = _PREPARED.setdefault(network, {})
    key = (tuple(input_shape), int(dps))
    if key not in cache:
        cache[key] = BallNetwork(network, key[0], int(dps))
    return cache[key]


@dataclass
class CertifiedResult:
    """One sample's certified explanation.

    ``relevance`` (flattened input relevance), ``top`` and every entry of ``relevance_at`` (node
    name -> relevance arriving at its output, flattened; the input's name -> ``relevance``) and
    ``activations`` are object arrays of balls that contain the exact values; a NaN ball marks
    a value that depends on an undecided neuron. ``records`` counts those per node.
    """

    relevance: np.ndarray
    top: np.ndarray
    activations: dict
    relevance_at: dict
    records: dict[str, NodeRecord] = field(default_factory=dict)
    input_name: str = "input"
    bits: int = 0

    @property
    def undecided(self) -> dict[str, int]:
        """Undecided neurons per node (only nodes with some)."""
        return {name: len(record.undecided) for name, record in self.records.items() if record.undecided}


def explain_balls(network, x, rule: str | None = None, composite=None, target=None, *, dps: int = 50,
                  conventions=None, check_domain: bool = True, **rule_parameters) -> list[CertifiedResult]:
    """Certified relevance, per sample, by the definition of the rules, in ball arithmetic.

    Arguments as :func:`lrp_num.reference.explain_trace` (``input_domain=(low, high)`` or
    ``lower=``/``upper=`` for z^B); the working precision is (dps + 10) digits in bits.
    Raises MissingDependencyError without python-flint (the ``certified`` extra).
    """
    require_flint()
    from lrp_num.reference.api import _as_batch, _conventions, box_and_plan, checked_target

    dps = check_dps(dps)
    batch, single = _as_batch(network, x)
    conv = _conventions(conventions)
    domain, plan = box_and_plan(network, batch, rule, composite, rule_parameters)
    balls = prepare_balls(network, batch.shape[1:], dps)
    target = checked_target(balls.prepared, target, len(batch), single)
    results = []
    with working_precision(balls.bits):
        bounds = None
        if domain is not None:
            bounds = tuple(to_balls(np.broadcast_to(bound, batch.shape[1:]).ravel())
                           for bound in (domain.low, domain.high))
        for sample, values in enumerate(batch):
            records: dict[str, NodeRecord] = {}
            activations = balls.forward(values, records)
            output = activations[balls.prepared.output]
            top = _top(output, target, sample)
            relevance, relevance_at, backward_records = balls.backward(activations, top, plan, conv, bounds,
                                                                       check_domain)
            for name, record in backward_records.items():
                if name in records:  # a ReLU's forward record: keep both counts
                    records[name].undecided += record.undecided
                    for reason, count in record.reasons.items():
                        records[name].reasons[reason] = records[name].reasons.get(reason, 0) + count
                else:
                    records[name] = record
            results.append(CertifiedResult(relevance, top, activations, relevance_at, records,
                                           balls.prepared.input_name, balls.bits))
    return results


def _top(output: np.ndarray, target, sample: int) -> np.ndarray:
    """R at the output: f_c(x) at the target index (balls), or the explicit float64 relevance."""
    if target is not None and target.dtype.kind == "f":
        return to_balls(target[sample].reshape(-1))
    top = zeros(len(output))
    if target is None:
        c = int(np.argmax([float(value.mid()) for value in output]))
    else:
        c = int(target[sample])
    top[c] = output[c]
    return top


__all__ = ["BallNetwork", "CertifiedResult", "GUARD_DIGITS", "ball_matrix", "explain_balls", "prepare_balls"]
