"""The reference network: the forward pass, the gradient and the relevance pass over the nodes.

A :class:`ReferenceNetwork` redoes the network in mpmath along a code path that shares nothing
with the engine's kernels:

* every linear node (Dense, Conv2d, sum, average, adaptive and global average pooling,
  ChannelAffine) is an explicit matrix of :mod:`lrp_num.reference.linear`, built from the
  layer's weights and window geometry, batch norms folded there in mpmath from the BatchNorm
  parameters (or kept as a diagonal matrix where the engine made them a ChannelAffine), never
  taken from the engine's folded weights;
* graph models (:class:`lrp_num.engine.graph.Graph`; a Sequential is the chain of its layers)
  are walked node by node in reverse topological order, relevance arriving at a tensor from
  several consumers is summed, and Concat slices it back onto its inputs;
* each node's relevance follows its rule's definition (:mod:`lrp_num.reference.node_rules`;
  element-wise nonlinearities and LayerNorm / RMSNorm by :mod:`lrp_num.reference.transformer_nodes`,
  their values by their definitions: GELU with mpmath.erf, the norms' mean and variance in mpmath);
  ReLU, Flatten, Identity and Dropout pass relevance through.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np

from lrp_num.checks import check_orthant
from lrp_num.errors import GraphError, MissingBoundsError, ShapeError, UnsupportedLayerError
from lrp_num.layers import (Add, BatchNorm, ChannelAffine, Concat, Conv2d, Dense, Dropout, Flatten,
                            Identity, MaxPool2d, ReLU, Reshape, Softmax)
from lrp_num.layers.nonlinear import NONLINEAR
from lrp_num.layers.normalization import NORMALIZATION
from lrp_num.reference import attention, transformer_nodes
from lrp_num.reference.directions import ROOT_POINT_RULES
from lrp_num.reference.linear import (LINEAR_LAYERS, LinearMatrix, batchnorm_matrix, fold_batchnorms,
                                      linear_matrix, pool_windows)
from lrp_num.reference.linear import row_dot, row_sum
from lrp_num.reference.linear import to_mpf as _to_mpf
from lrp_num.reference.node_rules import (LayerTrace, add_node, formula_layer, magnitude_bias_split, maxpool_layer,
                                         root_point_layer)
from lrp_num.reference.roots import GUARD_DIGITS

#: operations that pass values and relevance on unchanged (Flatten reshapes; every tensor of the
#: reference is flattened in C order, so it is the identity here too)
_PASS_THROUGH = (ReLU, Identity, Dropout, Flatten, Reshape)
#: operations a z^B node may follow: they do not change values, so the input box still bounds them
_SHAPE_ONLY = (Identity, Dropout, Flatten, Reshape)


@dataclass(frozen=True)
class ReferenceNode:
    """One node as the reference walks it.

    ``operation`` is the engine's resolved operation (its repr names the node in traces),
    ``source`` the operation as given (the unfolded Dense/Conv2d, or the BatchNorm that the
    engine made a ChannelAffine), ``batchnorms`` the batch norms folded into a linear node, in order.
    """

    index: int
    name: str
    operation: object
    inputs: tuple[str, ...]
    source: object
    batchnorms: tuple = ()


def _reference_nodes(network) -> tuple[list[ReferenceNode], str, str]:
    """(nodes in topological order, input name, output name) of a Graph or a Sequential.

    A Graph gives its resolved nodes (its order, names and which batch norm it folded where)
    and the operations as given (``source_nodes``); a Sequential is the chain of its source
    layers, each BatchNorm attached to the linear layer before it.
    """
    from lrp_num.engine.graph import Graph  # the structure only; the reference computes every value itself
    from lrp_num.engine.network import Sequential

    if isinstance(network, Graph):
        source = {node.name: node.operation for node in network.source_nodes}
        folds = folds_by_definition(network.source_nodes, network.input_name, network.source_output)
        if folds != dict(network.folded):
            raise GraphError(f"the engine folds batch norms as {dict(network.folded)}, their definition "
                             f"as {folds}: a BatchNorm folds into the Dense or Conv2d node it reads when "
                             "nothing else reads that node and it is not the output")
        nodes = [ReferenceNode(index, node.name, node.operation, tuple(node.inputs), source[node.name],
                               tuple(source[bn] for bn, linear in folds.items() if linear == node.name))
                 for index, node in enumerate(network.nodes)]
        return nodes, network.input_name, folds.get(network.source_output, network.source_output)
    if isinstance(network, Sequential):
        groups: list[list] = []
        for layer in network.source_layers:
            if isinstance(layer, BatchNorm) and groups:
                groups[-1].append(layer)
            else:
                groups.append([layer])
        if len(groups) != len(network.layers):  # pragma: no cover - Sequential folds the same way
            raise UnsupportedLayerError("the reference cannot match the network's batch norms to its layers")
        nodes = [ReferenceNode(k, f"layer{k}", network.layers[k], ("input" if k == 0 else f"layer{k - 1}",),
                               group[0], tuple(group[1:])) for k, group in enumerate(groups)]
        return nodes, "input", nodes[-1].name
    raise UnsupportedLayerError(f"the reference follows Graph and Sequential networks, got {type(network).__name__}")


def folds_by_definition(source_nodes, input_name: str, output: str) -> dict[str, str]:
    """BatchNorm node -> the Dense or Conv2d node it folds into, decided from the nodes as given.

    A BatchNorm folds when the node it reads is a Dense or Conv2d node (or a BatchNorm already
    folded into one) that nothing else reads and that is not the output; any other BatchNorm
    stays a per-channel affine node. In topological order, so a chain of batch norms folds in turn.
    """
    by_name = {node.name: node for node in source_nodes}
    readers: dict[str, list[str]] = {}
    for node in source_nodes:
        for name in node.inputs:
            readers.setdefault(name, []).append(node.name)
    order, seen = [], set()

    def visit(name: str) -> None:  # depth first: a node after everything it reads
        if name == input_name or name in seen or name not in by_name:
            return
        seen.add(name)
        for before in by_name[name].inputs:
            visit(before)
        order.append(by_name[name])

    for node in source_nodes:
        visit(node.name)
    folds: dict[str, str] = {}
    for node in order:
        if not isinstance(node.operation, BatchNorm):
            continue
        read = node.inputs[0]
        linear = folds.get(read, read)
        if read != output and readers.get(read) == [node.name] and linear in by_name \
                and isinstance(by_name[linear].operation, (Dense, Conv2d)):
            folds[node.name] = linear
    return folds


def _concat_axis(operation: Concat, ndim: int) -> int:
    """The concatenation axis within one sample (the operation's axis counts the batch as 0)."""
    axis = operation.axis - 1 if operation.axis > 0 else ndim + operation.axis
    if not 0 <= axis < ndim:
        raise ShapeError(f"{operation!r} does not fit inputs of rank {ndim} per sample")
    return axis


class ReferenceNetwork:
    """A :class:`~lrp_num.engine.graph.Graph` or :class:`~lrp_num.engine.network.Sequential` prepared for
    high-precision evaluation.

    Holds every linear node as a :class:`LinearMatrix` (built once per network, input shape and
    precision; batch norms folded in mpmath) and every max-pool node's windows, and runs the
    forward pass, the gradient and the relevance backward pass in mpmath over the nodes: values
    are dicts from node name (and the input's name) to flattened object arrays of mpf.
    """

    def __init__(self, network, input_shape: tuple[int, ...]) -> None:
        self.network = network
        self.nodes, self.input_name, self.output = _reference_nodes(network)
        self.layers = [node.operation for node in self.nodes]
        self.input_shape = tuple(input_shape)
        self.shapes: dict[str, tuple[int, ...]] = {self.input_name: self.input_shape}
        self.matrices: dict[int, LinearMatrix] = {}
        self.windows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.concat_axes: dict[int, int] = {}
        self.consumers: dict[str, int] = {self.input_name: 0}
        for node in self.nodes:
            for name in node.inputs:
                if name not in self.shapes:
                    raise ShapeError(f"node {node.name!r} reads {name!r} before it is computed")
                self.consumers[name] += 1
            try:
                out = self._prepare_node(node, [self.shapes[name] for name in node.inputs])
            except ShapeError as error:
                raise ShapeError(f"node {node.name!r} ({node.operation!r}): {error}") from None
            self.shapes[node.name] = tuple(int(d) for d in out)
            self.consumers[node.name] = 0

    def _prepare_node(self, node: ReferenceNode, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        operation, shape = node.operation, shapes[0]
        if isinstance(operation, LINEAR_LAYERS):
            if isinstance(operation, ChannelAffine) and isinstance(node.source, BatchNorm):
                matrix, out = batchnorm_matrix(node.source, shape), shape
            else:
                matrix, out = linear_matrix(node.source, shape)
                if node.batchnorms:
                    matrix = fold_batchnorms(matrix, node.batchnorms)
            self.matrices[node.index] = matrix
            return out
        if isinstance(operation, attention.OPERATIONS):
            return attention.output_shape(operation, shapes)
        if isinstance(operation, MaxPool2d):
            index, connected, _, out = pool_windows(operation, shape)
            self.windows[node.index] = (index, connected)
            return out
        if isinstance(operation, NONLINEAR):
            return shape
        if isinstance(operation, NORMALIZATION):
            if not shape or shape[-1] != operation.weight.shape[0]:
                raise ShapeError(f"{operation!r} normalises a last axis of "
                                 f"{operation.weight.shape[0]} features, got {shape}")
            return shape
        if isinstance(operation, Flatten):
            return (int(np.prod(shape)),)
        if isinstance(operation, Reshape):
            return operation.output_shape(shape)
        if isinstance(operation, _PASS_THROUGH):
            return shape
        if isinstance(operation, Add):
            if len(shapes) < 2 or len(set(shapes)) != 1:
                raise ShapeError(f"Add needs two or more addends of one shape, got {shapes}")
            return shape
        if isinstance(operation, Concat):
            axis = _concat_axis(operation, len(shape))
            rest = {s[:axis] + s[axis + 1:] for s in shapes}
            if len({len(s) for s in shapes}) != 1 or len(rest) != 1:
                raise ShapeError(f"Concat needs inputs that agree off axis {axis}, got {shapes}")
            self.concat_axes[node.index] = axis
            return shape[:axis] + (sum(s[axis] for s in shapes),) + shape[axis + 1:]
        raise UnsupportedLayerError(f"node {node.name!r}: the reference does not know {operation!r}")

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[self.output]

    def input_shapes(self, node: ReferenceNode) -> list[tuple[int, ...]]:
        return [self.shapes[name] for name in node.inputs]

    def concatenate(self, node: ReferenceNode, parts: list[np.ndarray]) -> np.ndarray:
        """The flattened Concat of flattened ``parts`` (float or mpf arrays)."""
        axis = self.concat_axes[node.index]
        shaped = [np.asarray(p).reshape(s) for p, s in zip(parts, self.input_shapes(node))]
        return np.concatenate(shaped, axis=axis).ravel()

    def split(self, node: ReferenceNode, values: np.ndarray) -> list[np.ndarray]:
        """Slice a Concat node's flattened output values back onto its inputs (routing)."""
        axis = self.concat_axes[node.index]
        edges = np.cumsum([s[axis] for s in self.input_shapes(node)])[:-1]
        return [part.ravel() for part in np.split(np.asarray(values).reshape(self.shapes[node.name]), edges, axis=axis)]

    # forward and gradient

    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every node's output (and the input) for one sample, flattened, as object arrays of mpf.

        ``x`` is a float array (converted exactly) or an object array of mpf (taken as it is).
        """
        x = np.asarray(x)
        values = {self.input_name: x.ravel() if x.dtype == object else _to_mpf(x.astype(np.float64).ravel())}
        zero = mpmath.mpf(0)
        for node in self.nodes:
            inputs = [values[name] for name in node.inputs]
            a, operation = inputs[0], node.operation
            if node.index in self.matrices:
                matrix = self.matrices[node.index]
                out = row_dot(np.append(a, zero)[matrix.index], matrix.weight_mp, matrix.bias_mp)  # exact, rounded once
            elif node.index in self.windows:
                rows, connected = self.windows[node.index]
                out = np.array([max(a[window[inside]]) for window, inside in zip(rows, connected)], dtype=object)
            elif isinstance(operation, ReLU):
                out = np.array([value if value > 0 else zero for value in a], dtype=object)
            elif isinstance(operation, Add):
                out = row_sum(np.stack(inputs, axis=1))  # exact, rounded once
            elif isinstance(operation, Concat):
                out = self.concatenate(node, inputs)
            elif isinstance(operation, NONLINEAR):
                g = transformer_nodes.ACTIVATIONS[operation.activation]
                out = np.array([g(value) for value in a], dtype=object)
            elif isinstance(operation, NORMALIZATION):
                out = self._norm_rows(operation, a, lambda row, w, b, e: transformer_nodes.norm_values(
                    operation.norm, row, w, b, e))
            elif isinstance(operation, attention.OPERATIONS):
                out = attention.forward(operation, inputs, self.input_shapes(node))
            else:
                out = a
            values[node.name] = out
        return values

    def gradient(self, activations: dict[str, np.ndarray], output_gradient: np.ndarray) -> np.ndarray:
        """Backpropagate ``output_gradient`` (flattened): d(sum_c g_c f_c)/dx at the activations.

        ReLU derivative 1[z > 0]; max pooling routes the gradient to the winners split equally
        (the subgradient that matches winner-take-all relevance); a tensor read by several nodes
        gets the sum of their gradients.
        """
        arriving = {self.output: np.array(output_gradient, dtype=object)}
        for node in reversed(self.nodes):
            g = arriving.pop(node.name)
            a = activations[node.inputs[0]]
            if node.index in self.matrices:
                matrix = self.matrices[node.index]
                upstream = np.zeros(matrix.n_in + 1, dtype=object)
                upstream[:] = mpmath.mpf(0)
                np.add.at(upstream, matrix.index, matrix.weight_mp * g[:, None])
                lower = [upstream[: matrix.n_in]]
            elif node.index in self.windows:
                lower = [maxpool_layer(*self.windows[node.index], a, g, len(a))]
            elif isinstance(node.operation, ReLU):
                lower = [np.array([gv if av > 0 else mpmath.mpf(0) for gv, av in zip(g, a)], dtype=object)]
            elif isinstance(node.operation, Add):
                lower = [g] * len(node.inputs)
            elif isinstance(node.operation, Concat):
                lower = self.split(node, g)
            elif isinstance(node.operation, NONLINEAR):
                function = transformer_nodes.ACTIVATIONS[node.operation.activation]
                lower = [np.array([gv * mpmath.diff(function, av) for gv, av in zip(g, a)], dtype=object)]
            elif isinstance(node.operation, NORMALIZATION):
                lower = [self._norm_gradient(node.operation, a, g)]
            elif isinstance(node.operation, attention.OPERATIONS):
                lower = attention.gradient(node.operation, [activations[name] for name in node.inputs],
                                           self.input_shapes(node), g)
            else:
                lower = [g]
            _accumulate(arriving, node.inputs, lower)
        return arriving[self.input_name]

    # normalisation over the last axis, row by row

    @staticmethod
    def _parameters(operation) -> tuple[list, list, Any]:
        return ([mpmath.mpf(float(v)) for v in operation.weight],
                [mpmath.mpf(float(v)) for v in operation.bias], mpmath.mpf(operation.eps))

    def _norm_rows(self, operation, a: np.ndarray, row_function) -> np.ndarray:
        weight, bias, eps = self._parameters(operation)
        features = operation.weight.shape[0]
        out = np.empty(len(a), dtype=object)
        for start in range(0, len(a), features):
            out[start:start + features] = row_function(list(a[start:start + features]), weight,
                                                       bias, eps)
        return out

    def _norm_gradient(self, operation, a: np.ndarray, g: np.ndarray) -> np.ndarray:
        weight, bias, eps = self._parameters(operation)
        features = operation.weight.shape[0]
        out = np.empty(len(a), dtype=object)
        for start in range(0, len(a), features):
            row = list(a[start:start + features])
            jacobian = transformer_nodes.row_jacobian(
                lambda u: transformer_nodes.norm_values(operation.norm, u, weight, bias, eps), row)
            upper = g[start:start + features]
            out[start:start + features] = [mpmath.fsum(upper[j] * jacobian[j][i] for j in range(features))
                                           for i in range(features)]
        return out

    def _pointwise_step(self, operation, rule: str, a: np.ndarray, relevance: np.ndarray,
                        trace: LayerTrace) -> np.ndarray:
        """The element-wise rule (one input per neuron); its flows for the rounding bound."""
        lower = np.array(transformer_nodes.pointwise_values(rule, operation.activation, a, relevance),
                         dtype=object)
        # what the Taylor rule drops, by the derivation: c (g(x~) + r(x)) per neuron
        trace.absorbed_stabiliser += mpmath.fsum(transformer_nodes.pointwise_absorbed(
            rule, operation.activation, a, relevance))
        rows = np.flatnonzero(np.array([r != 0 for r in relevance], dtype=bool))
        trace.record_flow(rows, rows[:, None], lower[rows][:, None], relevance[rows])
        return lower

    def _norm_step(self, operation, rule: str, a: np.ndarray, relevance: np.ndarray,
                   trace: LayerTrace, stabiliser: float = 0.0) -> np.ndarray:
        """The normalisation rule row by row; R_ij of every neuron j for the rounding bound;
        ``stabiliser``: the reference-only parameter of :func:`transformer_nodes.norm_row`."""
        weight, bias, eps = self._parameters(operation)
        stabiliser = mpmath.mpf(stabiliser)
        features = operation.weight.shape[0]
        lower = np.empty(len(a), dtype=object)
        flows, index = [], []
        for start in range(0, len(a), features):
            block = np.arange(start, start + features)
            values, row_flows = transformer_nodes.norm_row(rule, operation.norm, list(a[block]), weight,
                                                           bias, eps, list(relevance[block]), stabiliser)
            bias_share, rest = transformer_nodes.norm_absorbed(rule, operation.norm, list(a[block]), weight,
                                                               bias, eps, list(relevance[block]), stabiliser)
            trace.absorbed_bias += bias_share
            trace.absorbed_stabiliser += rest
            lower[block] = values
            flows += row_flows
            index += [block] * features
        rows = np.arange(len(a))
        trace.record_flow(rows, np.array(index), np.array(flows, dtype=object), relevance)
        return lower

    # relevance

    def _box_allowed(self, node: ReferenceNode) -> bool:
        """z^B may use the input box at a Dense/Conv2d node before which only reshaping happens."""
        by_name = {n.name: n for n in self.nodes}
        stack, seen = list(node.inputs), set()
        while stack:
            name = stack.pop()
            if name == self.input_name or name in seen:
                continue
            seen.add(name)
            if not isinstance(by_name[name].operation, _SHAPE_ONLY):
                return False
            stack.extend(by_name[name].inputs)
        return isinstance(node.operation, (Dense, Conv2d))

    def backward(self, activations, relevance_top, plan, conventions, bounds, solver="newton",
                 diagnostics=True, check_domain=True):
        """Relevance of the input given the output relevance: (relevance, traces, relevance_at).

        Walks the nodes in reverse topological order; relevance arriving at a tensor from
        several nodes is summed. ``relevance_at`` maps every node (and the input) to the
        relevance arriving at its output. ``check_domain``: raise DomainError where a rule
        derived for the orthant meets a negative input (False evaluates the definition there
        all the same).
        """
        arriving = {self.output: relevance_top}
        relevance_at: dict[str, np.ndarray] = {}
        traces: list[LayerTrace] = []
        for node in reversed(self.nodes):
            index, layer = node.index, node.operation
            relevance = arriving.pop(node.name)
            relevance_at[node.name] = relevance
            inputs = [activations[name] for name in node.inputs]
            a = inputs[0]
            trace = None
            if index in self.matrices:
                rule, parameters = plan[index]
                trace = LayerTrace(index, repr(layer), rule, relevance_out=relevance, name=node.name)
                x_ext = np.append(a, mpmath.mpf(0))
                layer_conventions = _own_stabiliser(conventions, rule)
                if conventions["bias"] == "magnitude" and isinstance(layer, (Dense, Conv2d)):
                    # the bias keeps its share, then the rule sees the layer without it
                    relevance = magnitude_bias_split(self.matrices[index], x_ext, relevance, conventions["eps"])
                    layer_conventions = {**conventions, "bias": "dtd"}
                if rule in ROOT_POINT_RULES:
                    layer_bounds = None
                    if check_domain and ROOT_POINT_RULES[rule] == "orthant":
                        check_orthant(a, index, layer, rule)
                    if rule == "zbox":
                        if not self._box_allowed(node):
                            raise MissingBoundsError(
                                f"layer {index} ({node.name!r}): rule 'zbox' needs box bounds, which only the "
                                "network input has; use it on a first linear layer with only reshaping before it")
                        layer_bounds = _layer_bounds(bounds, self.matrices[index].n_in, index)
                    lower = [root_point_layer(rule, self.matrices[index], x_ext, relevance, parameters,
                                              layer_conventions, layer_bounds, trace, solver, diagnostics)]
                else:
                    lower = [formula_layer(rule, self.matrices[index], x_ext, relevance, parameters,
                                           layer_conventions, trace)]
            elif isinstance(layer, Add):
                rule, parameters = plan[index]
                trace = LayerTrace(index, repr(layer), rule, relevance_out=relevance, name=node.name)
                lower = add_node(rule, inputs, relevance, parameters, _own_stabiliser(conventions, rule), trace,
                                 solver)
            elif index in self.windows:
                trace = LayerTrace(index, repr(layer), "maxpool", relevance_out=relevance, name=node.name)
                lower = [maxpool_layer(*self.windows[index], a, relevance, len(a), trace,
                                       conventions.get("maxpool_ties", "split"))]
            elif isinstance(layer, Concat):
                lower = self.split(node, relevance)
            elif isinstance(layer, NONLINEAR + NORMALIZATION):
                rule, parameters = plan[index]
                trace = LayerTrace(index, repr(layer), rule, relevance_out=relevance, name=node.name)
                if isinstance(layer, NONLINEAR):
                    lower = [self._pointwise_step(layer, rule, a, relevance, trace)]
                else:
                    lower = [self._norm_step(layer, rule, a, relevance, trace,
                                             parameters.get("stabiliser", 0.0))]
            elif isinstance(layer, attention.OPERATIONS) and index in plan:
                rule, parameters = plan[index]
                trace = LayerTrace(index, repr(layer), rule, relevance_out=relevance, name=node.name)
                producers = {other.name: other.operation for other in self.nodes}
                softmax_inputs = tuple(k for k, name in enumerate(node.inputs)
                                       if isinstance(producers.get(name), Softmax))
                lower = attention.relevance(layer, rule, parameters, inputs, self.input_shapes(node),
                                            relevance, trace, softmax_inputs)
            elif isinstance(layer, attention.OPERATIONS):  # head split / merge: moved back by index
                lower = attention.gradient(layer, inputs, self.input_shapes(node), relevance)
            else:
                lower = [relevance]
            if trace is not None:
                trace.relevance_inputs = lower
                trace.relevance_in = lower[0] if len(lower) == 1 else np.concatenate(lower)
                traces.append(trace)
            _accumulate(arriving, node.inputs, lower)
        relevance = arriving.pop(self.input_name)
        relevance_at[self.input_name] = relevance
        return relevance, traces[::-1], relevance_at


def _own_stabiliser(conventions: dict, rule: str) -> dict:
    """The conventions at a node of ``rule``: under ``epsilon_stabilises`` a rule defined with its
    own stabiliser epsilon (LRP-epsilon, Bach et al. 2015; its sum-neuron form) gets no further one."""
    if conventions.get("epsilon_stabilises") and rule in ("epsilon", "add_epsilon"):
        return {**conventions, "eps": 0}
    return conventions


def _accumulate(arriving: dict, names: tuple[str, ...], values: list[np.ndarray]) -> None:
    """Add each value to what has arrived at its tensor so far (several consumers sum)."""
    for name, value in zip(names, values):
        arriving[name] = arriving[name] + value if name in arriving else value


def _layer_bounds(bounds, n_in, index):
    if bounds is None:
        raise MissingBoundsError(f"layer {index}: rule 'zbox' needs the box bounds: pass lower= and upper=")
    lower, upper = bounds
    if len(lower) != n_in:
        raise ShapeError(f"layer {index}: the box bounds have {len(lower)} entries, the layer input {n_in}")
    ext = lambda values: np.append(values, mpmath.mpf(0))  # noqa: E731
    return ext(lower), ext(upper)


_PREPARED: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def prepare(network, input_shape: tuple[int, ...], dps: int = 50) -> ReferenceNetwork:
    """The :class:`ReferenceNetwork` of ``network`` for ``input_shape``, its batch norms folded
    at ``dps`` + guard digits; cached per network, input shape and precision."""
    cache = _PREPARED.setdefault(network, {})
    key = (tuple(input_shape), int(dps))
    if key not in cache:
        with mpmath.workdps(int(dps) + GUARD_DIGITS):
            cache[key] = ReferenceNetwork(network, key[0])
    return cache[key]


__all__ = ["ReferenceNetwork", "ReferenceNode", "prepare"]
