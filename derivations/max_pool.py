"""Max pooling as the p -> infinity limit of L_p pooling: winner-take-all, m tied maxima get
1/m of R_j each, every other input 0.

Montavon et al. (2017), Pattern Recognition 65, 211-222, Sec. 5 (max pooling as the limit of
p-norm pooling).
"""

from lrp_sym.layers import MaxPooling

RULE = MaxPooling(
    name="maxpool",
    title="max pooling (winner-take-all, ties split)",
    paper="Montavon et al. 2017, Pattern Recognition 65, Sec. 5",
)
