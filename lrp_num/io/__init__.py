"""Model files and model import: the ways a network gets into (and out of) the engine.

* :mod:`~lrp_num.io.model_io`: the built-in models and the pickle-free ``.npz`` format;
* :mod:`~lrp_num.io.files`: output paths checked first, written atomically, all or none;
* :mod:`~lrp_num.io.heatmap`: relevance as a picture (extra ``heatmap``);
* :mod:`~lrp_num.io.onnx_import` (extra ``onnx``) and :mod:`~lrp_num.io.torch_import`
  (extra ``torch``, through ``torch.fx``), both building graphs with
  :mod:`~lrp_num.io.graph_builder`;
* :mod:`~lrp_num.io.torch_bridge` and :mod:`~lrp_num.io.torch_twin` (a network's PyTorch twin,
  for the audit) and :mod:`~lrp_num.io.torch_architectures` (reference ResNet and VGG
  definitions).

``lrp_num.io.to_torch(network, dtype=None)`` (a Sequential or a Graph -> a torch module) and
``lrp_num.io.from_torch(module, input_shape=None)`` (back) are the public bridge.

The modules are attributes on first use (PEP 562), so the optional libraries are imported only
by what needs them.
"""

import importlib as _importlib

SUBMODULES = ("files", "graph_builder", "heatmap", "model_io", "onnx_import", "torch_architectures",
              "torch_bridge", "torch_import", "torch_twin")


#: functions reachable as ``lrp_num.io.NAME`` (torch imported only when they run)
FUNCTIONS = {"to_torch": "torch_bridge", "from_torch": "torch_bridge"}


def __getattr__(name: str):
    if name in FUNCTIONS:
        return getattr(_importlib.import_module(f"{__name__}.{FUNCTIONS[name]}"), name)
    if name in SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
