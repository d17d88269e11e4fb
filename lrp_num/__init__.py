"""lrp_num: the numeric LRP engine (NumPy only at run time).

Networks of :mod:`lrp_num.layers` (chains, :class:`Sequential`, or graphs, :class:`Graph`), relevance propagation with kernels generated from the
derivations (:func:`explain`), model files (:mod:`lrp_num.model_io`) and, in
:mod:`lrp_num.reference`, a high-precision mpmath reference that follows the definitions.
"""

import importlib as _importlib
from types import ModuleType as _ModuleType

from lrp_num.composites import COMPOSITES, Composite, LayerRule
from lrp_num.conventions import Conventions
from lrp_num.explain import Explanation, explain, explain_details
from lrp_num.graph import Graph, Node
from lrp_num.model_io import load_builtin, load_npz, save_npz
from lrp_num.network import Sequential

__all__ = [
    "COMPOSITES", "Composite", "Conventions", "Explanation", "Graph", "LayerRule", "Node",
    "Sequential", "explain", "explain_details", "load_builtin", "load_npz", "save_npz",
]

#: submodules reachable as attributes after ``import lrp_num`` (``lrp_num.reference.explain``),
#: imported on first use (PEP 562) so that ``import lrp_num`` stays NumPy-only and quick
LAZY_SUBMODULES = (
    "audit", "checks", "composites", "conventions", "errors", "files", "heatmap",
    "kernel_runtime", "kernels", "layers", "model_io", "network", "onnx_import", "operators",
    "profiles", "reference", "reference_symbolic", "testing", "torch_bridge", "verify",
)


def __getattr__(name: str) -> _ModuleType:
    if name in LAZY_SUBMODULES:
        return _importlib.import_module(f"lrp_num.{name}")
    raise AttributeError(f"module 'lrp_num' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({name for name in globals() if not name.startswith("_")} | set(LAZY_SUBMODULES))
