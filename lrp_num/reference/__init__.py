"""High-precision reference for LRP and deep Taylor decomposition, computed by the definition.

It recomputes what :func:`lrp_num.explain` computes, in mpmath at ``dps`` significant digits,
along a code path that shares nothing with the engine's kernels:

* :mod:`~lrp_num.reference.linear`: every linear layer (Dense, Conv2d, sum, average, adaptive
  and global average pooling, ChannelAffine) as an explicit matrix, stored row by row, built
  from the layer's weights and window geometry by index arithmetic of its own, batch norms
  folded in mpmath;
* :mod:`~lrp_num.reference.directions`: each root-point rule's definition, its search
  direction v_ij and the bias direction v_0j of each bias convention;
* :mod:`~lrp_num.reference.roots`: the root condition
  g_j(t) = sum_i (x_i - t v_ij) w_ij + (1 - t v_0j) b_j - t a_j = 0 solved numerically
  (Montavon et al. 2017, Pattern Recognition 65, Sec. 3-4), the stabiliser, the precision;
* :mod:`~lrp_num.reference.composites`: which rule each node gets, planned by the reference
  from each composite's written definition, never by the engine's planner;
* :mod:`~lrp_num.reference.node_rules`: the relevance one node passes to its inputs under its
  rule (root-point rules, formula rules after Bach et al. 2015, max pooling, Add nodes);
* :mod:`~lrp_num.reference.backward`: the network in mpmath, the forward pass, the gradient and
  the relevance pass over a graph's nodes in reverse topological order;
* :mod:`~lrp_num.reference.api`: the public entries (:func:`explain`, :func:`explain_trace`,
  :func:`forward`, :func:`gradient`, :func:`root_point_membership`) and their checks;
* :mod:`~lrp_num.reference.taylor`: whole-function Taylor decomposition and sensitivity;
* :mod:`~lrp_num.reference.symbolic`: a second path, the derivations' symbolic R_ij evaluated in
  mpmath (imported on first use: it loads the derivations with SymPy).
"""

import importlib as _importlib
from types import ModuleType as _ModuleType

from lrp_num.reference.api import (LayerMembership, ReferenceResult, explain, explain_trace, forward, gradient,
                                   layer_plan, root_point_membership)
from lrp_num.reference.backward import ReferenceNetwork, ReferenceNode, prepare
from lrp_num.reference.composites import COMPOSITE_DEFINITIONS, CompositeDefinition
from lrp_num.reference.directions import (ADD_RULES, FORMULA_RULES, ROOT_POINT_RULES, RULE_DEFAULTS, RULES,
                                          bias_direction)
from lrp_num.reference.linear import LinearMatrix, linear_matrix, to_float
from lrp_num.reference.node_rules import LayerTrace
from lrp_num.reference.roots import GUARD_DIGITS
from lrp_num.reference.taylor import TaylorDecomposition, sensitivity, whole_function_taylor

__all__ = [
    "ADD_RULES", "COMPOSITE_DEFINITIONS", "CompositeDefinition", "FORMULA_RULES", "GUARD_DIGITS", "RULES", "ROOT_POINT_RULES", "RULE_DEFAULTS",
    "LayerMembership", "LayerTrace", "LinearMatrix", "ReferenceNetwork", "ReferenceNode",
    "ReferenceResult", "TaylorDecomposition", "bias_direction", "explain", "explain_trace",
    "forward", "gradient", "layer_plan", "linear_matrix", "prepare", "root_point_membership",
    "sensitivity", "to_float", "whole_function_taylor",
]


def __getattr__(name: str) -> _ModuleType:
    if name == "symbolic":
        return _importlib.import_module(f"{__name__}.symbolic")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
