"""Average pooling x_j = (1/n) sum_i x_i: the weight 1/n cancels, R_i = x_i / sum_i' x_i' R_j.

Montavon et al. (2019), "Layer-wise relevance propagation: an overview", LNCS 11700, Sec. 10.3
(pooling layers treated as linear layers with the z-rule).

Global and adaptive average pooling are this layer: global pooling is one window, the whole
feature map (n = H W), and adaptive pooling to an output size has one window per output cell
(rows floor(p H / H_out) to ceil((p + 1) H / H_out) - 1, likewise for columns), windows that may
differ in size and overlap. The derivation holds for every window size n, so each output cell
splits its relevance over its own window by the z-rule.
"""

from lrp_sym import n
from lrp_sym.layers import LinearPooling

RULE = LinearPooling(
    name="avgpool",
    title="average pooling (z-rule)",
    paper="Montavon et al. 2019, LNCS 11700, Sec. 10.3",
    weight=1 / n,
    notes=(
        "Global and adaptive average pooling are this layer. Global average pooling is one "
        "window covering the whole feature map (n = H W per channel). Adaptive average pooling "
        "to an output size H_out x W_out has one window per output cell, rows floor(p H / H_out) "
        "to ceil((p + 1) H / H_out) - 1 and likewise for columns; the windows may differ in size "
        "and overlap. The derivation holds for every window size n (symbolic), so each output "
        "cell splits its relevance over its own window by the z-rule, and an input in several "
        "windows sums what it receives from each.",
    ),
)
