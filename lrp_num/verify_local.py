"""Layer-local verification for large models (``lrp verify --local``).

A whole-network pass of the high-precision reference is out of reach at ImageNet scale (a
ResNet-18 at 3x224x224 has 2.3 million neurons below its output). This module verifies each
node *locally* instead, for one input:

1. the float64 engine explains the input once, node by node, keeping the relevance R_j arriving
   at every node's output and the relevance R_i it passes to its inputs;
2. at every node with a rule (Dense, Conv2d, pooling, ChannelAffine, Add, max pooling) it samples
   K output neurons (seeded; for a convolution a neuron is a (channel, position) pair) among
   those with R_j != 0, and runs the engine's own rule for that node once more with the upper
   relevance restricted to those neurons: the result is the engine's sum over the sampled j of
   its contributions R_ij;
3. the high-precision reference recomputes those contributions by the rule's definition
   (:mod:`lrp_num.reference.node_rules`: root point along the search direction,
   R_ij = gradient x (x_i - x~_i), or the published formula), taking from the engine only the
   relevance above (the sampled R_j, float64, exact) and the node's float64 inputs. Its rule
   comes from the reference's own planner (:func:`lrp_num.reference.layer_plan`), its weights
   from the layer as given (batch norms folded in the reference's arithmetic), its rows from
   index arithmetic of this module, never from the engine's kernels;
4. the error |R_i(engine) - R_i(reference)| of every input touched is compared with the
   first-order rounding bound of the step (:func:`lrp_num.verify._step_bound`, safety 2), plus
   the rounding of float64 parameters derived from the layer's own (a folded batch norm): the
   inputs are the engine's own, so no forward error enters;
5. the float64 conservation of the whole node, |sum_i R_i - (sum_j R_j - A)|, is compared with
   its rounding bound u (2 (n_j + m + 6 + 2P) K sum_j |R_j| + n_in sum_i |R_i| + n_out sum_j |R_j|
   + |A|) (n_j the fan-in, m the fan-out, P the parameter rounding, K the largest cancellation
   sum_i |R_ij| / |R_j| among the sampled neurons: exactly 1 for rules whose terms have one
   sign, an estimate for the others). A is what the rule absorbs (biases, stabilisers: the
   epsilon rule everywhere, a conserving rule at a neuron whose slope is 0), summed by the
   reference over the sampled neurons. A is known for the whole node, and the check required,
   where every neuron with relevance is sampled, or where the rule conserves by its derivation
   and its terms are products f(x_i) g(w_ij) (z+, z^B, w^2, flat, LRP-0, gamma, the Add and
   pooling rules; DTD bias convention, stabiliser at zero slopes only): there the neurons
   without a non-zero term are found with the layer's own geometry on 0/1 arrays
   (:func:`_without_terms`) and give all of R_j to the stabiliser, the others none. Elsewhere
   A is the sample's sum scaled to the node, and the row is informational (marked "i").

Step 3 has two paths. ``path="arb"`` (the default where python-flint is installed) computes
the reference in Arb's ball arithmetic (:mod:`lrp_num.certified.sampled`): the sums over
connections (z_j, the slope of the search direction, and the transposed sum
R_i = sum_j w_ij v_ij c_j t_j) are ``arb_mat`` products in C over the sampled rows, the float64
data entering as exact balls, so every R_i comes back as a ball [m +- r] that contains the
exact value; the error compared with the bound is |e - m| + r. Nodes whose rule has no matrix
form there (zennit's gamma_split; root-point rules under the "magnitude" bias convention) take
the mpmath reference, and their row says so. ``path="mpmath"`` is :mod:`lrp_num.reference.node_rules`
at ``dps`` digits for every node: the same definitions, some 100 times slower.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import mpmath
import numpy as np

from lrp_num.errors import DerivationScopeWarning, LRPError, ShapeError, UnsupportedLayerError

U = 2.0 ** -53
#: rules that pass on exactly the relevance they receive, by their derivation (DTD bias convention)
CONSERVING_RULES = ("w2", "zplus", "zbox", "lrp0", "gamma", "flat", "add_z", "add_zplus", "maxpool")
#: the high-precision paths a local check can use
PATHS = ("mpmath", "arb")
#: the default number of sampled output neurons per node
DEFAULT_NEURONS = 256


@dataclass
class LocalLayerReport:
    """The local check of one node.

    ``max_ulps`` / ``max_relative``: the largest |R_i(engine) - R_i(reference)| over the inputs
    the sampled neurons touch, in ulps of (and relative to) the largest |R_i(reference)| there;
    ``error_over_bound``: the largest error over its rounding bound (must be <= 1);
    ``leak``: the largest |R_i| the engine gives to inputs no sampled neuron reads (must be 0);
    ``conservation_error``: |sum_i R_i - (sum_j R_j - absorbed)| of the whole node in float64,
    ``conservation_bound`` its rounding bound, ``absorbed`` what the rule keeps (known for the
    whole node when ``absorbed_exact``: every neuron with relevance sampled, or the neurons
    without terms of a conserving rule; else scaled from the sample), and
    ``conservation_required`` whether the check is required (exactly then).
    """

    index: int
    name: str
    layer: str
    rule: str
    engine_rule: str | None
    outputs: int
    nonzero: int
    sampled: int
    max_ulps: float = 0.0
    max_relative: float = 0.0
    max_bound: float = 0.0
    error_over_bound: float = 0.0
    leak: float = 0.0
    conservation_error: float = 0.0
    conservation_bound: float = 0.0
    conservation_over_bound: float = 0.0
    conservation_required: bool = True
    absorbed_sampled: float = 0.0
    absorbed: float = 0.0
    absorbed_exact: bool = True
    time_reference: float = 0.0
    reference: str = "mpmath"
    undecided: int = 0

    @property
    def ok(self) -> bool:
        agrees = self.error_over_bound <= 1.0 and self.leak == 0.0 and self.rule == (self.engine_rule or self.rule)
        return agrees and (not self.conservation_required or self.conservation_over_bound <= 1.0)

    def failures(self) -> list[str]:
        """The names of the checks that fail."""
        failed = []
        if self.engine_rule is not None and self.engine_rule != self.rule:
            failed.append(f"rule (engine {self.engine_rule})")
        if self.error_over_bound > 1.0:
            failed.append("agreement" + (f" ({self.undecided} neurons undecided)" if self.undecided else ""))
        if self.leak != 0.0:
            failed.append("leak")
        if self.conservation_required and self.conservation_over_bound > 1.0:
            failed.append("conservation")
        return failed


@dataclass
class LocalReport:
    """Every node's local check for one input, and the settings."""

    model: str
    method: str
    neurons: int
    seed: int
    dps: int
    path: str
    layers: list[LocalLayerReport] = field(default_factory=list)
    time_engine: float = 0.0
    time_reference: float = 0.0

    @property
    def ok(self) -> bool:
        return all(layer.ok for layer in self.layers)

    def as_dict(self) -> dict[str, Any]:
        layers = []
        for layer in self.layers:
            item = asdict(layer)
            item["ok"] = layer.ok
            item["status"] = "pass" if layer.ok else "FAIL: " + ", ".join(layer.failures())
            layers.append(item)
        return {"model": self.model, "method": self.method, "neurons": self.neurons, "seed": self.seed,
                "dps": self.dps, "path": self.path, "ok": self.ok, "time_engine": self.time_engine,
                "time_reference": self.time_reference, "layers": layers}


def default_path() -> str:
    """"arb" where python-flint is installed, else "mpmath"."""
    try:
        import flint  # noqa: F401
    except ImportError:
        return "mpmath"
    return "arb"


def _sampled_windows(operation, input_shape: tuple[int, ...], sampled: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pooling windows of the sampled outputs over the inputs they touch: (rows, connected,
    touched), rows indexing ``touched`` (``len(touched)`` where not connected)."""
    from lrp_num.reference.linear import pool_windows

    rows, connected, _, _ = pool_windows(operation, input_shape)
    rows, connected = rows[sampled], connected[sampled]
    touched = np.unique(rows[connected])
    return np.where(connected, np.searchsorted(touched, rows), len(touched)), connected, touched


def _sampled_addends(layer_input: list, engine_lower: list, sampled: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, float]:
    """An Add node's sampled engine relevance and addends (concatenated addend by addend), and the
    largest engine relevance outside the sample (where a sampled output sends nothing)."""
    engine = np.concatenate([part[sampled] for part in engine_lower])
    addends = np.concatenate([addend.reshape(-1)[sampled] for addend in layer_input])
    leak = max(float(np.abs(np.delete(part, sampled)).max(initial=0.0)) for part in engine_lower)
    return engine, addends, leak


# -- the engine's side ----------------------------------------------------------------------------

def _engine_plan(graph, rule, composite, parameters: dict, input_is_box: bool) -> dict:
    """The engine's own plan (the rule its explain applies at each node)."""
    from lrp_num.engine.explain import _check_plan, _resolve_composite

    plan = _resolve_composite(rule, composite, dict(parameters), None).plan_graph(graph, input_is_box)
    _check_plan(plan, graph.layers, None)
    return plan


@dataclass
class _EngineNode:
    index: int
    above: np.ndarray
    lower: list[np.ndarray]


def _engine_pass(graph, x: np.ndarray, plan: dict, target, conventions, domain):
    """The engine's forward trace and backward pass, keeping each ruled node's relevance above
    and below; returns (activations, nodes by index, the backend, the box)."""
    from lrp_num import backends
    from lrp_num.engine import explain as engine

    backend = backends.backend_of(x)
    activations = backend.forward_trace(graph, x)
    top = backend.top_relevance(activations[graph.output], target)
    box = engine._Box(domain, x, graph, backend)
    arriving = {graph.output: top}
    kept: dict[int, _EngineNode] = {}
    for index in reversed(range(len(graph.nodes))):
        node = graph.nodes[index]
        layer, inputs = node.operation, [activations[name] for name in node.inputs]
        above = arriving.pop(node.name)
        choice = plan.get(index)
        if choice is not None:
            with warnings.catch_warnings():  # as in lrp_num.verify: comparing, not explaining
                warnings.simplefilter("ignore", DerivationScopeWarning)
                lower, _ = engine._apply_node_rule(layer, inputs, above, choice, conventions, box, index,
                                                   False, None, backend)
            kept[index] = _EngineNode(index, above, lower)
        else:
            lower = engine._route(layer, inputs, above)
        for name, relevance in zip(node.inputs, lower):
            arriving[name] = arriving[name] + relevance if name in arriving else relevance
    return activations, kept, backend, box


def _engine_contributions(graph, index: int, activations, above: np.ndarray, sampled: np.ndarray,
                          choice, conventions, box, backend) -> list[np.ndarray]:
    """The engine's rule at node ``index`` with the upper relevance kept at the sampled neurons
    only: sum over the sampled j of the engine's R_ij, per input (flattened, one per input)."""
    from lrp_num.engine import explain as engine

    node = graph.nodes[index]
    masked = np.zeros_like(above)
    flat = masked.reshape(-1)
    flat[sampled] = above.reshape(-1)[sampled]
    inputs = [activations[name] for name in node.inputs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DerivationScopeWarning)
        lower, _ = engine._apply_node_rule(node.operation, inputs, masked, choice, conventions, box, index,
                                           False, None, backend)
    return [np.asarray(part, dtype=np.float64).reshape(-1) for part in lower]


# -- the reference's rows for the sampled neurons -------------------------------------------------

def _conv_rows(layer, input_shape, output_shape, rows: np.ndarray):
    """(index, connected, weight, bias) of the sampled output neurons of a convolution, by index
    arithmetic: output (o, p, q) sees input channel (o // (C_out / G)) C_in/G + c at row
    p s_h + u - p_h and column q s_w + v - p_w (padding cells are no inputs)."""
    c_in, height, width = input_shape
    _, ho, wo = output_shape
    c_out, per_group, kh, kw = layer.weight.shape
    (sh, sw), (ph, pw) = layer.stride, layer.padding
    o, rest = np.divmod(rows, ho * wo)
    p, q = np.divmod(rest, wo)
    c, u, v = (a.ravel() for a in np.meshgrid(np.arange(per_group), np.arange(kh), np.arange(kw), indexing="ij"))
    r = p[:, None] * sh + u[None, :] - ph
    s = q[:, None] * sw + v[None, :] - pw
    channel = (o // (c_out // layer.groups))[:, None] * per_group + c[None, :]
    inside = (r >= 0) & (r < height) & (s >= 0) & (s < width)
    n_in = c_in * height * width
    index = np.where(inside, channel * height * width + r * width + s, n_in)
    weight = np.where(inside, layer.weight[o[:, None], c[None, :], u[None, :], v[None, :]], 0.0)
    return index, inside, weight, layer.bias[o], o


def _fold_rows(matrix, channel: np.ndarray, batchnorms):
    """The sampled rows followed by the batch norms, folded in mpmath by the definition
    (s = gamma / sqrt(var + eps), w' = s w, b' = s b + beta - mu s), channel ``channel`` per row."""
    from lrp_num.reference.linear import FOLD_ROUNDINGS, LinearMatrix, _batchnorm_affine

    weight_mp, bias_mp = matrix.weight_mp, matrix.bias_mp
    bias_scale = np.abs(matrix.bias).astype(np.float64)
    for batchnorm in batchnorms:
        scale, shift = _batchnorm_affine(batchnorm)
        weight_mp = weight_mp * scale[channel][:, None]
        bias_mp = bias_mp * scale[channel] + shift[channel]
        s = np.abs(np.array([float(value) for value in scale]))
        bias_scale = bias_scale * s[channel] + np.abs(batchnorm.mean)[channel] * s[channel] \
            + np.abs(batchnorm.beta)[channel]
    to_float = np.vectorize(float, otypes=[np.float64])
    return LinearMatrix(matrix.n_in, matrix.n_out, matrix.index, matrix.connected, to_float(weight_mp),
                        to_float(bias_mp), weight_mp, bias_mp,
                        parameter_error=FOLD_ROUNDINGS * len(batchnorms) + 2, bias_scale=bias_scale)


def _sampled_matrix(node, input_shape, output_shape, rows: np.ndarray):
    """The reference's matrix of the sampled rows of a linear node (indices into the flattened input)."""
    from lrp_num.layers import BatchNorm, ChannelAffine, Conv2d, Dense
    from lrp_num.reference.linear import LinearMatrix, batchnorm_matrix, linear_matrix

    source = node.source
    if isinstance(source, Dense):
        n_in = source.weight.shape[0]
        index = np.broadcast_to(np.arange(n_in), (len(rows), n_in))
        matrix = LinearMatrix(n_in, len(rows), index, np.ones(index.shape, bool),
                              np.ascontiguousarray(source.weight[:, rows].T), source.bias[rows])
        channel = rows
    elif isinstance(source, Conv2d):
        index, connected, weight, bias, channel = _conv_rows(source, input_shape, output_shape, rows)
        matrix = LinearMatrix(int(np.prod(input_shape)), len(rows), index, connected, weight, bias)
    else:  # pooling and per-channel affine nodes: the whole matrix is cheap (no weights to convert)
        if isinstance(node.operation, ChannelAffine) and isinstance(source, BatchNorm):
            whole = batchnorm_matrix(source, input_shape)
        else:
            whole, _ = linear_matrix(source, input_shape)
        return LinearMatrix(whole.n_in, len(rows), whole.index[rows], whole.connected[rows],
                            whole.weight[rows], whole.bias[rows], whole.weight_mp[rows], whole.bias_mp[rows],
                            whole.parameter_error, whole.bias_scale[rows])
    if node.batchnorms:
        per_channel = int(np.prod(output_shape[1:])) if isinstance(source, Conv2d) else 1
        matrix = _fold_rows(matrix, channel if isinstance(source, Conv2d) else rows // per_channel,
                            node.batchnorms)
    return matrix


def _compact(matrix):
    """The matrix on the inputs its rows touch only: (matrix, the touched inputs, sorted)."""
    from lrp_num.reference.linear import LinearMatrix

    touched = np.unique(matrix.index[matrix.connected])
    index = np.where(matrix.connected, np.searchsorted(touched, matrix.index), len(touched))
    return LinearMatrix(len(touched), matrix.n_out, index, matrix.connected, matrix.weight, matrix.bias,
                        matrix.weight_mp, matrix.bias_mp, matrix.parameter_error, matrix.bias_scale), touched


def _extended(values: np.ndarray) -> np.ndarray:
    from lrp_num.reference.linear import to_mpf

    return np.append(to_mpf(values), mpmath.mpf(0))


def _sampled_rows(node, input_shape, output_shape, rows: np.ndarray):
    """The sampled rows of a linear node for the arb path: (SampledRows on the flattened input,
    parameter rounding P). The layer's own float64 parameters stay exact; a batch norm after it
    (or the node's own batch norm) enters as per-row balls s_j, t_j (w' = s w, b' = s b + t)."""
    from lrp_num.certified.balls import require_flint
    from lrp_num.certified.network import _batchnorm_affine
    from lrp_num.certified.sampled import SampledRows
    from lrp_num.layers import BatchNorm, ChannelAffine, Conv2d, Dense
    from lrp_num.reference.linear import FOLD_ROUNDINGS, linear_matrix

    source = node.source
    n_in = int(np.prod(input_shape))
    if isinstance(source, Dense):
        index = np.broadcast_to(np.arange(n_in), (len(rows), n_in))
        connected, weight, bias = np.ones(index.shape, bool), np.ascontiguousarray(source.weight[:, rows].T), \
            source.bias[rows]
        channel = rows
    elif isinstance(source, Conv2d):
        index, connected, weight, bias, channel = _conv_rows(source, input_shape, output_shape, rows)
    elif isinstance(node.operation, ChannelAffine) and isinstance(source, BatchNorm):
        per_channel = int(np.prod(input_shape[1:], dtype=np.int64))
        scale, shift = _batchnorm_affine(source)
        channel = rows // per_channel
        return SampledRows(n_in, rows[:, None], np.ones((len(rows), 1), bool), np.ones((len(rows), 1)),
                           np.zeros(len(rows)), scale[channel], shift[channel]), float(FOLD_ROUNDINGS + 2)
    else:  # pooling and a plain per-channel affine map: float64 weights of the whole matrix
        whole, _ = linear_matrix(source, input_shape)
        return SampledRows(n_in, whole.index[rows], whole.connected[rows], whole.weight[rows],
                           whole.bias[rows]), float(whole.parameter_error)
    scale = shift = None
    if node.batchnorms:
        per_channel = int(np.prod(output_shape[1:])) if isinstance(source, Conv2d) else 1
        channel = channel if isinstance(source, Conv2d) else rows // per_channel
        arb = require_flint().arb
        scale = np.full(len(rows), arb(1), dtype=object)
        shift = np.full(len(rows), arb(0), dtype=object)
        for batchnorm in node.batchnorms:
            s, t = _batchnorm_affine(batchnorm)
            scale, shift = scale * s[channel], shift * s[channel] + t[channel]
    parameter_error = float(FOLD_ROUNDINGS * len(node.batchnorms) + 2) if node.batchnorms else 0.0
    return SampledRows(n_in, index, connected, weight, bias, scale, shift), parameter_error


def _check_node_arb(*arguments) -> tuple[tuple[float, ...], int] | None:
    """As :func:`_check_node`, the reference in ball arithmetic, and the number of undecided
    neurons; None where the arb path has no matrix form for the node's rule (the caller then
    takes mpmath). The error at an input is |e - m| + r for the engine's e and the ball [m +- r]."""
    found = _arb_reference(*arguments)
    if found is None:
        return None
    error, magnitude = _ball_errors(found.engine, found.values, found.bits)
    checked = _compare(found.trace, error, magnitude, found.inputs, len(arguments[5]), found.winner_take_all,
                       found.parameter_error, found.absorbed, found.leak)
    return checked, found.undecided


def _ball_errors(engine: np.ndarray, values: list, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(upper bounds of |e_i - R_i|, |m_i|) for engine values e_i and balls [m_i +- r_i] containing R_i.

    m_i is split into float64 hi_i + lo_i (lo_i the rounded midpoint of the ball m_i - hi_i, whose
    radius r'_i covers r_i and that subtraction's rounding), so |e_i - R_i| <= |(e_i - hi_i) - lo_i|
    + r'_i + u |lo_i|; the float64 evaluation of that sum is widened by 2^-50 to stay an upper bound.
    A NaN ball (an undecided neuron's contribution) gives an infinite error."""
    from lrp_num.certified.balls import working_precision

    high = np.empty(len(values))
    low = np.empty(len(values))
    radius = np.empty(len(values))
    with working_precision(bits):
        for i, ball in enumerate(values):
            hi = float(ball)
            rest = ball - hi
            high[i], low[i], radius[i] = hi, float(rest), float(rest.rad())
    with np.errstate(invalid="ignore"):
        error = (np.abs((np.asarray(engine, dtype=np.float64) - high) - low) + radius + U * np.abs(low)) \
            * (1 + 2.0 ** -50)
    error = np.where(np.isnan(error), np.inf, error)
    return error, np.abs(np.nan_to_num(high))


def _arb_reference(node, index: int, layer_input: list[np.ndarray], output_shape, engine_node: _EngineNode,
                   sampled: np.ndarray, engine_lower: list[np.ndarray], rule: str, parameters: dict,
                   conventions: dict, domain, dps: int) -> _NodeReference | None:
    """The ball-arithmetic reference of one node's sampled neurons (:mod:`lrp_num.certified.sampled`);
    None where that path has no matrix form for the node's rule."""
    from lrp_num.certified import sampled as balls
    from lrp_num.certified.balls import precision_bits, working_precision
    from lrp_num.checks import check_orthant
    from lrp_num.layers import Add, MaxPool2d
    from lrp_num.reference.directions import ADD_RULES, RULE_DEFAULTS
    from lrp_num.reference.roots import GUARD_DIGITS

    operation = node.operation
    input_shape = layer_input[0].shape
    above = engine_node.above.reshape(-1)
    relevance = above[sampled]
    bits = precision_bits(dps, GUARD_DIGITS)
    parameters = {**RULE_DEFAULTS.get(rule, {}), **dict(parameters)}
    parameter_error = 0.0
    if isinstance(operation, Add):
        if rule not in ADD_RULES:
            return None
        result = balls.add_balls(rule, [a.reshape(-1)[sampled] for a in layer_input], relevance, parameters,
                                 conventions, bits=bits)
        engine, a, leak = _sampled_addends(layer_input, engine_lower, sampled)
        n = len(sampled)
        flow_index = np.arange(len(layer_input))[None, :] * n + np.arange(n)[:, None]
        winner_take_all = False
    else:
        x = layer_input[0].reshape(-1)
        if isinstance(operation, MaxPool2d):
            rows, connected, touched = _sampled_windows(operation, input_shape, sampled)
            result = balls.maxpool_balls(rows, connected, x[touched], relevance, len(touched))
            flow_index = rows
            winner_take_all = True
        else:
            if rule not in balls.ROOT_POINT_RULES + balls.FORMULA_RULES or (
                    conventions["bias"] not in balls.BIAS_CONVENTIONS and rule not in balls.FORMULA_RULES):
                return None
            with working_precision(bits):  # the batch norm's balls at the working precision
                full, parameter_error = _sampled_rows(node, input_shape, output_shape, sampled)
            touched, compact = _touched(full.index, full.connected, full.n_touched)
            rows = balls.SampledRows(len(touched), compact, full.connected, full.weight, full.bias, full.scale,
                                     full.shift)
            if rule in ("zplus", "gamma"):
                check_orthant(x[touched][None], index, operation, rule)
            bounds = None
            if rule == "zbox":
                if domain is None:
                    raise LRPError(f"node {node.name!r}: rule zbox needs the input box")
                bounds = tuple(np.broadcast_to(bound, input_shape).reshape(-1)[touched]
                               for bound in (domain.low, domain.high))
            result = balls.linear_balls(rule, rows, x[touched], relevance, parameters, conventions, bounds,
                                        bits=bits)
            flow_index = compact
            winner_take_all = False
        engine = engine_lower[0][touched]
        a = x[touched]
        rest = engine_lower[0].copy()
        rest[touched] = 0.0
        leak = float(np.abs(rest).max(initial=0.0))
    trace = _FlowTrace(np.arange(len(sampled)), flow_index, result.flow, result.upper)
    with working_precision(max(result.bits, bits)):
        absorbed = float((result.absorbed_bias + result.absorbed_stabiliser).mid())
    return _NodeReference(result.relevance, engine, a, trace, winner_take_all, parameter_error, absorbed, leak,
                          result.undecided, max(result.bits, bits))


def _touched(index: np.ndarray, connected: np.ndarray, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """(the inputs the rows read, sorted; the rows' slots as positions among them, len(touched) where
    unconnected), by a lookup table instead of a sort."""
    read = np.zeros(n_in + 1, bool)
    read[index[connected]] = True
    touched = np.flatnonzero(read[:n_in])
    lookup = np.full(n_in + 1, len(touched))
    lookup[touched] = np.arange(len(touched))
    return touched, np.where(connected, lookup[index], len(touched))


@dataclass
class _FlowTrace:
    """What the rounding bound (:func:`lrp_num.verify._step_bound`) reads of a step: |R_ij| and |R_j|."""

    flow_rows: np.ndarray
    flow_index: np.ndarray
    flow: np.ndarray
    flow_upper: np.ndarray


# -- one node -------------------------------------------------------------------------------------

def _fan_out(layer, input_shape, output_shape) -> int:
    """The largest number of output neurons that read one input."""
    from lrp_num.layers import Conv2d, Dense

    if isinstance(layer, Dense):
        return int(output_shape[0])
    if isinstance(layer, Conv2d):
        (kh, kw), (sh, sw) = layer.weight.shape[2:], layer.stride
        return int(layer.weight.shape[0] // layer.groups * -(-kh // sh) * -(-kw // sw))
    kernel, stride = getattr(layer, "kernel", None), getattr(layer, "stride", None)
    if kernel is not None and stride is not None:  # windows of sum, average and max pooling
        (kh, kw), (sh, sw) = kernel, stride
        return int(-(-kh // sh) * -(-kw // sw))
    if len(input_shape) == 3 and len(output_shape) == 3:  # adaptive pooling: overlapping bins
        return int(-(-output_shape[1] // input_shape[1]) + 1) * int(-(-output_shape[2] // input_shape[2]) + 1)
    return 1


@dataclass
class _NodeReference:
    """The reference's sum over the sampled neurons of R_ij at the inputs they touch (``values``:
    mpf, or balls on the arb path), the engine's at the same inputs, and what the comparison needs."""

    values: Any
    engine: np.ndarray
    inputs: np.ndarray
    trace: Any
    winner_take_all: bool
    parameter_error: float
    absorbed: float
    leak: float
    undecided: int = 0
    bits: int = 0


def _check_node(*arguments) -> tuple[float, ...]:
    """Reference contributions of the sampled neurons (mpmath) and their comparison with the engine's.

    Returns (max error, max |reference|, max error / bound, max bound, leak, cancellation K,
    relevance absorbed by the sampled neurons, parameter rounding P)."""
    from lrp_num.reference.linear import to_float, to_mpf
    from lrp_num.reference.roots import GUARD_DIGITS

    found = _mpmath_reference(*arguments)
    with mpmath.workdps(arguments[-1] + GUARD_DIGITS):
        error = np.abs(to_float(to_mpf(found.engine) - found.values))
    magnitude = np.abs(to_float(found.values))
    return _compare(found.trace, error, magnitude, found.inputs, len(arguments[5]), found.winner_take_all,
                    found.parameter_error, found.absorbed, found.leak)


def _mpmath_reference(node, index: int, layer_input: list[np.ndarray], output_shape, engine_node: _EngineNode,
                      sampled: np.ndarray, engine_lower: list[np.ndarray], rule: str, parameters: dict,
                      conventions: dict, domain, dps: int) -> _NodeReference:
    """The mpmath reference of one node's sampled neurons (:mod:`lrp_num.reference.node_rules`)."""
    from lrp_num.checks import check_orthant
    from lrp_num.layers import Add, MaxPool2d
    from lrp_num.reference.directions import ROOT_POINT_RULES
    from lrp_num.reference.linear import to_mpf
    from lrp_num.reference.node_rules import LayerTrace, add_node, formula_layer, maxpool_layer, root_point_layer
    from lrp_num.reference.roots import GUARD_DIGITS

    operation = node.operation
    input_shape = layer_input[0].shape
    above = engine_node.above.reshape(-1)
    parameter_error = 0.0
    with mpmath.workdps(dps + GUARD_DIGITS):
        relevance = to_mpf(above[sampled])
        trace = LayerTrace(index, repr(operation), rule, relevance_out=relevance, name=node.name)
        if isinstance(operation, Add):
            addends = [to_mpf(a.reshape(-1)[sampled]) for a in layer_input]
            lower = add_node(rule, addends, relevance, parameters, conventions, trace, "newton")
            reference = np.concatenate(lower)
            engine, a, leak = _sampled_addends(layer_input, engine_lower, sampled)
            winner_take_all = False
        else:
            x = layer_input[0].reshape(-1)
            if isinstance(operation, MaxPool2d):
                rows, connected, touched = _sampled_windows(operation, input_shape, sampled)
                lower = maxpool_layer(rows, connected, to_mpf(x[touched]), relevance, len(touched), trace)
                winner_take_all = True
            else:
                matrix, touched = _compact(_sampled_matrix(node, input_shape, output_shape, sampled))
                parameter_error = matrix.parameter_error
                x_ext = _extended(x[touched])
                if rule in ROOT_POINT_RULES:
                    if ROOT_POINT_RULES[rule] == "orthant":
                        check_orthant(x[touched][None], index, operation, rule)
                    bounds = None
                    if rule == "zbox":
                        if domain is None:
                            raise LRPError(f"node {node.name!r}: rule zbox needs the input box")
                        bounds = tuple(_extended(np.broadcast_to(bound, input_shape).reshape(-1)[touched])
                                       for bound in (domain.low, domain.high))
                    lower = root_point_layer(rule, matrix, x_ext, relevance, parameters, conventions, bounds,
                                             trace, "newton", False)
                else:
                    lower = formula_layer(rule, matrix, x_ext, relevance, parameters, conventions, trace)
                winner_take_all = False
            reference = lower
            engine = engine_lower[0][touched]
            a = x[touched]
            rest = engine_lower[0].copy()
            rest[touched] = 0.0
            leak = float(np.abs(rest).max(initial=0.0))
        absorbed = float(trace.absorbed_bias + trace.absorbed_stabiliser)
    return _NodeReference(reference, engine, a, trace, winner_take_all, parameter_error, absorbed, leak)


def _compare(trace, error: np.ndarray, magnitude: np.ndarray, a: np.ndarray, n_sampled: int,
             winner_take_all: bool, parameter_error: float, absorbed: float, leak: float) -> tuple[float, ...]:
    """(max error, max |reference|, max error / bound, max bound, leak, cancellation K, absorbed,
    P) from the per-input errors and the step's flows (``trace``: flow, flow_index, flow_upper)."""
    from lrp_num.verify import _step_bound

    bound = 2 * _step_bound(trace, np.zeros(n_sampled), a, np.zeros(len(a)), winner_take_all)
    flow, upper = trace.flow, trace.flow_upper
    cancellation = 1.0
    if flow is not None and flow.size:
        k = np.divide(flow.sum(axis=1), upper, out=np.ones_like(upper), where=upper != 0)
        cancellation = float(k.max(initial=1.0))
        if parameter_error:  # float64 weights of a fold: each q_ij and sum_i q_ij move by 2 P u
            extra = np.zeros(len(a) + 1)
            np.add.at(extra, trace.flow_index, 2 * U * 2 * parameter_error * flow * (1 + k)[:, None])
            bound = bound + extra[: len(a)]
    over = np.divide(error, bound, out=np.where(error > 0, np.inf, 0.0), where=bound > 0)
    return (float(error.max(initial=0.0)), float(magnitude.max(initial=0.0)), float(over.max(initial=0.0)),
            float(bound.max(initial=0.0)), leak, cancellation, absorbed, float(parameter_error))


def _conservation(engine_node: _EngineNode, fan_in: int, fan_out: int, parameter_error: float,
                  cancellation: float, absorbed: float) -> tuple[float, float]:
    """(|sum_i R_i - (sum_j R_j - absorbed)| in float64, its first-order rounding bound) of the
    whole node; ``absorbed`` is what the rule keeps (biases, stabilisers), by the reference."""
    above = np.asarray(engine_node.above, dtype=np.float64).reshape(-1)
    lower = np.concatenate([np.asarray(part, dtype=np.float64).reshape(-1) for part in engine_node.lower])
    error = abs(float(lower.sum()) - (float(above.sum()) - absorbed))
    step = 2 * (fan_in + fan_out + 6 + 2 * parameter_error) * cancellation * float(np.abs(above).sum())
    sums = len(lower) * float(np.abs(lower).sum()) + len(above) * float(np.abs(above).sum())
    return error, U * (step + sums + abs(absorbed)) + 1e-300


def _without_terms(layer, rule: str, inputs: list[np.ndarray], domain) -> np.ndarray | None:
    """The output neurons none of whose terms q_ij is non-zero, for rules whose terms are
    products f(x_i) g(w_ij) (flattened mask); None where the rule's terms are not such products.

    Such a neuron has slope sum_i q_ij = 0: under the DTD bias convention and the stabiliser
    at zero slopes, the stabiliser keeps all of its R_j (the reference's absorbed relevance).
    The count sum_i 1[f(x_i) != 0] 1[g(w_ij) != 0] is computed with the layer's own geometry on
    0/1 arrays (exact in float64): zplus x_i w_ij^+, lrp0 and gamma x_i w_ij, w2 w_ij^2, flat 1,
    zbox (x_i - l_i) w_ij^+ + (x_i - h_i) w_ij^-; Add nodes their addends (add_z a_k,
    add_zplus a_k^+); pooling under the z-rule x_i; max pooling gives every R_j to its winners.
    """
    from lrp_num.layers import AdaptiveAvgPool2d, Add, AvgPool2d, Conv2d, Dense, MaxPool2d, SumPool2d

    a = np.asarray(inputs[0], dtype=np.float64)
    if isinstance(layer, MaxPool2d):
        return np.zeros(int(np.prod(layer(a).shape)), bool)
    if isinstance(layer, Add):
        stacked = np.stack([np.asarray(addend, dtype=np.float64) for addend in inputs])
        if rule == "add_z":
            return (stacked == 0).all(axis=0).reshape(-1)
        if rule == "add_zplus":
            return (stacked <= 0).all(axis=0).reshape(-1)
        return None
    if isinstance(layer, (SumPool2d, AvgPool2d, AdaptiveAvgPool2d)):
        return (layer((a != 0).astype(np.float64)) == 0).reshape(-1) if rule == "lrp0" else None
    if not isinstance(layer, (Dense, Conv2d)):
        return None

    def count(f_x: np.ndarray, g_w: np.ndarray) -> np.ndarray:
        weight = g_w.astype(np.float64)
        if isinstance(layer, Dense):
            probe = Dense(weight)
        else:
            probe = Conv2d(weight, stride=layer.stride, padding=layer.padding, groups=layer.groups)
        return probe(f_x.astype(np.float64))

    w = layer.weight
    if isinstance(layer, Dense) and rule in ("zplus", "lrp0", "gamma", "w2"):  # rows i with f(x_i) != 0
        weights = w if rule == "w2" else w[np.flatnonzero(a.reshape(-1) != 0)]
        return ~((weights > 0) if rule == "zplus" else (weights != 0)).any(axis=0)
    if rule == "zplus":
        counted = count(a != 0, w > 0)
    elif rule in ("lrp0", "gamma"):
        counted = count(a != 0, w != 0)
    elif rule == "w2":
        counted = count(np.ones_like(a), w != 0)
    elif rule == "flat":
        counted = count(np.ones_like(a), np.ones_like(w))
    elif rule == "zbox" and domain is not None:
        low, high = (np.broadcast_to(bound, a.shape[1:])[None] for bound in (domain.low, domain.high))
        counted = count(a != low, w > 0) + count(a != high, w < 0)
    else:
        return None
    return (counted == 0).reshape(-1)


# -- the whole network ----------------------------------------------------------------------------

def verify_local(network, x, rule: str | None = None, composite=None, target=None, *, input_domain=None,
                 neurons: int = DEFAULT_NEURONS, seed: int = 0, dps: int = 50, conventions=None,
                 path: str | None = None, model_name: str = "model", **parameters) -> LocalReport:
    """Verify every node of ``network`` locally at one input ``x`` (see the module docstring).

    Parameters
    ----------
    network : Graph or Sequential
    x : ndarray
        One input, with or without its batch axis of 1.
    rule, composite, target, input_domain, conventions, **parameters
        As in :func:`lrp_num.explain` (neither rule nor composite: ``"deep-taylor"``).
    neurons : int
        K, the output neurons sampled per node among those with R_j != 0 (all of them where a
        node has fewer; at least 1).
    seed : int
        Seeds the sample (node by node: numpy's generator on (seed, node index)).
    dps : int
        The reference's precision in decimal digits (20 to 10000).
    path : {"arb", "mpmath"}, optional
        The high-precision path: "arb" (ball arithmetic with matrix products, python-flint, the
        ``certified`` extra; nodes whose rule it has no matrix form for take mpmath) or "mpmath";
        default "arb" where python-flint is installed, else "mpmath".

    Returns
    -------
    LocalReport
        One row per node with a rule; ``ok`` when every required check holds.

    Raises
    ------
    LRPError
        A subclass for bad arguments: K < 1, a negative seed, an unknown path, a batch of more than one input,
        path="arb" without python-flint (MissingDependencyError),
        and whatever :func:`lrp_num.explain` raises for the network, rule and input.
    """
    from lrp_num import reference
    from lrp_num.checks import check_dps, explanation_input
    from lrp_num.engine.conventions import DTD
    from lrp_num.engine.graph import as_graph
    from lrp_num.io.model_io import InputDomain
    from lrp_num.progress import progress
    from lrp_num.reference.api import _conventions
    from lrp_num.layers import Add
    from lrp_num.reference.backward import _reference_nodes
    from lrp_num.reference.directions import ADD_ALIASES

    dps = check_dps(dps)
    if isinstance(neurons, bool) or not isinstance(neurons, (int, np.integer)) or neurons < 1:
        raise LRPError(f"the number of sampled neurons must be an integer >= 1, got {neurons!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise LRPError(f"the seed of the neuron sample must be an integer >= 0, got {seed!r}")
    path = default_path() if path is None else path
    if path not in PATHS:
        raise LRPError(f"unknown high-precision path {path!r}; known: {', '.join(PATHS)}")
    if path == "arb":
        from lrp_num.certified.balls import require_flint

        require_flint()
    if rule is None and composite is None:
        composite = "deep-taylor"
    graph = as_graph(network)
    x = explanation_input(x).astype(np.float64)
    shape = graph.input_shape
    if shape is not None and x.shape == tuple(shape):
        x = x[None]
    if x.shape[0] != 1:
        raise ShapeError(f"the local check takes one input, got a batch of {x.shape[0]}")
    domain = InputDomain.of(input_domain) if input_domain is not None else None
    if domain is not None:
        domain.check_fits(x.shape[1:])
    conventions = conventions or DTD
    conv = _conventions(conventions)
    method = rule if rule is not None else (composite if isinstance(composite, str) else type(composite).__name__)

    from lrp_num.layers.nonlinear import NONLINEAR
    from lrp_num.layers.normalization import NORMALIZATION
    for node in graph.nodes:  # the sampled-neuron check knows linear, pooling and Add nodes
        if isinstance(node.operation, NONLINEAR + NORMALIZATION):
            raise UnsupportedLayerError(
                f"node {node.name!r} ({node.operation!r}): the local check has no element-wise "
                f"nonlinearity or normalisation yet; use lrp verify without --local")
    start = time.perf_counter()
    engine_plan = _engine_plan(graph, rule, composite, parameters, domain is not None)
    activations, kept, backend, box = _engine_pass(graph, x, engine_plan, target, conventions, domain)
    time_engine = time.perf_counter() - start
    reference_plan = reference.layer_plan(network, rule, composite, input_is_box=domain is not None,
                                          **parameters)
    nodes, _, _ = _reference_nodes(network)
    report = LocalReport(model_name, str(method), int(neurons), int(seed), dps, path)
    for index in progress(sorted(kept), f"local check of {model_name}"):
        node, engine_node = nodes[index], kept[index]
        started = time.perf_counter()
        rule_here, rule_parameters = reference_plan.get(index, ("maxpool", {}))
        engine_rule = engine_plan[index].rule
        if isinstance(node.operation, Add):  # "lrp0" on the stacked addends is add_z
            engine_rule = ADD_ALIASES.get(engine_rule, engine_rule)
        above = engine_node.above.reshape(-1)
        nonzero = np.flatnonzero(above != 0)
        rng = np.random.default_rng([int(seed), int(index)])
        sampled = np.sort(rng.choice(nonzero, size=min(int(neurons), len(nonzero)), replace=False)) \
            if len(nonzero) else nonzero
        engine_start = time.perf_counter()
        engine_lower = _engine_contributions(graph, index, activations, engine_node.above, sampled,
                                             engine_plan[index], conventions, box, backend)
        time_engine += time.perf_counter() - engine_start
        layer_input = [activations[name][0] for name in graph.nodes[index].inputs]
        output_shape = activations[graph.nodes[index].name].shape[1:]
        row = LocalLayerReport(index, node.name, repr(node.operation), rule_here, engine_rule, len(above),
                               len(nonzero), len(sampled))
        parameter_error = 0.0
        cancellation = 1.0
        fan_in = len(layer_input)
        if len(sampled):
            arguments = (node, index, layer_input, output_shape, engine_node, sampled, engine_lower, rule_here,
                         rule_parameters, conv, domain, dps)
            checked = _check_node_arb(*arguments) if path == "arb" else None
            if checked is None:  # the mpmath path, or a rule the arb path has no matrix form for
                checked = _check_node(*arguments)
            else:
                checked, row.undecided = checked
                row.reference = "arb"
            error, magnitude, over, bound, leak, cancellation, absorbed, parameter_error = checked
            row.max_ulps = error / np.spacing(magnitude) if magnitude > 0 else (np.inf if error else 0.0)
            row.max_relative = error / magnitude if magnitude > 0 else (np.inf if error else 0.0)
            row.error_over_bound, row.max_bound, row.leak, row.absorbed_sampled = over, bound, leak, absorbed
            fan_in = _fan_in(node.operation, len(layer_input))
        else:  # nothing arrives: the engine must pass nothing on
            row.leak = max(float(np.abs(part).max(initial=0.0)) for part in engine_lower)
        fan_out = _fan_out(node.operation, layer_input[0].shape, output_shape)
        exact = len(sampled) == len(nonzero)
        row.absorbed = row.absorbed_sampled * (len(nonzero) / len(sampled) if len(sampled) else 0.0)
        if not exact and conv["bias"] == "dtd" and conv["stabilise"] == "zero" and rule_here in CONSERVING_RULES:
            without = _without_terms(graph.nodes[index].operation, rule_here,
                                     [activations[name] for name in graph.nodes[index].inputs], domain)
            if without is not None:  # those neurons give all of R_j to the stabiliser, the others none
                row.absorbed, exact = float(above[without].sum()), True
        row.conservation_error, row.conservation_bound = _conservation(engine_node, fan_in, fan_out,
                                                                       parameter_error, cancellation,
                                                                       row.absorbed)
        row.conservation_over_bound = row.conservation_error / row.conservation_bound
        # required where what the node absorbs is known: every neuron with relevance sampled (a
        # neuron of a conserving rule absorbs too, where its slope is 0 and the stabiliser takes R_j)
        row.conservation_required = exact
        row.absorbed_exact = exact
        row.time_reference = time.perf_counter() - started
        report.time_reference += row.time_reference
        report.layers.append(row)
    report.time_engine = time_engine
    return report


def _fan_in(layer, n_inputs: int) -> int:
    """The largest number of terms of one output neuron (the addends of an Add)."""
    from lrp_num.layers import Conv2d, Dense

    if isinstance(layer, Dense):
        return int(layer.weight.shape[0])
    if isinstance(layer, Conv2d):
        return int(np.prod(layer.weight.shape[1:]))
    kernel = getattr(layer, "kernel", None)
    if kernel is not None:
        return int(np.prod(kernel))
    return max(n_inputs, 1)


# -- the table ------------------------------------------------------------------------------------

def format_local_table(report: LocalReport) -> str:
    """The report as a plain-text table, one row per node with a rule."""
    rule_width = max([len("rule")] + [len(row.rule) for row in report.layers])
    header = (f"{'node':<24} {'rule':<{rule_width}} {'K':>5} {'of':>8} {'ulps':>9} {'rel err':>9} {'err/bnd':>8} "
              f"{'cons f64':>9} {'cons bnd':>9} {'c/bnd':>7} {'t ref':>7}  status")
    lines = [f"lrp verify --local: {report.model}, {report.method}, K = {report.neurons} neurons per node "
             f"(seed {report.seed}), reference {report.path} at {report.dps} digits", header, "-" * len(header)]
    for row in report.layers:
        status = "ok" if row.ok else "FAIL: " + ", ".join(row.failures())
        if row.reference != report.path:  # a rule the arb path has no matrix form for
            status += f" ({row.reference})"
        ratio = f"{row.conservation_over_bound:>7.2g}" + ("" if row.conservation_required else "i")
        lines.append(f"{row.name[:24]:<24} {row.rule:<{rule_width}} {row.sampled:>5d} {row.nonzero:>8d} "
                     f"{row.max_ulps:>9.3g} {row.max_relative:>9.2e} {row.error_over_bound:>8.2g} "
                     f"{row.conservation_error:>9.2e} {row.conservation_bound:>9.2e} {ratio:>7} "
                     f"{row.time_reference:>6.2f}s  {status}")
    lines += ["",
              "K: output neurons sampled among the 'of' neurons with relevance; ulps (of the largest |R_i| of the "
              "reference) and rel err: the engine's sum over the sampled neurons of R_ij against the reference's;",
              "err/bnd: that error over the step's first-order rounding bound (<= 1 required); cons f64: "
              "|sum_i R_i - (sum_j R_j - absorbed)| of the whole node in float64, c/bnd over its rounding bound "
              "(<= 1 required where the absorbed relevance is known for the whole node: every neuron with "
              "relevance sampled, or a conserving rule's neurons without terms; 'i': informational, "
              "absorbed scaled from the sample);",
              f"times: engine {report.time_engine:.2f}s, reference {report.time_reference:.2f}s",
              "local verification " + ("passed" if report.ok else "FAILED")]
    return "\n".join(lines)


__all__ = ["CONSERVING_RULES", "DEFAULT_NEURONS", "LocalLayerReport", "LocalReport", "PATHS", "default_path",
           "format_local_table", "verify_local"]
