"""Certified enclosures of LRP relevance in ball arithmetic (python-flint's Arb; the ``certified`` extra).

* :mod:`~lrp_num.certified.balls`: exact conversion of float64 data to balls, the working
  precision, decisions that a ball either makes or leaves undecided;
* :mod:`~lrp_num.certified.layers`: one node's relevance by its rule's definition, in balls;
* :mod:`~lrp_num.certified.network`: the forward and relevance passes over a network's nodes
  (:func:`explain_balls`);
* :mod:`~lrp_num.certified.local`: one layer's contributions R_ij for chosen output neurons,
  given the relevance above (:func:`layer_contributions`, for layer-local verification);
* :mod:`~lrp_num.certified.sampled`: the summed contributions of a node's sampled neurons with
  the sums over connections as ``arb_mat`` products (the arb path of ``lrp verify --local``);
* :mod:`~lrp_num.certified.bounds`: proved error bounds of the float64 engine, per node.

python-flint is imported on first use; without it every entry raises
:class:`lrp_num.errors.MissingDependencyError` naming the extra.
"""

from lrp_num.certified.balls import EXTRA, require_flint
from lrp_num.certified.network import CertifiedResult, explain_balls, prepare_balls

__all__ = ["CertifiedResult", "EXTRA", "explain_balls", "prepare_balls", "require_flint"]
