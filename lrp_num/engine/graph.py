"""Graph models: a directed acyclic graph of named nodes, of which a chain is the special case.

A :class:`Graph` holds nodes ``Node(name, operation, inputs)``: ``operation`` is a layer of
:mod:`lrp_num.layers` (or :class:`~lrp_num.layers.branching.Add` / :class:`~lrp_num.layers.branching.Concat`
with several inputs), ``inputs`` names the nodes it reads, or ``"input"`` for the graph's one
input tensor. One node is the output. The graph is checked when built (a cycle, an input that
no node produces, a duplicate name, a node that does not lead to the output, mismatched shapes
at an Add or a Concat are :class:`~lrp_num.errors.GraphError` naming the node; an operation
the engine does not know is :class:`~lrp_num.errors.UnsupportedLayerError`), ordered
topologically, and its batch norms resolved: a BatchNorm is folded into the Dense or Conv2d
node it reads when that node has no other consumer, and becomes a per-channel
:class:`~lrp_num.layers.affine.ChannelAffine` node otherwise.

A :class:`~lrp_num.engine.network.Sequential` is the chain ``layer0 -> layer1 -> ...``
(:func:`as_graph`), which is how :func:`lrp_num.explain` walks both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from lrp_num.checks import as_float_array, require_finite
from lrp_num.errors import GraphError, LRPError, ShapeError, UnsupportedLayerError
from lrp_num.layers import (OPERATION_TYPES, AdaptiveAvgPool2d, Add, AvgPool2d, BatchNorm,
                            ChannelAffine, Concat, Conv2d, Dense, Dropout, Flatten, Identity,
                            MatMul, MaxPool2d, Multiply, Reshape, SumPool2d)
from lrp_num.engine.network import Sequential

#: the default name of the graph's input tensor
INPUT = "input"
#: operations that only pass values on or reshape them: the input box still bounds their output
SHAPE_ONLY = (Flatten, Reshape, Identity, Dropout)
#: the linear layers whose rule a composite chooses
LINEAR = (Dense, Conv2d)
#: operations with remembered window geometry, which two nodes must not share
_STATEFUL = (Conv2d, SumPool2d, AvgPool2d, MaxPool2d, AdaptiveAvgPool2d)


@dataclass(frozen=True)
class Node:
    """One node of a :class:`Graph`.

    Parameters
    ----------
    name : str
        Unique within the graph, not the graph input's name.
    operation : layer
        A layer or operation of :data:`lrp_num.layers.OPERATION_TYPES`.
    inputs : str or sequence of str
        The nodes (or the graph input) it reads, in order; one for a layer, two or more for Add.
    """

    name: str
    operation: object
    inputs: tuple[str, ...]

    def __post_init__(self) -> None:
        try:
            inputs = (self.inputs,) if isinstance(self.inputs, str) else tuple(self.inputs)
        except TypeError:
            inputs = (self.inputs,)  # not a sequence: _as_node reports it
        object.__setattr__(self, "inputs", inputs)


def _as_node(item: object, position: int) -> Node:
    if isinstance(item, Node):
        node = item
    elif isinstance(item, (tuple, list)) and len(item) == 3:
        node = Node(*item)
    else:
        raise GraphError(f"graph entry {position} must be a Node or (name, operation, inputs), got {type(item).__name__}")
    if not isinstance(node.name, str) or not node.name:
        raise GraphError(f"graph entry {position}: a node name must be a non-empty string, got {node.name!r}")
    if not all(isinstance(name, str) for name in node.inputs):
        raise GraphError(f"node {node.name!r}: inputs must be node names, got {node.inputs!r}")
    return node


class Graph:
    """A directed acyclic graph of named nodes with one input tensor and one output node.

    Parameters
    ----------
    nodes : iterable of Node or (name, operation, inputs)
        In any order; they are sorted topologically (ties keep the given order).
    input_shape : tuple of int, optional
        Per-sample input shape; when given, every node's shape is inferred and checked.
    output : str, optional
        The output node (default: the one node that no node reads).
    input_name : str
        The name nodes use for the graph input (default ``"input"``).

    Attributes
    ----------
    nodes : list of Node
        The resolved nodes (no BatchNorm), topologically sorted: what relevance propagation
        walks backwards. ``layers`` lists their operations.
    source_nodes : list of Node
        The nodes as given (what a model file stores).
    shapes : dict of str to tuple, or None
        Per-sample shape of every node's output and of the input.
    folded : dict of str to str
        BatchNorm node -> the linear node it was folded into.
    output, source_output : str
        The output node after folding (a folded BatchNorm's linear node) and as given.
    """

    def __init__(self, nodes: Iterable[Node | tuple], input_shape: tuple[int, ...] | None = None,
                 output: str | None = None, input_name: str = INPUT) -> None:
        self.source_nodes = [_as_node(item, k) for k, item in enumerate(nodes)]
        if not self.source_nodes:
            raise GraphError("a graph needs at least one node")
        if not isinstance(input_name, str) or not input_name:
            raise GraphError(f"the graph input name must be a non-empty string, got {input_name!r}")
        self.input_name = input_name
        _check_nodes(self.source_nodes, input_name)
        ordered = _topological_order(self.source_nodes, input_name)
        self.output = _sink(self.source_nodes) if output is None else output
        if not isinstance(self.output, str) or self.output not in {node.name for node in ordered}:
            raise GraphError(f"the output {self.output!r} is not a node of the graph")
        self.source_output = self.output
        self.nodes, self.folded, self.output = _resolve_batch_norms(ordered, self.output)
        self._index = {node.name: k for k, node in enumerate(self.nodes)}
        self.consumers: dict[str, list[str]] = {name: [] for name in [input_name, *self._index]}
        for node in self.nodes:
            for name in node.inputs:
                self.consumers[name].append(node.name)
        self._first_linear: frozenset[int] | None = None
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.shapes = self._infer_shapes() if self.input_shape is not None else None

    # structure

    def _infer_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {self.input_name: self.input_shape}
        for node in self.nodes:
            try:
                shapes[node.name] = tuple(node.operation.output_shape(*(shapes[i] for i in node.inputs)))
            except ShapeError as error:
                raise GraphError(f"node {node.name!r} ({node.operation!r}): {error}") from None
        return shapes

    @property
    def layers(self) -> list:
        """The operations of :attr:`nodes`, in order (``layers[k]`` is node k's)."""
        return [node.operation for node in self.nodes]

    def index(self, name: str) -> int:
        """Position of node ``name`` in :attr:`nodes`."""
        try:
            return self._index[name]
        except KeyError:
            raise GraphError(f"the graph has no node {name!r}") from None

    def node(self, name: str) -> Node:
        return self.nodes[self.index(name)]

    def ancestors(self, name: str) -> list[str]:
        """Every node that ``name`` reads, directly or not, in topological order (no input)."""
        seen: set[str] = set()
        stack = list(self.node(name).inputs)
        while stack:
            current = stack.pop()
            if current != self.input_name and current not in seen:
                seen.add(current)
                stack.extend(self.node(current).inputs)
        return sorted(seen, key=self._index.__getitem__)

    def first_linear(self) -> frozenset[int]:
        """Indices of the Dense and Conv2d nodes with no Dense or Conv2d node before them: the
        "first linear layers" of composites (only one in a chain)."""
        if self._first_linear is None:
            self._first_linear = frozenset(
                k for k, node in enumerate(self.nodes) if isinstance(node.operation, LINEAR)
                and not any(isinstance(self.node(a).operation, LINEAR) for a in self.ancestors(node.name)))
        return self._first_linear

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        return None if self.shapes is None else self.shapes[self.output]

    @property
    def n_outputs(self) -> int:
        """Number of outputs per sample (classes)."""
        if self.shapes is not None:
            return math.prod(self.shapes[self.output])
        operation = self.node(self.output).operation
        if isinstance(operation, Dense):
            return operation.n_out
        raise ShapeError("n_outputs needs input_shape for a graph whose output is not a Dense node")

    @property
    def n_parameters(self) -> int:
        return sum(node.operation.n_parameters for node in self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __repr__(self) -> str:
        shape = "unknown" if self.input_shape is None else self.input_shape
        folded = f", {len(self.folded)} BatchNorm folded" if self.folded else ""
        lines = [f"Graph(input_shape={shape}, {len(self.nodes)} nodes, {self.n_parameters} parameters{folded})"]
        for k, node in enumerate(self.nodes):
            out = "" if self.shapes is None else f"  -> {self.shapes[node.name]}"
            lines.append(f"  ({k}) {node.name} = {node.operation!r}({', '.join(node.inputs)}){out}")
        return "\n".join(lines)

    # evaluation

    def _checked_input(self, x: object) -> np.ndarray:
        x = as_float_array(x, "network input")
        if x.ndim < 2:
            raise ShapeError(f"network input must be a batch (N, ...), got shape {x.shape}")
        if self.input_shape is not None and x.shape[1:] != self.input_shape:
            raise ShapeError(
                f"network input must have shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        return require_finite(x, "network input")

    def forward_trace(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every node's output, and the input under :attr:`input_name`, for a batch ``x``."""
        values = {self.input_name: self._checked_input(x)}
        # an overflow (float32 near 3e38) is reported once, below, as NonFiniteError; numpy's
        # RuntimeWarnings about it would only be noise before that line
        with np.errstate(over="ignore", invalid="ignore"):
            for node in self.nodes:
                try:
                    # the input was checked for NaN and Inf once; operations check only shapes
                    values[node.name] = node.operation(*(values[i] for i in node.inputs),
                                                       check_finite=False)
                except ShapeError as error:
                    raise ShapeError(f"node {node.name!r}: {error}") from None
        require_finite(values[self.output], "network output (overflow inside the network)")
        return values

    def forward(self, x: np.ndarray) -> np.ndarray:
        """f(x) for a batch x; float32 in gives float32 out."""
        return self.forward_trace(x)[self.output]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    @classmethod
    def chain(cls, layers: Sequence, input_shape: tuple[int, ...] | None = None) -> "Graph":
        """The chain input -> layer0 -> layer1 -> ... (nodes named ``layer{k}``)."""
        names = [f"layer{k}" for k in range(len(layers))]
        return cls([Node(name, layer, (INPUT if k == 0 else names[k - 1],))
                    for k, (name, layer) in enumerate(zip(names, layers))], input_shape=input_shape)


def as_graph(network: Graph | Sequential) -> Graph:
    """``network`` as a :class:`Graph`: a Sequential becomes the chain of its folded layers
    (node k is ``layers[k]``, named ``layer{k}``), cached while its layers stay the same."""
    if isinstance(network, Graph):
        return network
    if isinstance(network, Sequential):
        key = tuple(map(id, network.layers)), network.input_shape
        cached = getattr(network, "_graph", None)
        if cached is None or cached[0] != key:
            cached = (key, Graph.chain(network.layers, network.input_shape))
            network._graph = cached
        return cached[1]
    raise UnsupportedLayerError(f"expected a Graph or a Sequential network, got {type(network).__name__}")


# -- checks, order and batch norms ----------------------------------------------------------------

def _arity(operation: object) -> tuple[int, int | None]:
    if isinstance(operation, Add):
        return 2, None
    if isinstance(operation, Concat):
        return 1, None
    if isinstance(operation, (Multiply, MatMul)):
        return 2, 2
    return 1, 1


def _sink(nodes: list[Node]) -> str:
    """The one node that no other node reads: the default output."""
    read = {name for node in nodes for name in node.inputs}
    sinks = [node.name for node in nodes if node.name not in read]
    if len(sinks) != 1:
        raise GraphError(f"the graph has {len(sinks)} nodes that no node reads "
                         f"({', '.join(map(repr, sinks)) or 'a cycle'}); name the output with output=")
    return sinks[0]


def _check_nodes(nodes: list[Node], input_name: str) -> None:
    names: dict[str, Node] = {}
    shared: dict[int, str] = {}
    for node in nodes:
        if node.name in names or node.name == input_name:
            what = "the graph input" if node.name == input_name else "another node"
            raise GraphError(f"node {node.name!r}: duplicate name (also {what})")
        names[node.name] = node
        if type(node.operation) not in OPERATION_TYPES.values():
            raise UnsupportedLayerError(f"node {node.name!r} is a {type(node.operation).__name__}; "
                                        f"supported: {', '.join(OPERATION_TYPES)}")
        low, high = _arity(node.operation)
        if len(node.inputs) < low or (high is not None and len(node.inputs) > high):
            wanted = f"{low}" if low == high else f"at least {low}"
            raise GraphError(f"node {node.name!r} ({node.operation!r}) takes {wanted} input(s), "
                             f"got {len(node.inputs)}")
        if isinstance(node.operation, _STATEFUL):
            other = shared.setdefault(id(node.operation), node.name)
            if other != node.name:
                raise GraphError(f"node {node.name!r} reuses the {type(node.operation).__name__} object of "
                                 f"node {other!r}; give each node its own layer object")
    for node in nodes:
        for name in node.inputs:
            if name != input_name and name not in names:
                raise GraphError(f"node {node.name!r} reads {name!r}, which no node produces "
                                 f"(the graph input is {input_name!r})")


def _topological_order(nodes: list[Node], input_name: str) -> list[Node]:
    """Kahn's algorithm, ties in the given order; a cycle or a dead node is a GraphError."""
    pending = {node.name: {i for i in node.inputs if i != input_name} for node in nodes}
    order: list[Node] = []
    done: set[str] = set()
    remaining = list(nodes)
    while remaining:
        ready = [node for node in remaining if pending[node.name] <= done]
        if not ready:
            cycle = ", ".join(repr(node.name) for node in remaining if not pending[node.name] <= done)
            raise GraphError(f"the graph has a cycle through node(s) {cycle}")
        for node in ready:
            order.append(node)
            done.add(node.name)
        remaining = [node for node in remaining if node.name not in done]
    return order


def _resolve_batch_norms(nodes: list[Node], output: str) -> tuple[list[Node], dict[str, str], str]:
    """Fold each BatchNorm into the Dense/Conv2d node it reads when that node has no other
    consumer (and is not the output); make every other BatchNorm a ChannelAffine node."""
    nodes = list(nodes)
    folded: dict[str, str] = {}
    k = 0
    while k < len(nodes):
        node = nodes[k]
        if not isinstance(node.operation, BatchNorm):
            k += 1
            continue
        source = node.inputs[0]
        position = next((j for j, n in enumerate(nodes) if n.name == source), None)
        consumers = [n for n in nodes if source in n.inputs]
        if position is not None and isinstance(nodes[position].operation, (Dense, Conv2d)) \
                and len(consumers) == 1 and source != output:
            linear = nodes[position]
            try:
                nodes[position] = Node(linear.name, node.operation.fold_into(linear.operation), linear.inputs)
            except LRPError as error:
                raise GraphError(f"node {node.name!r}: {error}") from None
            del nodes[k]
            nodes = [Node(n.name, n.operation, tuple(source if i == node.name else i for i in n.inputs))
                     for n in nodes]
            output = source if output == node.name else output
            folded[node.name] = source
            continue
        nodes[k] = Node(node.name, ChannelAffine.from_batchnorm(node.operation), node.inputs)
        k += 1
    # a node that no path leads from to the output would get no relevance: reject it
    needed, stack = set(), [output]
    by_name = {n.name: n for n in nodes}
    while stack:
        name = stack.pop()
        if name in by_name and name not in needed:
            needed.add(name)
            stack.extend(by_name[name].inputs)
    dead = [n.name for n in nodes if n.name not in needed]
    if dead:
        raise GraphError(f"node(s) {', '.join(map(repr, dead))} do not lead to the output {output!r}")
    return nodes, folded, output
