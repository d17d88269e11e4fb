"""Applying the attention kernels (softmax, product, matrix product) at graph nodes.

The kernels are generated from ``derivations/softmax.py``, ``product_uniform.py`` and
``matmul_epsilon.py`` (AttnLRP, Achtibat et al. 2024, ICML, Prop. 3.1 and 3.3); this module only
hands each its node's inputs in the layout it expects:

* Softmax: the logits and the relevance of the softmax, along the node's axis;
* Multiply: the two factors, relevance (R_a, R_b);
* MatMul C = scale A B: the kernel sees the factors (scale A, B), since scale A is a one-input
  linear map that passes its relevance to A whole (the constant belongs to the first factor).
"""

from __future__ import annotations

from typing import Callable

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


def apply(layer: object, inputs: list, above, relevance: Callable, parameters: dict,
          output=None, accepted: frozenset = frozenset()) -> list:
    """The relevance of the node's inputs (one array per input) from ``above``.

    ``output``: the node's output from the forward pass (None: not known); it is handed to a
    kernel whose keywords (``accepted``) take it (:data:`FORWARD_QUANTITIES`), which then
    skips recomputing it.
    """
    name = FORWARD_QUANTITIES.get(type(layer))
    if output is not None and name in accepted:
        parameters = {**parameters, name: output}
    if isinstance(layer, Softmax):
        return [relevance(inputs[0], above, axis=layer.batch_axis(inputs[0].ndim - 1), **parameters)]
    if isinstance(layer, Multiply):
        return list(relevance(inputs[0], inputs[1], above, **parameters))
    if isinstance(layer, MatMul):
        return list(relevance(layer.scaled_first(inputs[0]), inputs[1], above,
                              transpose_b=layer.transpose_b, **parameters))
    raise TypeError(f"{layer!r} has no attention rule")  # pragma: no cover - callers check RULED


def route(layer: object, inputs: list, above) -> list | None:
    """Relevance moved back through SplitHeads / MergeHeads; None for any other node."""
    if isinstance(layer, SplitHeads):
        return [layer.back(above)]
    if isinstance(layer, MergeHeads):
        return [layer.back(above, inputs[0].shape[1])]
    return None


__all__ = ["FORWARD_QUANTITIES", "NEURONS", "NEURON_WORDS", "RULED", "apply", "neuron_of", "route"]
