"""lrp_num: the numeric LRP engine (NumPy only at run time; torch and CuPy arrays through
:mod:`lrp_num.backends`, imported when such an array arrives).

Its folders follow the pipeline: :mod:`lrp_num.layers` (the layer types), :mod:`lrp_num.engine`
(networks, chains :class:`Sequential` or graphs :class:`Graph`, and relevance propagation with
kernels generated from the derivations, :func:`explain`), :mod:`lrp_num.reference` (a
high-precision mpmath reference that follows the definitions), :mod:`lrp_num.io` (model files
and model import), :mod:`lrp_num.audit` (other LRP libraries against the derivations) and
:mod:`lrp_num.commands` (the ``lrp`` command line). Shared by all: :mod:`lrp_num.errors`,
:mod:`lrp_num.checks`, :mod:`lrp_num.progress`, :mod:`lrp_num.testing` (the reference in other test suites) and :mod:`lrp_num.verify`.
"""

import importlib as _importlib
from types import ModuleType as _ModuleType

from lrp_num.engine.composites import COMPOSITES, Composite, LayerRule
from lrp_num.engine.conventions import Conventions
from lrp_num.engine.explain import Explanation, explain, explain_details
from lrp_num.engine.graph import Graph, Node
from lrp_num.engine.network import Sequential
from lrp_num.io.model_io import load_builtin, load_npz, save_npz

__all__ = [
    "COMPOSITES", "Composite", "Conventions", "Explanation", "Graph", "LayerRule", "Node",
    "Sequential", "explain", "explain_details", "load_builtin", "load_npz", "save_npz",
]

#: submodules reachable as attributes after ``import lrp_num`` (``lrp_num.reference.explain``),
#: imported on first use (PEP 562) so that ``import lrp_num`` stays NumPy-only and quick
LAZY_SUBMODULES = (
    "audit", "backends", "checks", "commands", "engine", "errors", "io", "layers", "progress", "reference",
    "testing", "verify",
)


def __getattr__(name: str) -> _ModuleType:
    if name in LAZY_SUBMODULES:
        return _importlib.import_module(f"lrp_num.{name}")
    raise AttributeError(f"module 'lrp_num' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({name for name in globals() if not name.startswith("_")} | set(LAZY_SUBMODULES))
