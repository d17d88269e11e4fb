"""Applying the attention kernels (softmax, product, matrix product) at graph nodes.

The kernels are generated from ``derivations/softmax.py``, ``product_uniform.py`` and
``matmul_epsilon.py`` (AttnLRP, Achtibat et al. 2024, ICML, Prop. 3.1 and 3.3); this module only
hands each its node's inputs in the layout it expects:

* Softmax: the logits and the relevance of the softmax, along the node's axis;
* Multiply: the two factors, relevance (R_a, R_b);
* MatMul C = scale A B: the kernel sees the factors (scale A, B), since scale A is a one-input
  linear map that passes its relevance to A whole (the constant belongs to the first factor).

A rule that holds one factor constant (``matmul_cp``, CP-LRP: its kernel's ``HELD``) needs to
know which input is the constant: :func:`hold_constants` reads it from the graph, not from node
names. The held input of a MatMul node is the one a Softmax node produces (the attention weights
A of A V); a MatMul whose output reaches the network output only through held inputs (Q K^T,
which only computes A) is constant as a whole, and both its inputs receive nothing. A MatMul
that does receive relevance with no, or two, Softmax-produced inputs is ambiguous (GraphError).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import array_api_compat

from lrp_num.errors import GraphError
from lrp_num.layers import MatMul, MergeHeads, Multiply, Softmax, SplitHeads

#: node type -> the neuron its rules are derived for (a kernel's NEURON)
NEURONS = {Softmax: "softmax", Multiply: "product", MatMul: "matmul"}
#: node types with an attention rule
RULED = tuple(NEURONS)
#: node type -> the kernel keyword that takes the node's output from the forward pass (softmax
#: s; the matrix product C = (scale A) B, the product of the factors the kernel is given)
FORWARD_QUANTITIES = {Softmax: "s", MatMul: "product"}
#: the neurons in words, for messages
NEURON_WORDS = {"softmax": "a softmax over one axis (Softmax node)",
                "product": "an element-wise product of two inputs (Multiply node)",
                "matmul": "a matrix product of two inputs (MatMul node)"}


def neuron_of(layer: object) -> str | None:
    """The neuron kind of an attention node, None for any other node."""
    return NEURONS.get(type(layer))


#: a kernel's HELD -> the position of the factor it holds constant
HELD_POSITION = {"first": 0, "second": 1}


def hold_constants(graph, plan: dict, held_of: Callable[[object], str | None]) -> dict:
    """``plan`` with ``constant_inputs`` set on every MatMul node whose rule holds a factor.

    ``held_of(choice)``: the factor the rule's kernel holds ("first", "second") or None. Walks
    the nodes from the output down, tracking which tensors receive relevance: a held input
    receives none, and a MatMul whose output receives none is constant as a whole (both inputs
    held). See the module docstring.
    """
    producer = {node.name: node.operation for node in graph.nodes}
    live = {graph.output}
    planned = dict(plan)
    for index in reversed(range(len(graph.nodes))):
        node = graph.nodes[index]
        choice = plan.get(index)
        if not (isinstance(node.operation, MatMul) and choice is not None and held_of(choice)):
            if node.name in live:
                live.update(node.inputs)
            continue
        if node.name not in live:
            constant = (0, 1)
        else:
            weights = tuple(k for k, name in enumerate(node.inputs) if isinstance(producer.get(name), Softmax))
            if len(weights) != 1:
                found = "both inputs" if weights else "neither input"
                raise GraphError(
                    f"node {index} ({node.name!r}, {node.operation!r}): rule {choice.rule!r} holds the "
                    f"attention weights constant, but {found} ({', '.join(node.inputs)}) is produced by a "
                    "Softmax node, so which factor is constant is ambiguous; give this node another rule "
                    "with the composite's node_rules (e.g. LayerRule('matmul_epsilon'))")
            constant = weights
            live.update(name for k, name in enumerate(node.inputs) if k not in constant)
        planned[index] = replace(choice, constant_inputs=constant)
    return planned


def _transpose(x):
    return array_api_compat.array_namespace(x).matrix_transpose(x)


def _zeros(x):
    return array_api_compat.array_namespace(x).zeros_like(x)


def apply(layer: object, inputs: list, above, relevance: Callable, parameters: dict,
          constant_inputs: tuple[int, ...] = (), held: str | None = None, output=None,
          accepted: frozenset = frozenset()) -> list:
    """The relevance of the node's inputs (one array per input) from ``above``.

    ``held``: the factor the kernel holds constant (its ``HELD``), ``constant_inputs`` the
    node's inputs that are constant (:func:`hold_constants`); where they differ, the kernel is
    applied to the transposed product C^T = B^T A^T, which puts the constant input in its place.
    ``output``: the node's output from the forward pass (None: not known); it is handed to a
    kernel whose keywords (``accepted``) take it (:data:`FORWARD_QUANTITIES`), which then
    skips recomputing it.
    """
    name = FORWARD_QUANTITIES.get(type(layer))
    given = {name: output} if output is not None and name in accepted else {}
    if isinstance(layer, Softmax):
        return [relevance(inputs[0], above, axis=layer.batch_axis(inputs[0].ndim - 1), **parameters, **given)]
    if isinstance(layer, Multiply):
        return list(relevance(inputs[0], inputs[1], above, **parameters, **given))
    if isinstance(layer, MatMul):
        first = layer.scaled_first(inputs[0])
        if held is not None and len(constant_inputs) == 2:  # the product only computes a constant
            return [_zeros(inputs[0]), _zeros(inputs[1])]
        if held is None or constant_inputs in ((), (HELD_POSITION[held],)):
            return list(relevance(first, inputs[1], above, transpose_b=layer.transpose_b, **parameters, **given))
        # C^T = right^T first^T, right = B^T with transpose_b else B: the kernel's a is right^T
        given = {key: _transpose(value) for key, value in given.items()}
        right_t = inputs[1] if layer.transpose_b else _transpose(inputs[1])
        lower_b, lower_first = relevance(right_t, first, _transpose(above), transpose_b=True, **parameters, **given)
        return [lower_first, lower_b if layer.transpose_b else _transpose(lower_b)]
    raise TypeError(f"{layer!r} has no attention rule")  # pragma: no cover - callers check RULED


def route(layer: object, inputs: list, above) -> list | None:
    """Relevance moved back through SplitHeads / MergeHeads; None for any other node."""
    if isinstance(layer, SplitHeads):
        return [layer.back(above)]
    if isinstance(layer, MergeHeads):
        return [layer.back(above, inputs[0].shape[1])]
    return None


__all__ = ["FORWARD_QUANTITIES", "HELD_POSITION", "NEURONS", "NEURON_WORDS", "RULED", "apply", "hold_constants",
           "neuron_of", "route"]
