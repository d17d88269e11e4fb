"""Concatenation is routing: each input gets back the relevance of its own block.

Every output coordinate copies one input coordinate (a one-input neuron, weight 1, no bias), so
every root-point rule passes R_j whole to it (Montavon et al. 2017, Pattern Recognition 65,
root points; the one-input case as in affine_channel.py).
"""

from lrp_sym.graph_layers import Concatenation

RULE = Concatenation(
    name="concat",
    title="concatenation (relevance routed back)",
    paper="Montavon et al. 2017, Pattern Recognition 65 (root points of one-input neurons)",
)
