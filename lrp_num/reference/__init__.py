"""High-precision reference for LRP and deep Taylor decomposition, computed by the definition.

It recomputes what :func:`lrp_num.explain` computes, in mpmath, along a code path that shares
nothing with the engine's kernels (:mod:`lrp_num.reference.backward` states how). Its parts:

* :mod:`~lrp_num.reference.linear`: every linear layer as an explicit matrix;
* :mod:`~lrp_num.reference.backward`: the forward pass, the gradient and the relevance pass;
* :mod:`~lrp_num.reference.symbolic`: a second path, the derivations' symbolic R_ij evaluated in
  mpmath (imported on first use: it loads the derivations with SymPy).
"""

import importlib as _importlib
from types import ModuleType as _ModuleType

from lrp_num.reference.backward import (ADD_RULES, FORMULA_RULES, GUARD_DIGITS, RULE_DEFAULTS, RULES,
                                        ROOT_POINT_RULES, LayerMembership, LayerTrace, ReferenceNetwork,
                                        ReferenceNode, ReferenceResult, TaylorDecomposition,
                                        bias_direction, explain, explain_trace, forward, gradient,
                                        layer_plan, prepare, root_point_membership, sensitivity,
                                        to_float, whole_function_taylor)
from lrp_num.reference.linear import LinearMatrix, linear_matrix

__all__ = [
    "ADD_RULES", "FORMULA_RULES", "GUARD_DIGITS", "RULES", "ROOT_POINT_RULES", "RULE_DEFAULTS",
    "LayerMembership", "LayerTrace", "LinearMatrix", "ReferenceNetwork", "ReferenceNode",
    "ReferenceResult", "TaylorDecomposition", "bias_direction", "explain", "explain_trace",
    "forward", "gradient", "layer_plan", "linear_matrix", "prepare", "root_point_membership",
    "sensitivity", "to_float", "whole_function_taylor",
]


def __getattr__(name: str) -> _ModuleType:
    if name == "symbolic":
        return _importlib.import_module(f"{__name__}.symbolic")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
