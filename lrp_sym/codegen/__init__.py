"""Code generation: derivations become NumPy kernels (``lrp_num/_generated``) and docs pages.

Three places that never blur: the derivations (``derivations/``, the mathematics), this
generator, and the generated package, which needs only NumPy at run time.

* :func:`separate` writes q_ij as input factors times named weight transforms;
* :func:`emit_ratio_kernel` / :func:`emit_layer_kernel` print one kernel module, and
  :func:`emit_root_point_condition` a root-point rule's ``root_point_in_domain``;
* :func:`build_outputs` produces every file; :func:`write_outputs` / :func:`diff_outputs`
  apply them to, or compare them with, a folder (``lrp regenerate [--check]``).
"""

from lrp_sym.codegen.errors import CodegenError
from lrp_sym.codegen.layer_kernels import LAYER_KERNELS, emit_layer_kernel
from lrp_sym.codegen.package import (DEFAULT_COMMAND, MARKER, Outputs, Source, build_outputs,
                                     check_sympy_version, derive_folder, diff_outputs,
                                     owned_files, write_outputs)
from lrp_sym.codegen.printer import KernelPrinter, print_array_api
from lrp_sym.codegen.ratio_kernel import emit_ratio_kernel, kernel_signature
from lrp_sym.codegen.root_point_condition import (condition_signature,
                                                  emit_root_point_condition)
from lrp_sym.codegen.separation import TRANSFORMS, SeparableTerm, separate

__all__ = [
    "CodegenError", "DEFAULT_COMMAND", "KernelPrinter", "LAYER_KERNELS", "MARKER", "Outputs",
    "SeparableTerm", "Source", "TRANSFORMS", "build_outputs", "check_sympy_version",
    "condition_signature", "derive_folder", "diff_outputs", "emit_layer_kernel",
    "emit_ratio_kernel", "emit_root_point_condition", "kernel_signature", "owned_files",
    "print_array_api", "separate", "write_outputs",
]
