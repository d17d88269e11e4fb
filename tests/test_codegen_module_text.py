"""The text helpers the node-rule printers share: the module head, and pruning of unread
assignments (the generated kernels assign nothing they do not read)."""

from __future__ import annotations

import ast
from pathlib import Path

from lrp_sym.codegen.module_text import RUNTIME_IMPORT, module_head, prune_unused
from lrp_sym.derivation import Derivation

GENERATED = Path(__file__).resolve().parent.parent / "lrp_num" / "_generated"


def test_prune_unused_drops_unread_assignments_and_what_only_they_read():
    lines = ["    n = x.shape[-1]",
             "    mean = xp.sum(x, axis=-1)/n",   # read only by the unread `centred`
             "    centred = x - mean",
             "    sigma = xp.sqrt(xp.sum(x**2, axis=-1)/n)",
             "    if y is None:",
             "        y = x/sigma",
             "    y_total = 0",                    # a longer name that starts like `y`
             "    return y"]
    assert prune_unused(lines) == [lines[0], lines[3], lines[4], lines[5], lines[7]]
    assert prune_unused(["a = 1", "b = a", "return b"]) == ["a = 1", "b = a", "return b"]


def test_module_head_opens_with_the_header_docstring_and_imports():
    derivation = Derivation(name="rule_x", title="A rule", paper="Someone 2024", neuron="softmax")
    lines = module_head(derivation, "# header\n", " (generated).", ["R_i = x_i"],
                        (RUNTIME_IMPORT, "from lrp_num.errors import ShapeError"))
    assert lines == ["# header", '"""A rule (generated).', "", "Someone 2024", "", "R_i = x_i", '"""',
                     "", RUNTIME_IMPORT, "from lrp_num.errors import ShapeError", ""]


def test_generated_kernels_assign_no_name_they_never_read():
    for path in sorted(GENERATED.glob("*.py")):
        tree = ast.parse(path.read_text())
        for function in (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)):
            names = [node for node in ast.walk(function) if isinstance(node, ast.Name)]
            stored = {node.id for node in names if isinstance(node.ctx, ast.Store)}
            read = {node.id for node in names if not isinstance(node.ctx, ast.Store)}
            assert stored <= read, f"{path.name}: {function.name} assigns {sorted(stored - read)} unread"
