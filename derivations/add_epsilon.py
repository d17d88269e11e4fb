"""Addition y = sum_k a_k, epsilon-stabilised: R_k = a_k / (y + eps sign(y)) R.

LRP-epsilon (Bach et al. 2015, PLOS ONE 10(7), e0130140; Montavon et al. 2019, LNCS 11700,
Sec. 10.2.2) on the addition's unit weights, no bias. Not conservative: the stabiliser absorbs
eps / (|y| + eps) of R.
"""

from lrp_sym import Status, eps
from lrp_sym.graph_layers import AdditionEpsilon

RULE = AdditionEpsilon(
    name="add_epsilon",
    title="addition, LRP-epsilon",
    paper="Bach et al. 2015, PLOS ONE 10(7) e0130140; Montavon et al. 2019, LNCS 11700",
    defaults={eps: 0.25},
    expected={"conservation": Status.REFUTED, "positivity": Status.REFUTED},
)
