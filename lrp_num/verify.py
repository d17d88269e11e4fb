"""Verification of the float64 engine against the high-precision reference.

For every rule and composite, :func:`verify` explains a few inputs with :func:`lrp_num.explain`
(float64) and with :mod:`lrp_num.reference` (mpmath, by the definition: batch norms folded and
rules planned by the reference's own code), and checks, each with a stated threshold:

* agreement: max_p |R_p - R_p^ref| over a first-order rounding bound (:func:`rounding_bound`), at the
  input and at every node's relevance (per neuron from sum |terms|, propagated node by node from the
  forward errors the engine made) must be <= 1;
* forward: every node's float64 output, f_c(x) included, within its local forward rounding bound
  (from its inputs' measured errors, :func:`forward_error`);
* conservation: |sum_p R_p - f_c(x)| in float64 at most what the rule absorbs (the reference's
  balance) plus the rounding bound (:func:`conservation_threshold`);
* balance: sum_p R_p + (relevance kept by biases and stabilisers) = f_c(x) at high precision,
  to 10^-(dps - 10);
* positivity: no input with R_p < 0 at high precision where the rule promises it (w2, zplus,
  zbox, flat and the deep-taylor composite on their domains with f_c(x) >= 0); elsewhere the
  count is informational;
* root points: the engine's derived condition and the direct check at high precision give the
  same fraction of root points in the domain, per node and sample, up to the neurons float64
  cannot decide (a root point within ``AMBIGUOUS_MARGIN`` of the boundary).

Errors in ulps and relative, the conservation at high precision, the fraction of root points in
the domain and the times are reported as information. A required :class:`Check` that fails
makes the report fail (``lrp verify`` exits 1).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import mpmath
import numpy as np

from lrp_num.layers.nonlinear import NONLINEAR
from lrp_num.layers.normalization import NORMALIZATION

from lrp_num import reference
from lrp_num.layers import Add, Concat, MergeHeads, ReLU, SplitHeads
from lrp_num import verify_attention
from lrp_num.reference.node_rules import AMBIGUOUS_MARGIN

U = 2.0 ** -53
#: rules and composites whose relevance is non-negative on their domains (DTD, Montavon 2017)
POSITIVE = ("w2", "zplus", "zbox", "flat", "deep-taylor")
#: rules whose sum_i R_ij = R_j for every neuron with a non-zero slope under the DTD convention
CONSERVATIVE = ("w2", "zplus", "zbox", "flat", "lrp0", "gamma", "deep-taylor")
DEFAULT_RULES = ("w2", "zplus", "lrp0", "gamma", "flat", "epsilon", "alphabeta", "bias_neuron")
DEFAULT_COMPOSITES = ("deep-taylor", "epsilon-plus", "epsilon-gamma-box", "alpha2-beta1")


# -- the rounding bound ---------------------------------------------------------------------------

def _stacked(prepared: reference.ReferenceNetwork, node, values: dict) -> np.ndarray:
    """A node's inputs as one flattened array: the addends of an Add stacked, one input as it is."""
    return np.concatenate([np.asarray(values[name], dtype=np.float64) for name in node.inputs])


def forward_error(prepared: reference.ReferenceNetwork, activations: dict, engine: dict | None = None,
                  over: list | None = None, local: dict | None = None) -> dict[str, np.ndarray]:
    """First-order bound on |a(float64 engine) - a(exact)| of every node's output, per neuron.

    From the exact input (e = 0) through the nodes, with the exact activations ``activations``
    (float64, flattened) and u = 2^-53: a linear node adds to the propagated error its own
    rounding of the sum of its n_j terms and bias, and the rounding P of float64 parameters
    derived from the layer's (a folded batch norm),

        e_j = sum_i |w_ij| e_i + u (n_j + 2 + P) (sum_i |w_ij a_i| + |b_j|);

    a ReLU passes e where z > -e and gives 0 where z < -e (float64 gives exactly 0 there); max pooling passes the
    largest error of its window; an Add adds its addends' errors and u |sum_k a_k|.

    With ``engine`` (the float64 engine's activations of one sample, flattened, by node name) the
    bound is local: each node's bound b starts from its inputs' *measured* errors, and what is
    passed on is the measured error |a(engine) - a(exact)|, never more than 2 b, plus u |a| (the
    rounding of the exact value to float64 in the measurement). The worst measured error over
    2 b + u |a| of every node is appended to ``over`` (the forward check: must be <= 1), and b
    itself is stored in ``local`` by node name. A bound
    propagated through many nodes grows by the row sums sum_i |w_ij| and the norms' gamma / sigma
    at every node (about 1e11 over digits-vit's two blocks) while the actual errors do not; the
    measured errors keep the relevance bound of :func:`rounding_bound` at the size of the actual
    forward errors, and the per-node check keeps every forward kernel checked.
    """
    errors = {prepared.input_name: np.zeros(len(activations[prepared.input_name]))}
    for node in prepared.nodes:
        e, a = errors[node.inputs[0]], activations[node.inputs[0]]
        if node.index in prepared.matrices:
            m = prepared.matrices[node.index]
            weight = np.abs(m.weight)
            terms = (np.append(np.abs(a), 0.0)[m.index] * weight).sum(axis=1) + m.bias_scale
            n_terms = m.connected.sum(axis=1)
            out = (np.append(e, 0.0)[m.index] * weight).sum(axis=1) \
                + U * (n_terms + 2 + m.parameter_error) * terms
        elif node.index in prepared.windows:
            rows, connected = prepared.windows[node.index]
            out = np.where(connected, np.append(e, 0.0)[rows], 0.0).max(axis=1)
        elif isinstance(node.operation, ReLU):
            out = np.where((a > 0) | (np.abs(a) <= e), e, 0.0)  # a z within its error may round to either side
        elif isinstance(node.operation, Add):
            out = sum(errors[name] for name in node.inputs) + U * np.abs(activations[node.name])
        elif isinstance(node.operation, Concat):
            out = prepared.concatenate(node, [errors[name] for name in node.inputs])
        elif isinstance(node.operation, verify_attention.OPERATIONS):
            out = verify_attention.forward_error(node.operation, [activations[name] for name in node.inputs],
                                                 [errors[name] for name in node.inputs], prepared.input_shapes(node))
        elif isinstance(node.operation, NONLINEAR):
            out = _pointwise_forward_error(node.operation, a, e, activations[node.name])
        elif isinstance(node.operation, NORMALIZATION):
            out = _norm_forward_error(node.operation, a, e, activations[node.name])
        else:
            out = e
        if local is not None:
            local[node.name] = out
        if engine is not None and node.name in engine:
            exact = np.abs(activations[node.name])
            measured = np.abs(np.asarray(engine[node.name], dtype=np.float64).ravel() - activations[node.name])
            moves_only = isinstance(node.operation, (ReLU, Concat, SplitHeads, MergeHeads)) or node.index in prepared.windows or (
                node.index not in prepared.matrices and not isinstance(
                    node.operation, (Add, NONLINEAR, NORMALIZATION, verify_attention.OPERATIONS)))
            if over is not None and not moves_only:  # a node that only moves values passes its input's error
                allowed = 2 * out + U * exact
                # an error where the bound is 0 is infinitely over it, not skipped
                over.append(float(np.max(np.divide(measured, allowed, out=np.where(measured > 0, np.inf, 0.0),
                                                   where=allowed != 0), initial=0.0)))
            out = np.minimum(measured, 2 * out) + U * exact
        errors[node.name] = out
    return errors


#: a bound on the slope |g'| of each element-wise nonlinearity (GELU's is below 1.13)
_SLOPE_BOUND = {"gelu": 1.13, "gelu_tanh": 1.13, "silu": 1.1, "tanh": 1.0, "sigmoid": 0.25}


def _pointwise_forward_error(operation, a: np.ndarray, e: np.ndarray, out: np.ndarray) -> np.ndarray:
    """|g'| e from the input's error plus the activation's own rounding: 16 u (|g(a)| + |a|), a
    generous bound for the few correctly rounded steps (exp, tanh, erfc) of each form."""
    return _SLOPE_BOUND[operation.activation] * e + 16 * U * (np.abs(out) + np.abs(a))


def _norm_forward_error(operation, a: np.ndarray, e: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Per row of n features: |dy_j/dx_i| <= |gamma_j| / sigma (1 + 2/n... ) summed with e, and
    the rounding of the mean, variance and division, u (n + 8) (|y_j - beta_j| + |beta_j|); for
    LayerNorm also the mean's own rounding, u (n + 2) mean_i |x_i|, which the centring x_j - mu
    keeps in absolute terms and 1 / sigma amplifies: |gamma_j| / sigma u (n + 2) mean_i |x_i|
    (a row of equal values has x_j - mu = 0 exactly, but a float64 mu a few ulps off, which
    1 / sqrt(eps) turns into ~1e-14)."""
    features = operation.weight.shape[0]
    rows = a.reshape(-1, features)
    if operation.norm == "layernorm":
        centred = rows - rows.mean(axis=1, keepdims=True)
    else:
        centred = rows
    sigma = np.sqrt((centred**2).mean(axis=1, keepdims=True) + operation.eps)
    scaled = np.abs(operation.weight) / sigma  # (rows, n)
    standard = np.abs(centred) / sigma
    row_error = e.reshape(-1, features)
    # |J_ji| <= |gamma_j| / sigma (delta_ji + 1/n + |x^_i x^_j| / n)
    propagated = scaled * (row_error + row_error.mean(axis=1, keepdims=True)
                           + standard * (standard * row_error).mean(axis=1, keepdims=True))
    rounding = U * (features + 8) * (np.abs(out.reshape(-1, features) - operation.bias)
                                     + np.abs(operation.bias))
    if operation.norm == "layernorm":
        rounding = rounding + scaled * U * (features + 2) * np.abs(rows).mean(axis=1, keepdims=True)
    return (propagated + rounding).ravel()


def rounding_bound(result: reference.ReferenceResult, prepared: reference.ReferenceNetwork,
                   x: np.ndarray, explicit_top: bool = False, top_error: np.ndarray | None = None,
                   per_node: dict | None = None, engine: dict | None = None) -> np.ndarray:
    """First-order bound on |R_p(float64 engine) - R_p(exact)| per input (flattened), with safety 2.

    Propagates, from the output down through the nodes, the engine's error in R_j through the
    absolute flows |R_ij| / |R_j| of the reference, and adds at every node with a rule (linear,
    Add, max pooling) the rounding of its own step and the effect of its inputs' forward error,

        u (n_j + m + 6) |R_ij| (1 + K_j) + |R_ij| (rho_i + sum_i' rho_i' |R_i'j| / |R_j|),

    where n_j is neuron j's fan-in (the number of addends of an Add), m the layer's fan-out,
    K_j = sum_i |R_ij| / |R_j| the cancellation in its denominator, and rho_i = e_i / |a_i| the
    relative forward error of the activation a_i (:func:`forward_error`): a relative error rho_i
    of x_i moves q_ij by rho_i |q_ij| and the denominator sum_i q_ij by sum_i rho_i |q_ij|.
    Errors arriving at a tensor from several consumers add, and so does u |R| for each of those
    sums. The top relevance f_c(x) carries the forward error of the output c, or ``top_error``
    where the caller measured it (|f_c(x) in float64 - f_c(x)|, checked against that forward
    bound by :func:`verify_method`), or none with ``explicit_top`` (a relevance given as such).
    ``per_node``, a dict, receives the (unsafe, undoubled) bound of the relevance arriving at every node's
    output, by node name (the per-node agreement check of :func:`verify_method`, and diagnostics).
    ``engine``: the float64 engine's activations of this sample by node name; the forward errors are
    then the measured ones, each at most twice its local bound (see :func:`forward_error`).
    """
    activations = {name: reference.to_float(a) for name, a in result.activations.items()}
    forward = forward_error(prepared, activations, engine)
    top = reference.to_float(result.top)
    output = prepared.output
    if explicit_top:
        start = np.zeros_like(top)
    elif top_error is not None:
        start = np.asarray(top_error, dtype=np.float64).ravel()
    else:
        start = np.where(top != 0, forward[output], 0.0)
    error = {output: start}
    traces = {trace.index: trace for trace in result.traces}
    for node in reversed(prepared.nodes):
        e = error.pop(node.name)
        if per_node is not None:
            per_node[node.name] = e
        trace = traces.get(node.index)
        if isinstance(node.operation, verify_attention.OPERATIONS):
            lower = verify_attention.relevance_error(
                node.operation, _parameters(result, node.index), [activations[name] for name in node.inputs],
                [forward[name] for name in node.inputs], prepared.input_shapes(node),
                reference.to_float(result.relevance_at[node.name]), e)
            contributions = trace.relevance_inputs if trace is not None else [
                np.zeros(len(part)) for part in lower]  # a head split/merge sums nothing
        elif trace is not None:
            e_in = _step_bound(trace, e, _stacked(prepared, node, activations),
                               _stacked(prepared, node, forward), node.index in prepared.windows)
            lower = np.split(e_in, len(node.inputs)) if len(node.inputs) > 1 else [e_in]
            contributions = trace.relevance_inputs
        elif isinstance(node.operation, Concat):
            lower = prepared.split(node, e)
            contributions = prepared.split(node, reference.to_float(result.relevance_at[node.name]))
        else:  # ReLU, Flatten, Identity, Dropout: relevance and its error pass unchanged
            lower = [e]
            contributions = [result.relevance_at[node.name]]
        for name, part, contribution in zip(node.inputs, lower, contributions):
            if prepared.consumers[name] > 1:  # one more rounding where consumers' relevance is summed
                part = part + U * np.abs(reference.to_float(contribution) if np.asarray(contribution).dtype == object
                                         else np.asarray(contribution))
            error[name] = error[name] + part if name in error else part
    return 2 * error[prepared.input_name]


def _node_agreement(explanation, k: int, result: reference.ReferenceResult, per_node: dict, output: str) -> float:
    """max over the nodes and their neurons of |R_j(engine) - R_j(exact)| over the rounding bound of
    the relevance arriving at node j's output (doubled for safety, as at the input; see
    :func:`rounding_bound`): the agreement check at every tensor, not only at the input, so that an
    error made high in the network is seen where its bound is still small."""
    worst = 0.0
    for layer in explanation.layers:
        if layer.relevance_above is None or layer.name not in per_node or layer.name not in result.relevance_at \
                or layer.name == output:  # the top relevance: its bound is its measured error (the forward check)
            continue
        engine = np.asarray(layer.relevance_above[k], dtype=np.float64).ravel()
        exact = reference.to_float(result.relevance_at[layer.name])
        if engine.shape != exact.shape:
            continue
        bound = 2 * per_node[layer.name] + 2 * U * np.abs(exact) + 1e-300
        worst = max(worst, float((np.abs(engine - exact) / bound).max(initial=0.0)))
    return worst


def _engine_activations(network, x: np.ndarray, prepared: reference.ReferenceNetwork) -> dict[str, np.ndarray]:
    """The float64 engine's forward trace of the batch ``x`` (the one :func:`explain_details` runs), for
    the nodes the reference knows by the same name, each as (samples, flattened values)."""
    from lrp_num.engine.graph import as_graph

    trace = as_graph(network).forward_trace(np.asarray(x, dtype=np.float64))
    names = {node.name for node in prepared.nodes}
    return {name: np.asarray(values, dtype=np.float64).reshape(len(x), -1)
            for name, values in trace.items() if name in names}


def _parameters(result: reference.ReferenceResult, index: int) -> dict:
    """The rule parameters the reference used at node ``index`` (an attention node's trace)."""
    for trace in result.traces:
        if trace.index == index:
            return dict(trace.parameters or {})
    return {}


def _step_bound(trace, error: np.ndarray, a: np.ndarray, forward: np.ndarray,
                winner_take_all: bool) -> np.ndarray:
    """The error below one node: the error above passed on through the flows, plus the node's
    own rounding and its inputs' forward error (see :func:`rounding_bound`), on its (stacked) input."""
    n_in = len(a)
    propagated = np.zeros(n_in + 1)
    rounding = np.zeros(n_in + 1)
    flow, rows_index, upper = trace.flow, trace.flow_index, trace.flow_upper
    if flow is not None and flow.size:
        # error of R_j passed on in proportion |R_ij| / |R_j|
        share = np.divide(flow, upper[:, None], out=np.zeros_like(flow), where=upper[:, None] != 0)
        np.add.at(propagated, rows_index, share * error[trace.flow_rows][:, None])
        if winner_take_all:
            np.add.at(rounding, rows_index, U * flow)
        else:
            a, forward = np.append(a, 0.0), np.append(forward, 0.0)
            rho = np.divide(forward, np.abs(a), out=np.zeros_like(a), where=a != 0)
            k = np.divide(flow.sum(axis=1), upper, out=np.ones_like(upper), where=upper != 0)
            fan_in = rows_index.shape[1]
            fan_out = np.bincount(rows_index.ravel(), minlength=n_in + 1).max()
            rho_rows = rho[rows_index]
            denominator = (share * rho_rows).sum(axis=1, keepdims=True)  # sum_i' rho_i' |R_i'j| / |R_j|
            step = U * (fan_in + fan_out + 6) * flow * (1 + k)[:, None]
            step += flow * (rho_rows + denominator)
            np.add.at(rounding, rows_index, step)
    return (propagated + rounding)[:n_in]


def near_max_pool_ties(prepared: reference.ReferenceNetwork, result: reference.ReferenceResult,
                       relative: float = 1e-12) -> int:
    """Max-pool windows whose maximum is matched by a different value within ``relative``.

    Winner-take-all is discontinuous there: float64 may pick another winner (or a tie), an
    O(1) difference that is not a rounding error. Samples with such windows are excluded from
    the agreement check and counted in the report.
    """
    count = 0
    for node in prepared.nodes:
        if node.index not in prepared.windows:
            continue
        values = result.activations[node.inputs[0]]
        rows, connected = prepared.windows[node.index]
        for window, inside in zip(rows, connected):
            cells = values[window[inside]]
            top = max(cells)
            if any(v != top and abs(top - v) <= relative * abs(top) for v in cells):
                count += 1
    return count


# -- one row of the report ------------------------------------------------------------------------

@dataclass
class Check:
    """One check of a report row: its value, whether it must hold, and whether it does."""

    name: str
    holds: bool
    required: bool
    detail: str = ""


@dataclass
class RuleReport:
    """The measurements of one rule or composite over the samples."""

    name: str
    kind: str
    max_ulps: float = 0.0
    max_relative: float = 0.0
    max_error_over_bound: float = 0.0
    conservation_float64: float = 0.0
    conservation_reference: float = 0.0
    balance_reference: float = 0.0
    negative_inputs: int = 0
    root_points_reference: float | None = None
    root_points_engine: float | None = None
    near_ties: int = 0
    root_point_mismatches: int = 0
    root_point_ambiguous: int = 0
    conservation_threshold: float = 0.0
    forward_over_bound: float = 0.0
    conservation_over_bound: float = 0.0
    """(|sum R - f_c(x)| in float64 - what the rule absorbs) / the rounding bound; must be <= 1."""
    time_engine: float = 0.0
    time_reference: float = 0.0
    checks: list[Check] = field(default_factory=list)
    error: str | None = None
    mixed_sign_nodes: list[str] = field(default_factory=list)
    """Add nodes whose addends (somewhere) have the other sign than their sum: positivity is not
    promised there (the z-rule gives such an addend relevance of the other sign)."""
    certified: list[dict] | None = None
    """With ``certified=True``: per node (input last) the proved bound of
    :class:`lrp_num.certified.bounds.NodeBound` as a dict."""
    certified_over_bound: float | None = None
    time_certified: float = 0.0
    # the counts a merge of rows measured on parts of a batch needs (lrp_num.distributed)
    root_points_active: int = 0
    root_points_inside: int = 0
    root_point_compared: int = 0
    root_point_mismatch_nodes: list[str] = field(default_factory=list)
    mixed_signs: dict[str, int] = field(default_factory=dict)
    positive_domain: bool = True
    outside_domain: str | None = None
    """The engine's DomainError when the rule's domain excludes these inputs (z+ or gamma at a
    negative input); the row then checks only that the reference refuses them too."""

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.holds for c in self.checks if c.required)


@dataclass
class VerifyReport:
    """All rows, and the settings they were computed with."""

    model: str
    samples: int
    dps: int
    rows: list[RuleReport]

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data; every check carries ``status``: "pass", "FAIL" or "info"
        (informational: reported, not required)."""
        rows = []
        for row in self.rows:
            item = asdict(row)
            item["ok"] = row.ok
            for check, data in zip(row.checks, item["checks"]):
                data["status"] = check_status(check)
            rows.append(item)
        return {"model": self.model, "samples": self.samples, "dps": self.dps, "ok": self.ok, "rows": rows}


def check_status(check: Check) -> str:
    """"pass" or "FAIL" for a required check, "info" for an informational one."""
    if not check.required:
        return "info"
    return "pass" if check.holds else "FAIL"


def _method(name: str, kind: str) -> dict[str, str]:
    return {"rule": name} if kind == "rule" else {"composite": name}


def _membership_fraction(results) -> float | None:
    active = inside = 0
    for result in results:
        for trace in result.traces:
            if trace.rule in reference.ROOT_POINT_RULES:
                active += trace.n_active
                inside += trace.n_inside
    return inside / active if active else None


def _engine_fraction(explanation) -> float | None:
    values = [report.root_point_valid for report in explanation.layers
              if getattr(report, "root_point_valid", None) is not None]
    if not values:
        return None
    return float(np.mean([np.mean(v) for v in values]))


def verify_method(network, x: np.ndarray, name: str, kind: str, *, targets=None, input_domain=None,
                  dps: int = 50, conventions=None, certified: bool = False) -> RuleReport:
    """Measure one rule or composite on the batch ``x`` (see the module docstring); ``certified``
    adds the proved bounds of :mod:`lrp_num.certified` and their required check."""
    from lrp_num.engine.conventions import DTD
    from lrp_num.errors import DerivationScopeWarning, DomainError
    from lrp_num.engine.explain import explain_details

    from lrp_num.checks import check_dps

    dps = check_dps(dps)
    conventions = conventions or DTD
    if targets is None:  # "the largest output", chosen once: a float64 tie must not pick two classes
        output = network.forward(np.asarray(x, dtype=np.float64))
        targets = output.reshape(len(output), -1).argmax(axis=1)
    row = RuleReport(name, kind)
    method = _method(name, kind)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # verify compares the engine with the reference, which extends a rule past its
            # derivation the same way; saying where a derivation ends is explain's job
            warnings.simplefilter("ignore", DerivationScopeWarning)
            explanation = explain_details(network, x, target=targets, conventions=conventions,
                                          input_domain=input_domain, diagnostics=True, keep_layers=True,
                                          **method)
    except DomainError as error:
        return _outside_domain(row, error, network, x, method, targets, input_domain, dps, conventions)
    row.time_engine = (time.perf_counter() - start) / len(x)
    start = time.perf_counter()
    results = reference.explain_trace(network, x, target=targets, dps=dps, conventions=conventions,
                                      input_domain=input_domain, **method)
    row.time_reference = (time.perf_counter() - start) / len(x)
    prepared = reference.prepare(network, x.shape[1:], dps)
    worst_bound = 0.0
    stated_bounds = []  # the rounding bound of every sample's input relevance (None: a near tie)
    conservation_over = -np.inf  # the largest (|sum R - f_c(x)| in float64 - |kept|) / rounding
    engine_trace = _engine_activations(network, x, prepared)
    with mpmath.workdps(dps + reference.GUARD_DIGITS):
        for k, result in enumerate(results):
            measured = {name: values[k].ravel() for name, values in engine_trace.items()}
            exact = reference.to_float(result.relevance)
            engine = explanation.relevance[k].ravel().astype(np.float64)
            error = np.abs(engine - exact)
            scale = float(np.abs(exact).max()) or 1.0
            row.max_ulps = max(row.max_ulps, float(error.max() / np.spacing(scale)))
            row.max_relative = max(row.max_relative, float(error.max() / scale))
            # the float64 top relevance f_c(x): its error measured (and checked below against its bound)
            top_exact = reference.to_float(result.top)
            top_engine = np.asarray(explanation.relevance_top[k], dtype=np.float64).ravel()
            # every node's measured forward error over its local bound (from its inputs' measured errors)
            node_over, local = [], {}
            forward_error(prepared, {name: reference.to_float(a) for name, a in result.activations.items()},
                          measured, node_over, local)
            output_bound = local[prepared.output]
            # never more than the forward bound allows: a wrong forward pass must not widen the bound
            top_error = np.minimum(np.abs(top_engine - top_exact), 2 * output_bound) + U * np.abs(top_exact)
            explicit = np.asarray(targets).dtype.kind == "f"
            forward_over = 0.0 if explicit else float(np.max(np.divide(
                np.abs(top_engine - top_exact), 2 * output_bound + U * np.abs(top_exact),
                out=np.zeros_like(top_exact), where=top_exact != 0)))
            row.forward_over_bound = max(row.forward_over_bound, forward_over, *node_over)
            per_node = {}
            bound = rounding_bound(result, prepared, x[k], top_error=top_error, engine=measured,
                                   per_node=per_node) + 2 * U * np.abs(exact) + 1e-300
            ties = near_max_pool_ties(prepared, result)
            row.near_ties += ties
            if not ties:
                worst_bound = max(worst_bound, float((error / bound).max()),
                                  _node_agreement(explanation, k, result, per_node, prepared.output))
            stated_bounds.append(None if ties else bound)  # near ties: excluded as from agreement
            top = mpmath.fsum(result.top)
            total = mpmath.fsum(result.relevance)
            kept = mpmath.fsum(t.absorbed_bias + t.absorbed_stabiliser for t in result.traces)
            row.conservation_reference = max(row.conservation_reference, float(abs(total - top)))
            balance = abs(total + kept - top) / max(1, abs(top), mpmath.fsum(abs(v) for v in result.relevance))
            row.balance_reference = max(row.balance_reference, float(balance))
            top_float64 = float(np.asarray(explanation.relevance_top[k]).sum())
            violation = abs(engine.sum() - top_float64)
            row.conservation_float64 = max(row.conservation_float64, float(violation))
            absorbed, rounding = conservation_threshold(kept, bound, engine, top_float64, top)
            row.conservation_threshold = max(row.conservation_threshold, absorbed + rounding)
            # what exceeds what the rule absorbs, in units of the rounding bound
            conservation_over = max(conservation_over, (float(violation) - absorbed) / rounding)
            if top >= 0:
                row.negative_inputs += sum(1 for v in result.relevance if v < 0)
    row.max_error_over_bound = worst_bound
    row.conservation_over_bound = conservation_over
    for result in results:
        for trace in result.traces:
            if trace.rule in reference.ROOT_POINT_RULES:
                row.root_points_active += trace.n_active
                row.root_points_inside += trace.n_inside
            if trace.mixed_signs:  # Add nodes where the z-rule's positivity condition fails
                row.mixed_signs[trace.name] = row.mixed_signs.get(trace.name, 0) + trace.mixed_signs
    row.root_points_reference = _membership_fraction(results)
    row.root_points_engine = _engine_fraction(explanation)
    row.positive_domain = _positive_domain(name, x)
    compared, mismatched, ambiguous = _compare_root_points(explanation, results)
    row.root_point_compared = compared
    row.root_point_mismatches = len(mismatched)
    row.root_point_mismatch_nodes = sorted({node for node, _ in mismatched})
    row.root_point_ambiguous = ambiguous
    set_checks(row, dps)
    if certified:
        from lrp_num.certified.report import certify_row

        certify_row(row, network, x, method, targets, input_domain, dps, conventions, stated_bounds)
    return row


def set_checks(row: RuleReport, dps: int) -> RuleReport:
    """Set ``row.checks`` from its measurements: the required checks and their thresholds (see the
    module docstring). Also used to merge rows measured on parts of a batch
    (:mod:`lrp_num.distributed`), so that a merged row states the same checks as a row of the batch."""
    worst_bound, conservation_over = row.max_error_over_bound, row.conservation_over_bound
    row.checks = [
        Check("agreement", worst_bound <= 1.0, True, f"max error / bound = {worst_bound:.3g} (must be <= 1)"
              + (f"; {row.near_ties} near-tie max-pool window(s) excluded" if row.near_ties else "")),
        Check("forward", row.forward_over_bound <= 1.0, True,
              f"|a in float64 - a| over its local forward rounding bound, every node's output a and f_c(x) = "
              f"{row.forward_over_bound:.3g} (must be <= 1)"),
        Check("balance", row.balance_reference <= 10.0 ** (-(dps - 10)), True,
              f"sum R + kept by biases and stabilisers = f_c(x) at high precision, to 1e-{dps - 10} "
              f"(worst {row.balance_reference:.2g})"),
        Check("conservation", conservation_over <= 1.0, True,
              f"|sum R - f_c(x)| in float64 = {row.conservation_float64:.3g}, at most |kept| + the rounding "
              f"bound ({row.conservation_threshold:.3g}); (|sum R - f_c(x)| - |kept|) / rounding bound = "
              f"{conservation_over:.3g} (must be <= 1)"),
    ]
    mixed = row.mixed_signs
    row.mixed_sign_nodes = sorted(mixed)
    promised = row.name in POSITIVE and row.positive_domain and not mixed
    detail = f"{row.negative_inputs} inputs with R < 0" + ("" if promised else " (not promised: informational)")
    if mixed:
        detail += ("; not promised: Add node(s) " + ", ".join(f"{node!r} ({count} neuron(s))" for node, count
                                                          in sorted(mixed.items()))
                   + " have addends of the other sign than their sum")
    row.checks.append(Check("positivity", row.negative_inputs == 0, promised, detail))
    if row.root_point_compared:
        nodes = row.root_point_mismatch_nodes
        row.checks.append(Check("root points", not row.root_point_mismatches, True,
                                f"{row.root_point_mismatches} of {row.root_point_compared} (node, sample) "
                                "fractions are missing or differ between the engine's derived condition and "
                                f"the direct check by more than the {row.root_point_ambiguous} neuron(s) within "
                                f"{AMBIGUOUS_MARGIN:g} of the domain's boundary"
                                + (f" (nodes {', '.join(map(repr, nodes))})" if nodes else "")))
    return row


def conservation_threshold(kept, bound: np.ndarray, engine: np.ndarray, top_float64: float,
                           top) -> tuple[float, float]:
    """(absorbed, rounding): |sum_p R_p - f_c(x)| in float64 may be at most their sum (one sample).

    absorbed = |kept|, the relevance the rule legitimately leaves to biases and stabilisers (the
    reference's balance, exact); rounding = sum_p of the per-input bound (:func:`rounding_bound`)
    + the float64 sums sum_p R_p (n u sum_p |R_p|) + |f_c(x) in float64 - f_c(x)| (measured)
    + the rounding of the comparison itself, u (|sum_p R_p| + |f_c(x)| + |kept|): the float64
    difference sum_p R_p - f_c(x) and |kept| rounded to float64 (where little relevance reaches
    the input and most is kept, these ulps of |kept| exceed every other term).
    """
    total = float(engine.sum())
    rounding = float(bound.sum()) + len(engine) * U * float(np.abs(engine).sum())
    comparison = U * (abs(total) + abs(top_float64) + abs(float(kept)))
    return float(abs(kept)), rounding + abs(top_float64 - float(top)) + comparison + 1e-300


def _outside_domain(row: RuleReport, error: Exception, network, x, method, targets, input_domain,
                    dps, conventions) -> RuleReport:
    """The row of a rule whose domain excludes the inputs: the reference must refuse them too."""
    from lrp_num.errors import DomainError

    row.outside_domain = str(error)
    try:
        reference.explain_trace(network, x, target=targets, dps=dps, conventions=conventions,
                                input_domain=input_domain, diagnostics=False, **method)
        refused = False
    except DomainError:
        refused = True
    row.checks = [Check("domain", refused, True, "the reference refuses the inputs as the engine does"
                        if refused else "the engine refuses the inputs, the reference does not")]
    return row


def _compare_root_points(explanation, results) -> tuple[int, list[tuple[str, int]], int]:
    """How many (node, sample) pairs of root-point rules there are, those whose engine fraction
    (derived condition) differs from the direct check by more than the neurons float64 cannot
    decide (root points within AMBIGUOUS_MARGIN of the boundary) or that the engine does not
    report at all, and how many such undecidable neurons there are."""
    reported = {report.index: getattr(report, "root_point_valid", None) for report in explanation.layers}
    compared, mismatches, ambiguous = 0, [], 0
    for k, result in enumerate(results):
        for trace in result.traces:
            if trace.rule not in reference.ROOT_POINT_RULES or not trace.n_active:
                continue
            name = trace.name or f"layer{trace.index}"
            valid = reported.get(trace.index)
            compared += 1
            ambiguous += trace.n_ambiguous
            if valid is None:  # the engine reports no fraction where the rule has root points
                mismatches.append((name, k))
                continue
            direct = trace.n_inside / trace.n_active
            allowed = trace.n_ambiguous / trace.n_active
            if abs(direct - float(valid[k])) > allowed + 1e-12:
                mismatches.append((name, k))
    return compared, mismatches, ambiguous


def _positive_domain(name: str, x: np.ndarray) -> bool:
    """Positivity is promised on the orthant for z+ (R^n for w2, flat; the box for z^B)."""
    return name in ("w2", "flat", "deep-taylor", "zbox") or bool((x >= 0).all())


def verify(network, x: np.ndarray, *, rules: Sequence[str] = DEFAULT_RULES,
           composites: Sequence[str] = DEFAULT_COMPOSITES, targets=None, input_domain=None,
           dps: int = 50, model_name: str = "model", conventions=None, certified: bool = False) -> VerifyReport:
    """Verify every rule and composite on the batch ``x``; see :func:`verify_method`.

    ``certified``: also prove bounds in ball arithmetic (:mod:`lrp_num.certified`, the
    ``certified`` extra; MissingDependencyError without it).

    ``dps`` is the reference's precision, 20 to 10000 digits (PrecisionError otherwise).
    Shows a progress bar over the rules and composites on stderr when it is a terminal.
    """
    from lrp_num.checks import check_dps
    from lrp_num.errors import LRPError
    from lrp_num.progress import progress

    dps = check_dps(dps)
    if certified:
        from lrp_num.certified import require_flint

        require_flint()  # before any work: a missing extra is one clear error
    rows = []
    methods = [("rule", name) for name in rules] + [("composite", name) for name in composites]
    for kind, name in progress(methods, f"verifying {model_name}"):
        try:
            rows.append(verify_method(network, x, name, kind, targets=targets, input_domain=input_domain,
                                      dps=dps, conventions=conventions, certified=certified))
        except LRPError as error:
            rows.append(RuleReport(name, kind, error=str(error)))
    return VerifyReport(model_name, len(x), dps, rows)


# -- the table ------------------------------------------------------------------------------------

def format_table(report: VerifyReport) -> str:
    """The report as a plain-text table, one row per rule or composite."""
    header = (f"{'rule / composite':<20} {'ulps':>8} {'rel err':>9} {'err/bnd':>8} {'cons f64':>9} "
              f"{'cons ref':>9} {'neg':>4} {'roots ok':>9} {'t eng':>8} {'t ref':>7}  status")
    lines = [f"lrp verify: {report.model}, {report.samples} sample(s), reference at {report.dps} digits",
             header, "-" * len(header)]
    for row in report.rows:
        if row.error is not None:
            lines.append(f"{row.name:<20} error: {row.error}")
            continue
        if row.outside_domain is not None:
            status = "not applicable" if row.ok else "FAIL: domain (the reference does not refuse)"
            lines.append(f"{row.name:<20} {status}: {row.outside_domain}")
            continue
        roots = "-" if row.root_points_reference is None else f"{row.root_points_reference:.3f}"
        if row.root_point_mismatches:
            roots += "*"
        positivity = next((c for c in row.checks if c.name == "positivity"), None)
        negative = f"{row.negative_inputs:d}" + ("" if positivity is None or positivity.required else "i")
        failed = [c.name for c in row.checks if c.required and not c.holds]
        status = "ok" if not failed else "FAIL: " + ", ".join(failed)
        lines.append(
            f"{row.name:<20} {row.max_ulps:>8.3g} {row.max_relative:>9.2e} {row.max_error_over_bound:>8.2g} "
            f"{row.conservation_float64:>9.2e} {row.conservation_reference:>9.2e} {negative:>4} "
            f"{roots:>9} {row.time_engine * 1e3:>6.2f}ms {row.time_reference:>6.2f}s  {status}")
    notes = [f"  {row.name}: {check.name}: {check.detail}" for row in report.rows for check in row.checks
             if not check.holds and (check.required or (check.name == "positivity" and row.name in POSITIVE))]
    if notes:  # what failed, and the nodes behind what is not promised here
        lines += ["", *notes]
    if any(row.certified for row in report.rows):
        from lrp_num.certified.report import format_certified

        lines += format_certified(report)
    lines.append("")
    lines.append("required checks (a row fails when one does not hold):")
    lines.append("  agreement: err/bnd, the engine's error over its first-order rounding bound, <= 1 for every input;")
    lines.append("  forward: every node's float64 output and f_c(x) within its local first-order forward rounding bound;")
    lines.append("  conservation: cons f64 = |sum R - f_c(x)| in float64 <= |what biases and stabilisers keep| "
                 "+ the rounding bound (per sample);")
    lines.append(f"  balance: at high precision sum R + what biases and stabilisers keep = f_c(x) to 1e-{report.dps - 10};")
    lines.append("  positivity: neg = 0 (inputs with R < 0 at high precision) where the rule promises it on these "
                 "inputs; 'i' marks neg as informational;")
    lines.append("  root points: the engine's derived-condition fraction equals the direct check's per node and "
                 f"sample, up to neurons within {AMBIGUOUS_MARGIN:g} of the domain's boundary (* marks a difference).")
    if any(row.certified for row in report.rows):
        lines.append("  certified: the proved |engine - exact| (ball arithmetic) at most the stated rounding bound at "
                     "every input value.")
    lines.append("informational: ulps (of max |R^ref|), rel err, cons ref (|sum R - f_c(x)| at high precision), "
                 "roots ok (the fraction of active neurons whose root point lies in the domain), times per sample.")
    lines.append("verification " + ("passed" if report.ok else "FAILED"))
    return "\n".join(lines)


def format_markdown(report: VerifyReport) -> str:
    """The report as a Markdown table: required checks by name with their status, the
    informational measurements in columns marked "(info)"."""
    lines = [f"### lrp verify: {report.model}, {report.samples} sample(s), reference at {report.dps} digits", "",
             "| rule / composite | status | required checks | ulps (info) | rel err (info) | cons ref (info) "
             "| roots ok (info) |",
             "|---|---|---|---|---|---|---|"]
    for row in report.rows:
        if row.error is not None:
            lines.append(f"| {row.name} | error | {row.error} | | | | |")
            continue
        failed = [c.name for c in row.checks if c.required and not c.holds]
        status = "ok" if row.ok else "FAIL: " + ", ".join(failed)
        checks = "; ".join(f"{c.name} {check_status(c)}" for c in row.checks)
        roots = "-" if row.root_points_reference is None else f"{row.root_points_reference:.3f}"
        lines.append(f"| {row.name} | {status} | {checks} | {row.max_ulps:.3g} | {row.max_relative:.2e} "
                     f"| {row.conservation_reference:.2e} | {roots} |")
    lines += ["", "Required checks and their thresholds: agreement (error / rounding bound <= 1), forward, "
              "conservation (float64 |sum R - f_c(x)| <= what the rule absorbs + the rounding bound), balance, "
              "positivity where promised (else info), root points (engine and direct check agree).", "",
              "verification " + ("passed" if report.ok else "FAILED")]
    return "\n".join(lines) + "\n"
