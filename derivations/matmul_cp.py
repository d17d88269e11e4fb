"""Matrix product C = A B with A held constant (CP-LRP's A V): LRP-epsilon on the sum over k, all to B.

CP-LRP treats the attention weights A = softmax(Q K^T / sqrt d) as constants, so A V is linear in
V: the first-order Taylor term of A_ik V_kj in V_kj at the root 0 is the whole product, and
V_kj receives A_ik V_kj / (C_ij + eps sign C_ij) R_ij; A (and the softmax, Q K^T, q, k behind it)
receives nothing (Ali et al. 2022, ICML, Sec. 3). The stabiliser absorbs eps / (|C_ij| + eps) R_ij.
"""

from lrp_sym import Status, eps
from lrp_sym.attention import MatrixProductConstant

RULE = MatrixProductConstant(
    name="matmul_cp",
    title="matrix product with the first factor held constant, LRP-epsilon (CP-LRP)",
    paper="Ali et al. 2022, XAI for Transformers: better explanations through conservative propagation, "
          "ICML, Sec. 3",
    held="first",
    defaults={eps: 1e-6},
    expected={"conservation": Status.REFUTED},
)
