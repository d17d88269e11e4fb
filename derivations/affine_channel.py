"""Per-channel affine layer y_c = s_c x_c + t_c (batch norm that cannot be folded), derived as a
diagonal linear layer: w_cc = s_c = gamma / sqrt(var + eps), b_c = beta - mu s_c.

Every root-point rule gives R_c whole to x_c where its root point exists; LRP-epsilon keeps
s x / (s x + t + eps) R. Ioffe and Szegedy (2015), ICML; Montavon et al. (2017), Pattern
Recognition 65 (root points); Montavon et al. (2019), LNCS 11700, Sec. 10.
"""

from lrp_sym import (RatioTerm, b, gamma, h_i, indicator_negative, indicator_positive, j,
                     l_i, w_ij, x_i)
from lrp_sym.graph_layers import AffineChannel

RULE = AffineChannel(
    name="affine_channel",
    title="per-channel affine layer (batch norm not after a linear layer)",
    paper="Ioffe & Szegedy 2015, ICML; Montavon et al. 2017, Pattern Recognition 65; "
          "Montavon et al. 2019, LNCS 11700, Sec. 10",
    # the directions of w_square.py, z_plus.py, z_box.py, lrp_zero.py, gamma.py, flat.py
    root_point_directions={
        "w2": w_ij,
        "zplus": x_i * indicator_positive(w_ij),
        "zbox": (x_i - l_i) * indicator_positive(w_ij) + (x_i - h_i) * indicator_negative(w_ij),
        "lrp0": x_i,
        "gamma": x_i * (1 + gamma * indicator_positive(w_ij)),
        "flat": w_ij,
    },
    unit_weight_rules=("flat",),
    # the terms of epsilon.py and bias_neuron.py
    ratio_rules={
        "epsilon": (RatioTerm(1, x_i * w_ij, bias_share=b[j]), True),
        "bias_neuron": (RatioTerm(1, x_i * w_ij, bias_share=b[j]), False),
    },
)
