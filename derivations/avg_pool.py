"""Average pooling x_j = (1/n) sum_i x_i: the weight 1/n cancels, R_i = x_i / sum_i' x_i' R_j.

Montavon et al. (2019), "Layer-wise relevance propagation: an overview", LNCS 11700, Sec. 10.3
(pooling layers treated as linear layers with the z-rule).
"""

from lrp_sym import n
from lrp_sym.layers import LinearPooling

RULE = LinearPooling(
    name="avgpool",
    title="average pooling (z-rule)",
    paper="Montavon et al. 2019, LNCS 11700, Sec. 10.3",
    weight=1 / n,
)
