"""Build a :class:`~lrp_num.engine.graph.Graph` node by node while reading a foreign model.

The ONNX and PyTorch importers walk a model's operators in execution order and hand each
translated operation to a :class:`GraphBuilder`, which names the node uniquely, infers its
per-sample output shape (so that later operators, e.g. a reshape, can be resolved) and finally
drops the nodes that do not lead to the output and builds the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from lrp_num.errors import GraphError, LRPError, ShapeError
from lrp_num.engine.graph import INPUT, Graph, Node
from lrp_num.layers import BatchNorm, Conv2d, Dense
from lrp_num.engine.network import Sequential


@dataclass(frozen=True)
class Tensor:
    """A value of the model being imported: the output of graph node ``name`` (or the graph
    input), with its per-sample shape when the input shape is known."""

    name: str
    shape: tuple[int, ...] | None


# -- attention's pending views: a reshape or transpose that only a later op makes a graph node ----

@dataclass(frozen=True)
class HeadsView:
    """A (T, H*d) tensor viewed as (T, H, d): waiting for the transpose that makes it (H, T, d)."""

    tensor: Tensor
    heads: int


@dataclass(frozen=True)
class Swapped:
    """A (H, T, d) tensor transposed to (T, H, d): waiting for the view that merges the heads."""

    tensor: Tensor


@dataclass(frozen=True)
class TransposedLast:
    """A tensor with its last two axes swapped: waiting to be the second factor of a matrix product."""

    tensor: Tensor


class GraphBuilder:
    """Collects the nodes of an imported model.

    Parameters
    ----------
    input_shape : tuple of int, optional
        Per-sample shape of the model input; shapes are inferred when it is given.
    """

    def __init__(self, input_shape: tuple[int, ...] | None) -> None:
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.input = Tensor(INPUT, self.input_shape)
        self.nodes: list[Node] = []
        self._names: set[str] = {INPUT}

    def unique_name(self, name: str) -> str:
        """``name``, or ``name@1``, ``name@2``, ... when taken (a module called twice)."""
        candidate, count = name, 0
        while candidate in self._names:
            count += 1
            candidate = f"{name}@{count}"
        return candidate

    def add(self, name: str, operation: object, inputs: Sequence[Tensor], source: str) -> Tensor:
        """Append node ``name`` (made unique) computing ``operation`` of ``inputs``.

        ``source`` describes the foreign operator for error messages (e.g. "ONNX node 'conv1'
        (Conv)"); a shape that does not fit is a one-line GraphError naming it.
        """
        name = self.unique_name(name)
        shape = None
        if all(t.shape is not None for t in inputs):
            try:
                shape = tuple(operation.output_shape(*(t.shape for t in inputs)))
            except ShapeError as error:
                raise GraphError(f"{source}: {error}") from None
        self._names.add(name)
        self.nodes.append(Node(name, operation, tuple(t.name for t in inputs)))
        return Tensor(name, shape)

    def producer(self, tensor: Tensor) -> Node | None:
        """The node that computes ``tensor`` (None for the graph input)."""
        return next((node for node in self.nodes if node.name == tensor.name), None)

    def replace(self, tensor: Tensor, operation: object) -> None:
        """Give the node computing ``tensor`` a new operation of the same shape (a merged bias)."""
        index = next(k for k, node in enumerate(self.nodes) if node.name == tensor.name)
        node = self.nodes[index]
        self.nodes[index] = Node(node.name, operation, node.inputs)

    def _needed(self, output: Tensor) -> list[Node]:
        """The nodes on some path to ``output`` (a model may compute values it never uses)."""
        by_name = {node.name: node for node in self.nodes}
        needed, stack = set(), [output.name]
        while stack:
            name = stack.pop()
            if name in by_name and name not in needed:
                needed.add(name)
                stack.extend(by_name[name].inputs)
        return [node for node in self.nodes if node.name in needed]

    def graph(self, output: Tensor, what: str) -> Graph:
        """The :class:`Graph` of the nodes leading to ``output``.

        ``what`` names the model in the error raised when the output is the input itself.
        """
        if output.name == INPUT:
            raise GraphError(f"{what} returns its input unchanged; there is nothing to explain")
        try:
            return Graph(self._needed(output), input_shape=self.input_shape, output=output.name)
        except GraphError:
            raise
        except LRPError as error:  # e.g. folding a BatchNorm into a layer of another width
            raise GraphError(f"{what}: {error}") from None

    def chain(self, output: Tensor) -> Sequential | None:
        """The nodes as a :class:`Sequential` when they form a chain input -> ... -> output in
        which every BatchNorm follows a Dense or Conv2d layer; else None."""
        nodes = self._needed(output)
        previous = INPUT
        for node in nodes:
            if node.inputs != (previous,):
                return None
            if isinstance(node.operation, BatchNorm) and not (
                    previous != INPUT and isinstance(self.producer(Tensor(previous, None)).operation, (Dense, Conv2d))):
                return None
            previous = node.name
        if previous != output.name:
            return None
        return Sequential([node.operation for node in nodes], input_shape=self.input_shape)
