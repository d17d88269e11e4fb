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
  denominators, residual graphs;
* :func:`to_torch` / :func:`from_torch`: our networks as torch modules and back;
* a pytest plugin (:mod:`~lrp_num.testing.pytest_plugin`, registered as the entry point
  ``lrp_num``): the fixture ``lrp_reference`` and the option ``--lrp-dps``.

Needs ``hypothesis`` for the strategies, torch for torch models; ``import lrp_num`` never imports
this package.
"""

from lrp_num.io.torch_bridge import from_torch, to_torch
from lrp_num.testing.library_rules import (LibraryComposite, from_zennit, library_conventions, library_rule,
                                           our_rule)
from lrp_num.testing.reference_check import DEFAULTS, as_network, assert_matches_reference
from lrp_num.testing.strategies import *  # noqa: F401,F403 - the strategies are this package's API
from lrp_num.testing.strategies import __all__ as _strategies

__all__ = ["DEFAULTS", "LibraryComposite", "as_network", "assert_matches_reference", "from_torch", "from_zennit",
           "library_conventions", "library_rule", "our_rule", "to_torch", *_strategies]
