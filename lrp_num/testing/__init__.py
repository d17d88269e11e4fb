"""The reference inside other people's test suites: strategies, one assertion, a pytest plugin.

``from lrp_num.testing import assert_matches_reference, torch_networks`` is all a downstream
suite needs (docs/testing.md has complete suites for zennit and captum):

* :func:`assert_matches_reference` (:mod:`~lrp_num.testing.reference_check`): a relevance from
  any LRP code against the mpmath reference, within the rounding bound of its dtype;
* :func:`library_rule`, :func:`our_rule`, :func:`library_conventions`, :func:`from_zennit`
  (:mod:`~lrp_num.testing.library_rules`): another library's rules and composites in our terms,
  read off the audit's profiles;
* hypothesis strategies (:mod:`~lrp_num.testing.strategies`): random networks (ours, or torch
  modules with :func:`torch_networks`), batched inputs per domain in float32 or float64, near-zero
  denominators, residual graphs, small random transformers (:func:`transformer_graphs`);
* :func:`to_torch` / :func:`from_torch`: our networks as torch modules and back;
  :func:`import_zennit` (zennit without torchvision) and :func:`captum_pass_through_rule` (a
  captum rule for ``nn.Flatten``) for the suites of docs/testing.md;
* a pytest plugin (:mod:`~lrp_num.testing.pytest_plugin`, registered as the entry point
  ``lrp_num``): the fixture ``lrp_reference`` and the option ``--lrp-dps``.

Needs ``hypothesis`` for the strategies, torch for torch models; ``import lrp_num`` never imports
this package.
"""

import importlib as _importlib

from lrp_num.audit.captum_adapter import pass_through_rule as captum_pass_through_rule
from lrp_num.audit.zennit_adapter import import_zennit
from lrp_num.io.torch_bridge import from_torch, to_torch
from lrp_num.testing.library_rules import (LibraryComposite, from_zennit, library_conventions, library_rule,
                                           our_rule)
from lrp_num.testing.reference_check import DEFAULTS, as_network, assert_matches_reference

#: the strategies' names, imported from :mod:`lrp_num.testing.strategies` on first use (PEP 562),
#: so that the pytest plugin, which imports this package, needs no hypothesis
STRATEGIES = ("BIAS_KINDS", "DOMAINS", "DTYPES", "MIN_MAGNITUDE", "NORM_PLACEMENTS", "POOLING", "TINY",
              "TRANSFORMER_ACTIVATIONS", "TRANSFORMER_MIN_MAGNITUDE", "TRANSFORMER_NORMS", "biases", "boxes",
              "dense_layers", "dtype_name", "inputs", "min_magnitude", "near_zero_layers", "networks",
              "networks_with_inputs", "residual_networks", "torch_networks", "transformer_graphs",
              "transformer_graphs_with_inputs", "with_positive_output")


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    strategies = _importlib.import_module(f"{__name__}.strategies")
    if name == "strategies":
        return strategies
    if hasattr(strategies, name):  # every name of the former module lrp_num/testing.py
        return getattr(strategies, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULTS", "LibraryComposite", "as_network", "assert_matches_reference", "captum_pass_through_rule",
           "from_torch", "from_zennit", "import_zennit", "library_conventions", "library_rule", "our_rule",
           "to_torch", *STRATEGIES]
