"""Auditing other LRP implementations against this toolkit's derivations and reference.

``lrp audit`` (:mod:`lrp_num.commands.audit`) runs a library's own LRP on a model converted by
:mod:`lrp_num.io.torch_bridge`, records the relevance at every layer boundary, and compares it
with the mpmath reference (:mod:`lrp_num.reference`) twice: under the library's documented
behaviour (:mod:`lrp_num.audit.profiles`) and under the deep Taylor derivation. On graph models
(:mod:`lrp_num.audit.graph_compare`) it records relevance at every node's output and every Add
node's addends (:mod:`lrp_num.audit.node_recorder`) and reports per node. Torch, zennit,
captum and autoLRP are imported only inside the adapters. A saved attribution is compared with
every profile, the "bias as a neuron" convention and a user's convention file
(:mod:`lrp_num.audit.convention_file`), optionally layer by layer
(:mod:`lrp_num.audit.layer_files`); :mod:`lrp_num.audit.plot` draws a report.
"""

from lrp_num.audit.compare import AuditReport, LayerAudit, audit_attribution, audit_library
from lrp_num.audit.library_run import LibraryRun

__all__ = ["AuditReport", "LayerAudit", "LibraryRun", "audit_attribution", "audit_library"]
