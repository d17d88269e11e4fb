"""Product y = a b of two activations (gating): the uniform rule, R_a = R_b = R / 2.

The Shapley values of the bilinear f(a, b) = a b with baseline 0 are (ab/2, ab/2); with the
relevance model R = c y each factor gets R / 2 (Achtibat et al. 2024, AttnLRP, ICML,
Prop. 3.3). Conservative; gradient x input would count R twice.
"""

from lrp_sym.attention import ProductUniform

RULE = ProductUniform(
    name="product_uniform",
    title="product of two activations, uniform rule (Shapley)",
    paper="Achtibat et al. 2024, AttnLRP, ICML, Prop. 3.3; Shapley 1953",
)
