"""lrp_num: the numeric LRP engine (NumPy only at run time).

Networks of :mod:`lrp_num.layers` (chains, :class:`Sequential`, or graphs, :class:`Graph`), relevance propagation with kernels generated from the
derivations (:func:`explain`), model files (:mod:`lrp_num.model_io`) and, in
:mod:`lrp_num.reference`, a high-precision mpmath reference that follows the definitions.
"""

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
