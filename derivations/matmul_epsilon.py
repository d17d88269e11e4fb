"""Matrix product C = A B (Q K^T, A V): LRP-epsilon on the sum over k, uniform on each product.

R_{A_ik} and R_{B_kj} each receive A_ik B_kj / (C_ij + eps sign C_ij) R_ij / 2 from entry ij
(Achtibat et al. 2024, AttnLRP, ICML, Prop. 3.3). The stabiliser absorbs
eps / (|C_ij| + eps) R_ij; with eps -> 0 it is conservative.
"""

from lrp_sym import Status, eps
from lrp_sym.attention import MatrixProductEpsilon

RULE = MatrixProductEpsilon(
    name="matmul_epsilon",
    title="matrix product, LRP-epsilon then uniform (AttnLRP)",
    paper="Achtibat et al. 2024, AttnLRP, ICML, Prop. 3.3",
    defaults={eps: 1e-6},
    expected={"conservation": Status.REFUTED},
)
