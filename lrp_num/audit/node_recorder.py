"""Recording a library's relevance at every node of a graph's torch twin.

A library's LRP is a modified gradient: once the modules have applied their rules, the
gradient arriving at a tensor between modules is the relevance there (zennit, where each rule
returns input x modified gradient), or becomes it once the reading module's input hook has
multiplied it by the tensor (captum). :class:`NodeRecorder` observes a
:class:`~lrp_num.io.torch_twin.GraphTwin` and, when its forward has finished (so after every hook a
library registers during forward), puts a tensor hook on

* every node's output: the relevance arriving there, summed over the nodes that read it;
* every Add node's addends, as far as the twin exposes them: zennit's stacked Sum input (one
  slice per addend, after its rule), the views a plain ``+`` reads (each receives what the
  sum passes on).

For captum's ``Addition_Module`` (two inputs read directly, one of which is usually read by
another module too), :meth:`NodeRecorder.watch_addition` records the gradient the addition's
autograd node sends to each addend; captum's hook on that addend multiplies it by the addend,
so the addition's share of it is a_k times that gradient.
"""

from __future__ import annotations

import numpy as np


class NodeRecorder:
    """Tensor hooks on a twin's node outputs and addends (see the module docstring).

    Attributes
    ----------
    nodes : dict of str to ndarray
        Source node (or the input) -> relevance arriving at its output.
    addends : dict of str to list of ndarray
        Add node -> relevance of each addend, where the twin exposes them.
    addition_gradients : dict of str to (list of ndarray, list of ndarray)
        Add node -> (the addends a_k, the gradient its autograd node sends to each), for
        captum's Addition_Module.
    """

    def __init__(self, twin) -> None:
        self.twin = twin
        self.nodes: dict[str, np.ndarray] = {}
        self.addends: dict[str, list[np.ndarray]] = {}
        self.addition_gradients: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        self._pending: list[tuple[str, str, object]] = []
        self._handles: list = []
        self._remove = twin.observe(self)

    def value(self, kind: str, name: str, tensor) -> None:
        self._pending.append((kind, name, tensor))

    def forward_done(self) -> None:
        pending, self._pending = self._pending, []
        for kind, name, value in pending:
            if kind == "node":
                self._hook(value, lambda grad, name=name: self.nodes.__setitem__(name, _numpy(grad)))
            elif isinstance(value, (list, tuple)):
                if self.twin.addition == "functional":
                    slots: list = [None] * len(value)
                    self.addends[name] = slots
                    for k, edge in enumerate(value):
                        self._hook(edge, lambda grad, slots=slots, k=k: slots.__setitem__(k, _numpy(grad)))
            else:  # zennit: the addends stacked on the last axis
                self._hook(value, lambda grad, name=name: self.addends.__setitem__(
                    name, [_numpy(grad[..., k]) for k in range(grad.shape[-1])]))

    def watch_addition(self, name: str, module) -> None:
        """Record what the addition module of node ``name`` sends to each addend (captum)."""
        def forward_hook(module, args, output, name=name):
            if output.grad_fn is None:
                return None
            addends = [_numpy(a) for a in args]

            def node_hook(grad_inputs, grad_outputs):
                self.addition_gradients[name] = (addends, [_numpy(g) for g in grad_inputs])
            output.grad_fn.register_hook(node_hook)
            return None
        self._handles.append(module.register_forward_hook(forward_hook))

    def _hook(self, tensor, record) -> None:
        if getattr(tensor, "requires_grad", False):
            def hook(grad):
                record(grad)
                return None
            tensor.register_hook(hook)

    def close(self) -> None:
        """Stop observing the twin and remove the module hooks."""
        self._remove()
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _numpy(tensor) -> np.ndarray:
    return tensor.detach().double().cpu().numpy().copy()
