"""The PyTorch twin of a transformer :class:`~lrp_num.engine.graph.Graph` whose every op goes through
a swappable :class:`~lrp_num.io.torch_vit.TorchOps` (torch imported lazily).

:class:`~lrp_num.io.torch_twin.GraphTwin` gives an LRP library torch modules to hook (ResNet nodes);
LXT instead replaces functions (its softmax, products, norms), as it does on the hand-written
:class:`~lrp_num.io.torch_vit.ViT`. :func:`graph_ops_twin` builds a module whose forward walks the
graph's nodes in order and computes each through ``module.ops`` under the node's name:

==========================  =====================================================================
graph node                  op
==========================  =====================================================================
Dense, TokenDense           ``linear`` (an ``nn.Linear``; Dense on the flattened sample)
LayerNorm                   ``layer_norm`` (an ``nn.LayerNorm``)
GELU                        ``gelu`` (exact GELU only)
Softmax (last axis)         ``softmax``
MatMul                      ``matmul`` (``transpose_b``: the second factor's last two axes
                            swapped by ``rearrange``); a ``scale`` != 1 is a ``scale`` op named
                            after the node, the product ``<node>:product``
Add (two addends)           ``add``
Flatten, Reshape,           ``rearrange`` (values moved, not changed), then ``observe`` under the
SplitHeads, MergeHeads,     node's name, so that an op reading the result knows it by that name
Identity, Dropout
==========================  =====================================================================

Any other node (Multiply, RMSNorm, SiLU, a convolution, ...) is an UnsupportedLayerError naming
it: LXT's audit has no op for it. The relevance LXT's ops pass back is then known at the graph's
own node names, and :func:`lrp_num.audit.lxt_reference.compare_with_reference` compares it with the
reference on the same graph (``module.graph``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lrp_num.errors import UnsupportedLayerError
from lrp_num.io.torch_bridge import require_torch

#: graph layer types the twin computes (see the module docstring)
SUPPORTED = ("Dense", "TokenDense", "LayerNorm", "GELU", "Softmax", "MatMul", "Add", "Flatten", "Reshape",
             "SplitHeads", "MergeHeads", "Identity", "Dropout")


def _check_node(node, graph) -> None:
    name = type(node.operation).__name__
    if name not in SUPPORTED:
        raise UnsupportedLayerError(f"--library lxt has no op for node {node.name!r} ({name}); the graph twin "
                                    f"computes {', '.join(SUPPORTED)}")
    layer = node.operation
    if name == "GELU" and layer.approximate != "none":
        raise UnsupportedLayerError(f"node {node.name!r}: LXT's GELU is the exact one, not {layer.approximate!r}")
    if name == "Softmax" and layer.axis not in (-1, len(graph.shapes[node.inputs[0]]) - 1):
        raise UnsupportedLayerError(f"node {node.name!r}: a softmax over axis {layer.axis}, not the last")
    if name == "Add" and len(node.inputs) != 2:
        raise UnsupportedLayerError(f"node {node.name!r} adds {len(node.inputs)} tensors; LXT's add takes two")


def graph_ops_twin(graph, dtype: Any = None):
    """The twin of ``graph`` (see the module docstring), float64 unless ``dtype``, in eval mode.

    Raises
    ------
    UnsupportedLayerError
        A node of a type the twin has no op for (named), a GELU other than the exact one, a
        softmax over another axis than the last, an Add of more than two tensors.
    GraphError
        The graph has no ``input_shape``.
    """
    from lrp_num.errors import GraphError
    from lrp_num.io.torch_vit import TorchOps

    torch = require_torch()
    nn = torch.nn
    dtype = torch.float64 if dtype is None else dtype
    if graph.shapes is None:
        raise GraphError("the ops twin of a graph needs its input_shape (Graph(..., input_shape=...))")
    for node in graph.nodes:
        _check_node(node, graph)

    def tensor(array):
        return torch.tensor(np.asarray(array, dtype=np.float64), dtype=dtype)

    class GraphOpsTwin(nn.Module):
        """``graph`` computed op by op through ``self.ops`` (module docstring of torch_ops_twin)."""

        def __init__(self) -> None:
            super().__init__()
            self.graph = graph
            self.ops: TorchOps = TorchOps()
            self.layers = nn.ModuleDict()
            for index, node in enumerate(graph.nodes):
                layer = node.operation
                kind = type(layer).__name__
                if kind in ("Dense", "TokenDense"):
                    module = nn.Linear(layer.n_in, layer.n_out, dtype=dtype)
                    module.weight.data = tensor(layer.weight.T)
                    module.bias.data = tensor(layer.bias)
                elif kind == "LayerNorm":
                    module = nn.LayerNorm(len(layer.weight), eps=layer.eps, dtype=dtype)
                    module.weight.data, module.bias.data = tensor(layer.weight), tensor(layer.bias)
                else:
                    continue
                self.layers[str(index)] = module

        def forward(self, x):
            ops = self.ops
            values = {graph.input_name: x}
            for index, node in enumerate(graph.nodes):
                layer, kind, name = node.operation, type(node.operation).__name__, node.name
                args = [values[source] for source in node.inputs]
                if kind == "Dense":
                    flat = ops.rearrange(args[0], lambda t: t.flatten(1))
                    out = ops.linear(name, self.layers[str(index)], flat)
                elif kind == "TokenDense":
                    out = ops.linear(name, self.layers[str(index)], args[0])
                elif kind == "LayerNorm":
                    out = ops.layer_norm(name, self.layers[str(index)], args[0])
                elif kind == "GELU":
                    out = ops.gelu(name, args[0])
                elif kind == "Softmax":
                    out = ops.softmax(name, args[0])
                elif kind == "MatMul":
                    a, b = args
                    if layer.transpose_b:
                        b = ops.rearrange(b, lambda t: t.transpose(-2, -1))
                    if layer.scale == 1.0:
                        out = ops.matmul(name, a, b)
                    else:
                        out = ops.scale(name, ops.matmul(f"{name}:product", a, b), float(layer.scale))
                elif kind == "Add":
                    out = ops.add(name, *args)
                else:
                    out = ops.observe(name, ops.rearrange(args[0], _view(layer, kind)))
                values[name] = out
            return values[graph.output]

    return GraphOpsTwin().eval()


def _view(layer, kind: str):
    """The torch form of a value-moving node (Flatten, Reshape, SplitHeads, MergeHeads, Identity)."""
    if kind == "Flatten":
        return lambda t: t.flatten(1)
    if kind == "Reshape":
        return lambda t: t.reshape(t.shape[0], *layer.shape)
    if kind == "SplitHeads":
        return lambda t: t.reshape(t.shape[0], t.shape[1], layer.heads, -1).transpose(1, 2)
    if kind == "MergeHeads":
        return lambda t: t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1)
    return lambda t: t.view_as(t)  # Identity, Dropout (eval mode): a new tensor object, its own name


def ops_tensor_map(graph) -> dict[str, tuple[str, bool]]:
    """Recorded tensor -> (graph node, swap the last two axes): the input and every node by its own
    name; a node read only as the transposed second factor of MatMuls is recorded transposed
    (swap), one read both ways is left out (its readers' layouts differ)."""
    readers: dict[str, set[bool]] = {}
    for node in graph.nodes:
        for position, source in enumerate(node.inputs):
            transposed = type(node.operation).__name__ == "MatMul" and position == 1 and node.operation.transpose_b
            readers.setdefault(source, set()).add(bool(transposed))
    mapping = {"input": (graph.input_name, False)}
    for node in graph.nodes:
        ways = readers.get(node.name, {False})
        if len(ways) == 1:
            mapping[node.name] = (node.name, ways.pop())
    return mapping


__all__ = ["SUPPORTED", "graph_ops_twin", "ops_tensor_map"]


def check_attention_names(graph, variant: str) -> None:
    """LXT's efficient variants find attention by its projections' names (``<p>.q``, ``<p>.k``,
    ``<p>.v``: ``divide_gradient`` or ``stop_gradient`` there), as :func:`lrp_num.layers.attention.
    multi_head_attention` and the torch import of ``nn.MultiheadAttention`` name them. Raise
    UnsupportedLayerError for ``attnlrp-efficient`` or ``cplrp`` on a graph whose products are not
    ``<p>.scores`` (of ``<p>.q_heads``, ``<p>.k_heads``) or ``<p>.context`` (of ``<p>.attention``,
    ``<p>.v_heads``) with those projections present; ``attnlrp`` applies its rule per op and needs no names."""
    if variant == "attnlrp":
        return
    names = {node.name for node in graph.nodes}
    for node in graph.nodes:
        if type(node.operation).__name__ != "MatMul":
            continue
        prefix = node.name.rsplit(".", 1)[0]
        expected = {f"{prefix}.scores": (f"{prefix}.q_heads", f"{prefix}.k_heads"),
                    f"{prefix}.context": (f"{prefix}.attention", f"{prefix}.v_heads")}.get(node.name)
        if (expected is None or tuple(node.inputs) != expected
                or not {f"{prefix}.{p}" for p in "qkv"} <= names):
            raise UnsupportedLayerError(f"LXT's {variant} patches attention by its q, k, v projections, and the "
                                        f"product {node.name!r} is not one of a multi-head attention block named "
                                        "<p>.q, <p>.k, <p>.v, <p>.scores, <p>.context: use --rule attnlrp")


__all__ += ["check_attention_names"]
