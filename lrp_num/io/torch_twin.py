"""The PyTorch twin of a :class:`~lrp_num.engine.graph.Graph` (torch imported lazily).

:func:`graph_to_torch` (reached through :func:`lrp_num.io.torch_bridge.to_torch`) builds an
``nn.Module`` whose forward walks the graph's *source* nodes in topological order:

* every layer is a module named after its node; a dotted node name such as
  ``layer1.0.conv1`` becomes nested containers (``model.layer1[0].conv1``, as torchvision names
  its ResNet), so ``named_modules()`` lists the node names and a report can name nodes;
* BatchNorm stays ``nn.BatchNorm1d/2d`` in eval mode (a library that merges batch norms itself
  is exercised, not handed folded weights); a ChannelAffine node is a batch norm with mean 0,
  variance 1 and eps 0, which computes s x + t exactly;
* Add nodes follow ``addition``: ``"zennit"`` stacks the addends on a new last axis and sums
  them with a ``zennit.layer.Sum`` module (what zennit's ResNet canonizer does to torchvision's
  blocks, zennit/torchvision.py), ``"captum"`` adds two addends with captum's
  ``Addition_Module`` (captum/attr/_utils/custom_modules.py), ``"functional"`` writes a plain
  ``+`` that no hook sees (what a model looks like before either conversion);
* Concat is ``torch.cat``, global and adaptive average pooling ``nn.AdaptiveAvgPool2d``,
  Dropout ``nn.Dropout`` (identity in eval mode), pooling keeps padding and ceil_mode, Conv2d
  its groups.

Observers (:meth:`GraphTwin.observe`) see every node's output tensor, and for Add nodes what
reaches the addition, during forward and once it has finished: the audit records relevance
with tensor hooks registered there.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from lrp_num.errors import GraphError, MissingDependencyError, UnsupportedLayerError
from lrp_num.layers import (AdaptiveAvgPool2d, Add, BatchNorm, ChannelAffine, Concat, Dropout,
                            GlobalAvgPool)

#: how an Add node is written in the twin
ADDITIONS = ("functional", "zennit", "captum")


def _addition_module(addition: str, n_addends: int, name: str):
    if addition == "zennit":
        from lrp_num.audit.zennit_adapter import import_zennit

        return import_zennit().layer.Sum(dim=-1)
    if addition == "captum":
        if n_addends != 2:
            raise UnsupportedLayerError(f"node {name!r} adds {n_addends} tensors; captum's Addition_Module "
                                        "takes exactly two")
        try:
            from captum.attr._utils.custom_modules import Addition_Module
        except ImportError:
            from lrp_num.io.torch_bridge import INSTALL_HINT

            raise MissingDependencyError(f"captum is not installed: {INSTALL_HINT}") from None
        return Addition_Module()
    return None


def _affine_module(scale: np.ndarray, shift: np.ndarray, rank: int, dtype):
    """A batch norm computing exactly s x + t (mean 0, variance 1, eps 0)."""
    from lrp_num.io.torch_bridge import require_torch

    torch = require_torch()
    cls = torch.nn.BatchNorm2d if rank == 3 else torch.nn.BatchNorm1d
    module = cls(len(scale), eps=0.0, dtype=dtype)
    module.weight.data = torch.tensor(scale, dtype=dtype)
    module.bias.data = torch.tensor(shift, dtype=dtype)
    module.running_mean.data = torch.zeros(len(scale), dtype=dtype)
    module.running_var.data = torch.ones(len(scale), dtype=dtype)
    return module


def _node_module(node, rank: int, dtype, addition: str):
    """The module of one source node (None where the forward writes a tensor operation)."""
    from lrp_num.io.torch_bridge import _batch_norm_module, _layer_to_module, require_torch

    torch = require_torch()
    layer = node.operation
    if isinstance(layer, Add):
        return _addition_module(addition, len(node.inputs), node.name)
    if isinstance(layer, Concat):
        return None
    if isinstance(layer, BatchNorm):
        return _batch_norm_module(layer, rank == 3, dtype)
    if isinstance(layer, ChannelAffine):
        return _affine_module(layer.scale, layer.shift, rank, dtype)
    if isinstance(layer, (GlobalAvgPool, AdaptiveAvgPool2d)):
        return torch.nn.AdaptiveAvgPool2d(tuple(layer.output_size))
    if isinstance(layer, Dropout):
        return torch.nn.Dropout(layer.p)
    return _layer_to_module(layer, dtype)


def graph_to_torch(graph, dtype=None, addition: str = "functional"):
    """The :class:`GraphTwin` of ``graph`` in eval mode (see the module docstring)."""
    from lrp_num.io.torch_bridge import require_torch

    torch = require_torch()
    if addition not in ADDITIONS:
        raise UnsupportedLayerError(f"unknown addition {addition!r}; known: {', '.join(ADDITIONS)}")
    if graph.shapes is None:
        raise GraphError("the torch twin of a graph needs its input_shape (Graph(..., input_shape=...))")
    dtype = torch.float64 if dtype is None else dtype
    return GraphTwin(graph, dtype, addition).eval()


def _place(root, path: str, module) -> str:
    """Register ``module`` under the dotted ``path`` (containers created on the way); where
    the path cannot be a module path (a part is a leaf already, or not a valid name), under
    the path with dots replaced by underscores at the top. Returns the path used."""
    from lrp_num.io.torch_bridge import require_torch

    torch = require_torch()
    parts = path.split(".")
    parent = root
    try:
        for part in parts[:-1]:
            child = parent._modules.get(part)
            if child is None:
                child = torch.nn.Module()
                parent.add_module(part, child)
            elif child.__class__ is not torch.nn.Module or getattr(child, "_lrp_leaf", False):
                raise KeyError(part)
            parent = child
        if parts[-1] in parent._modules:
            raise KeyError(parts[-1])
        parent.add_module(parts[-1], module)
        return path
    except KeyError:
        flat = path.replace(".", "_")
        while flat in root._modules or hasattr(root, flat):
            flat += "_"
        root.add_module(flat, module)
        return flat


def _import_torch_module():
    from lrp_num.io.torch_bridge import require_torch

    return require_torch().nn.Module


def _make_twin_class():
    nn_module = _import_torch_module()

    class GraphTwin(nn_module):
        """``nn.Module`` computing a :class:`~lrp_num.engine.graph.Graph` (see the module docstring).

        Attributes
        ----------
        node_modules : dict of str to nn.Module
            Node name -> its module (absent for Concat and functional additions).
        module_paths : dict of str to str
            Node name -> the module's path in ``named_modules()`` (the node name where possible).
        consumers : dict of str to list of str
            Source node (or the input) -> the source nodes that read it.
        addition : str
            How Add nodes are written (:data:`ADDITIONS`).
        """

        def __init__(self, graph, dtype, addition: str) -> None:
            super().__init__()
            from lrp_num.engine.graph import _topological_order

            self.addition = addition
            self.input_name = graph.input_name
            self.output_name = graph.source_output
            self.steps = _topological_order(graph.source_nodes, graph.input_name)
            shapes = dict(graph.shapes)
            for node in self.steps:  # folded batch norms have their input's shape
                shapes.setdefault(node.name, shapes[node.inputs[0]])
            self.consumers: dict[str, list[str]] = {graph.input_name: []}
            self.node_modules, self.module_paths = {}, {}
            for node in self.steps:
                self.consumers.setdefault(node.name, [])
                for name in node.inputs:
                    self.consumers[name].append(node.name)
                module = _node_module(node, len(shapes[node.inputs[0]]), dtype, addition)
                if module is not None:
                    module._lrp_leaf = True
                    self.module_paths[node.name] = _place(self, node.name, module)
                    self.node_modules[node.name] = module
            self.operations = {node.name: node.operation for node in self.steps}
            self._observers: list = []

        def observe(self, observer) -> Callable[[], None]:
            """Call ``observer.value(kind, name, tensor)`` for every node output (kind
            ``"node"``), Add input (``"addends"``: the stacked tensor for zennit's Sum, the list of
            addends otherwise) during forward, then ``observer.forward_done()``. Returns a function
            that removes the observer."""
            self._observers.append(observer)
            return lambda: self._observers.remove(observer) if observer in self._observers else None

        def _notify(self, kind: str, name: str, value) -> None:
            for observer in self._observers:
                observer.value(kind, name, value)

        def forward(self, x):
            import torch

            values = {self.input_name: x}
            self._notify("node", self.input_name, x)
            for node in self.steps:
                inputs = [values[name] for name in node.inputs]
                operation = self.operations[node.name]
                module = self.node_modules.get(node.name)
                if isinstance(operation, Add):
                    if self.addition == "zennit":
                        stacked = torch.stack(inputs, dim=-1)
                        self._notify("addends", node.name, stacked)
                        out = module(stacked)
                    elif self.addition == "captum":
                        self._notify("addends", node.name, inputs)
                        out = module(*inputs)
                    else:  # a plain +: each addend through its own view, so an observer can
                        edges = [value.view_as(value) for value in inputs]  # see each edge
                        self._notify("addends", node.name, edges)
                        out = edges[0]
                        for edge in edges[1:]:
                            out = out + edge
                elif isinstance(operation, Concat):
                    out = torch.cat(inputs, dim=operation.axis)  # both count the batch as axis 0
                else:
                    out = module(inputs[0])
                values[node.name] = out
                self._notify("node", node.name, out)
            for observer in self._observers:
                observer.forward_done()
            return values[self.output_name]

    return GraphTwin


_CLASS: list = []


def GraphTwin(graph, dtype, addition: str):  # noqa: N802 - builds an instance of the lazy class
    """An instance of the twin class (created on first use, so that torch stays optional)."""
    if not _CLASS:
        _CLASS.append(_make_twin_class())
    return _CLASS[0](graph, dtype, addition)


def twin_class():
    """The ``nn.Module`` subclass of twins (for isinstance checks)."""
    if not _CLASS:
        _CLASS.append(_make_twin_class())
    return _CLASS[0]


__all__ = ["ADDITIONS", "graph_to_torch", "twin_class"]
