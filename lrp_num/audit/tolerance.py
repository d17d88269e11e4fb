"""How far a correct attribution may lie from the exact relevance: a rounding bound per tensor.

A library that computes a rule correctly in floating point still differs from the exact
(mpmath) relevance by its rounding errors, and those scale with the terms it sums, not with the
result: where R_i = sum_j R_ij cancels, a fixed relative tolerance is wrong. The audit judges
a library's relevance at every layer boundary against a first-order bound of the same form as
the engine's (:func:`lrp_num.verify.rounding_bound`), in the unit roundoff u of the dtype the
attribution was computed in (2^-24 for float32, 2^-53 for float64):

    e_i = sum_j |R_ij| / |R_j| e_j + u (n_j + m + d + 6) sum_j |R_ij| (1 + K_j),

from the output (e = u (d_L + 1) |f_c|) down through every node with a rule, where n_j is
neuron j's fan-in, m the layer's fan-out, K_j = sum_i |R_ij| / |R_j| the cancellation in neuron
j's denominator, |R_ij| the reference's terms (its recorded flows), and d the number of
roundings in the forward pass up to the layer: the relative error of an activation counts as
u d, entering R_ij directly and through the denominator. Max pooling adds u |R_ij| (a routing,
no sum). Relevance arriving at a tensor from several consumers adds their errors and u |R|. The
bound carries a safety factor 2, as the engine's does.

The forward pass's cancellation is not bounded a priori: a worst-case bound carries
|W| |a| + |b| instead of |a| through the network (as the engine's verify does); on a trained
residual network that grows about sixfold per convolution, so the float32 bound would exceed
the relevance itself (measured on digits-resnet) and the audit could not fail. It is *measured*
instead (:func:`measured_forward_errors`): the engine's forward pass of the same network in the
attribution's dtype, standing in for the library's, against the exact activations; each node's
inputs carry their relative errors into its terms (``rounding_bounds(..., forward_errors=)``, used
by the audit and by :func:`lrp_num.testing.assert_matches_reference`). A neuron whose
sign flips under rounding (z_j within rounding of 0) is not modelled either; where that
happens a correct run can exceed the bound, and the report names the layer and the amount.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: unit roundoff of the floating-point types an attribution can come in
UNIT_ROUNDOFF = {np.dtype(np.float16): 2.0 ** -11, np.dtype(np.float32): 2.0 ** -24,
                 np.dtype(np.float64): 2.0 ** -53}
SAFETY = 2.0


def unit_roundoff(dtype: object) -> float:
    """u of ``dtype`` (float16, float32 or float64; anything else counts as float64)."""
    return UNIT_ROUNDOFF.get(np.dtype(dtype), 2.0 ** -53)


def dtype_name(dtype: object) -> str:
    """'float32' or 'float64' (the name the report states)."""
    dtype = np.dtype(dtype)
    return dtype.name if dtype in UNIT_ROUNDOFF else "float64"


def _forward_depths(graph, traces: dict) -> dict[str, float]:
    """Roundings on the longest path to every node's output: a linear node adds its fan-in + 2,
    an Add node its number of addends."""
    from lrp_num.layers import Add

    depth = {graph.input_name: 0.0}
    for index, node in enumerate(graph.nodes):
        before = max(depth[name] for name in node.inputs)
        trace = traces.get(index)
        if trace is not None and trace.flow_index is not None and trace.rule != "maxpool":
            before += trace.flow_index.shape[1] + 2
        elif isinstance(node.operation, Add):
            before += len(node.inputs)
        depth[node.name] = before
    return depth


def _step(trace, error: np.ndarray, n_in: int, unit: float, depth: float,
          delta: np.ndarray | None = None) -> np.ndarray:
    """The error at a node's (stacked) input: the error above through the flows, plus the
    node's own rounding after ``depth`` roundings in the forward pass (see the module docstring);
    ``delta``: measured relative forward errors of the node's inputs, entering R_ij directly and
    through the denominator (K_j max_i delta_i)."""
    out = np.zeros(n_in + 1)
    flow, rows_index, upper = trace.flow, trace.flow_index, trace.flow_upper
    if flow is None or not flow.size:
        return out[:n_in]
    share = np.divide(flow, upper[:, None], out=np.zeros_like(flow), where=upper[:, None] != 0)
    np.add.at(out, rows_index, share * error[trace.flow_rows][:, None])
    if trace.rule == "maxpool":
        np.add.at(out, rows_index, unit * flow)
    else:
        k = np.divide(flow.sum(axis=1), upper, out=np.ones_like(upper), where=upper != 0)
        fan_in = rows_index.shape[1]
        fan_out = np.bincount(rows_index.ravel(), minlength=n_in + 1)[:n_in].max(initial=1)
        np.add.at(out, rows_index, unit * (fan_in + fan_out + depth + 6) * flow * (1 + k)[:, None])
        if delta is not None:
            d = np.append(delta, 0.0)[rows_index]
            np.add.at(out, rows_index, flow * (d + k[:, None] * d.max(axis=1, keepdims=True)))
    return out[:n_in]


def _split(graph, node, error: np.ndarray) -> list[np.ndarray]:
    """A node's input error per input: addends of an Add in blocks, a Concat's inputs sliced
    along its axis, one input as it is."""
    from lrp_num.layers import Concat

    if len(node.inputs) == 1:
        return [error]
    if isinstance(node.operation, Concat):
        shape = graph.shapes[node.name]
        sizes = [graph.shapes[name][node.operation.axis - 1] for name in node.inputs]
        parts = np.split(error.reshape(shape), np.cumsum(sizes)[:-1], axis=node.operation.axis - 1)
        return [part.ravel() for part in parts]
    return np.split(error, len(node.inputs))


def measured_forward_errors(network, results: Sequence, dtype: object) -> list[dict[str, np.ndarray]]:
    """Relative error |a - a_exact| / |a_exact| of every activation of a forward pass in ``dtype``.

    The engine's forward pass of the same network in ``dtype`` (one sample at a time) against the
    reference's exact activations; 0 where the exact activation is 0. It stands in for the forward
    pass of the implementation under test, which rounds the same sums in the same type.
    """
    from lrp_num import reference
    from lrp_num.engine.graph import as_graph

    graph = as_graph(network)
    per_sample = []
    for result in results:
        exact = {name: reference.to_float(np.asarray(value)).ravel() for name, value in result.activations.items()}
        shape = graph.input_shape or np.asarray(result.activations[graph.input_name]).shape
        x = exact[graph.input_name].reshape((1,) + tuple(shape))
        computed = graph.forward_trace(x.astype(np.dtype(dtype)))
        errors = {}
        for name, value in computed.items():
            if name in exact and np.asarray(value).size == exact[name].size:
                a, b = np.asarray(value, dtype=np.float64).ravel(), exact[name]
                errors[name] = np.divide(np.abs(a - b), np.abs(b), out=np.zeros_like(b), where=b != 0)
        per_sample.append(errors)
    return per_sample


def rounding_bounds(network, results: Sequence, dtype: object,
                    forward_errors: Sequence[dict[str, np.ndarray]] | None = None) -> dict[str, np.ndarray]:
    """Bound on |R(computed in ``dtype``) - R(exact)| at every tensor, per sample and entry.

    Parameters
    ----------
    network : Sequential or Graph
        The network the reference ``results`` explain (a Sequential's tensors are named as
        :func:`lrp_num.engine.graph.as_graph` names them: ``input``, ``layer0``, ...).
    results : list of ReferenceResult
        One per sample, from :func:`lrp_num.reference.explain_trace`.
    dtype : dtype
        The type the attribution was computed in.
    forward_errors : list of dict, optional
        Measured relative forward errors per sample and tensor (:func:`measured_forward_errors`):
        where given, a node's inputs carry them into its terms, and the output's into f_c; this
        covers the forward pass's cancellation for that input, which the bound otherwise leaves out.

    Returns
    -------
    dict of str to ndarray
        Tensor name -> array (batch, size of the tensor): the bound (see the module docstring).
    """
    from lrp_num import reference
    from lrp_num.engine.graph import as_graph

    graph = as_graph(network)
    unit = unit_roundoff(dtype)
    consumers: dict[str, int] = {}
    for node in graph.nodes:
        for name in node.inputs:
            consumers[name] = consumers.get(name, 0) + 1
    per_sample = []
    for sample, result in enumerate(results):
        traces = {trace.index: trace for trace in result.traces}
        depth = _forward_depths(graph, traces)
        top = np.abs(reference.to_float(np.asarray(result.top)).ravel())
        output = result.output or graph.output
        measured = forward_errors[sample] if forward_errors is not None else {}
        error = {output: unit * (depth[output] + 1) * top + measured.get(output, 0.0) * top}
        bounds = {}
        for index in reversed(range(len(graph.nodes))):
            node = graph.nodes[index]
            e = error.pop(node.name, None)
            if e is None:
                continue
            bounds[node.name] = e
            trace = traces.get(index)
            n_in = sum(np.asarray(result.activations[name]).size for name in node.inputs)
            if trace is not None and trace.flow is not None:
                delta = None
                if all(name in measured for name in node.inputs):
                    delta = np.concatenate([measured[name] for name in node.inputs])
                    delta = delta if delta.size == n_in else None
                e_in = _step(trace, e, n_in, unit, max(depth[name] for name in node.inputs), delta)
            else:  # ReLU, Flatten, Identity, Dropout, a Concat: relevance passes unchanged
                e_in = e if len(e) == n_in else np.resize(e, n_in)
            for name, part in zip(node.inputs, _split(graph, node, e_in)):
                if consumers.get(name, 0) > 1:  # one more rounding where consumers' relevance adds
                    part = part + unit * np.abs(reference.to_float(np.asarray(result.relevance_at[name])).ravel())
                error[name] = error[name] + part if name in error else part
        bounds[graph.input_name] = error.pop(graph.input_name)
        per_sample.append(bounds)
    return {name: SAFETY * np.stack([sample[name] for sample in per_sample]) for name in per_sample[0]}


__all__ = ["SAFETY", "UNIT_ROUNDOFF", "dtype_name", "measured_forward_errors", "rounding_bounds", "unit_roundoff"]
