"""L_p pooling x_j = (sum_i x_i^p)^(1/p) on x > 0: gradient times input is exact (Euler, x_j is
1-homogeneous), giving R_i = x_i^p / sum_i' x_i'^p R_j.

Montavon et al. (2017), Pattern Recognition 65, 211-222, Sec. 5 (p-norm pooling, Eq. 15).
"""

from lrp_sym.layers import LpPooling

RULE = LpPooling(
    name="lppool",
    title="L_p pooling (gradient x input)",
    paper="Montavon et al. 2017, Pattern Recognition 65, Sec. 5",
)
