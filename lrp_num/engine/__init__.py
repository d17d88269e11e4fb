"""The engine: networks, the rule plan and relevance propagation with the generated kernels.

* :mod:`~lrp_num.engine.network` and :mod:`~lrp_num.engine.graph`: a chain of layers and a
  graph of named nodes (a :class:`~lrp_num.engine.network.Sequential` is a chain-shaped graph);
* :mod:`~lrp_num.engine.composites` and :mod:`~lrp_num.engine.conventions`: which rule where,
  and the bias and stabiliser conventions;
* :mod:`~lrp_num.engine.explain`: the backward pass, :func:`lrp_num.explain`;
* :mod:`~lrp_num.engine.kernels`: loading the kernels generated into ``lrp_num/_generated``,
  and :mod:`~lrp_num.engine.kernel_runtime`, the one hand-written run time they import.

Nothing is imported here: the generated kernels import ``kernel_runtime`` from this package,
and the layers import those kernels, so an eager import would be a cycle. The modules are
attributes on first use (PEP 562).
"""

import importlib as _importlib
from types import ModuleType as _ModuleType

SUBMODULES = ("composites", "conventions", "explain", "graph", "kernel_runtime", "kernels", "network")


def __getattr__(name: str) -> _ModuleType:
    if name in SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
