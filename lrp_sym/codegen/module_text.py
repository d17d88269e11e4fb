"""Text shared by the node-rule printers (element-wise, normalisation, attention kernels).

* :func:`module_head`: a generated module's opening: the generator's header, the module
  docstring (title, paper, the rule in words) and the imports;
* :func:`prune_unused`: drops the assignments of a printed function body that no later
  statement reads (a derivation may define a quantity, say the mean of RMSNorm, that one
  norm's formula never uses).
"""

from __future__ import annotations

import re
from typing import Sequence

from lrp_sym.derivation import Derivation

#: the hand-written run time every generated kernel imports (as ``kernel_runtime``)
RUNTIME_IMPORT = "from lrp_num.engine import kernel_runtime"

_ASSIGNMENT = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*) = ")


def module_head(derivation: Derivation, header: str, title: str, lines: Sequence[str],
                imports: Sequence[str] = (RUNTIME_IMPORT,)) -> list[str]:
    """The opening lines of a generated module, up to its first constant.

    Parameters
    ----------
    derivation : Derivation
        Its ``title`` and ``paper`` open the docstring.
    header : str
        The generator's header (source, "do not edit", how to regenerate).
    title : str
        What follows the derivation's title on the docstring's first line (its end included).
    lines : sequence of str
        The docstring's body after the paper (the rule in words).
    imports : sequence of str
        The import lines; one blank line follows them.
    """
    return [header.rstrip("\n"), f'"""{derivation.title}{title}', "", derivation.paper, "",
            *lines, '"""', "", *imports, ""]


def prune_unused(lines: Sequence[str]) -> list[str]:
    """``lines`` without the plain assignments ``name = ...`` whose name no later line reads.

    Repeated until nothing changes (removing one assignment may leave another unread). Only
    whole-line assignments at any indent are candidates; a name counts as read when it occurs
    as a word in any later line.
    """
    kept = list(lines)
    while True:
        for position, line in enumerate(kept):
            match = _ASSIGNMENT.match(line)
            if match is None:
                continue
            word = re.compile(rf"\b{re.escape(match.group(2))}\b")
            if not any(word.search(later) for later in kept[position + 1:]):
                del kept[position]
                break
        else:
            return kept


__all__ = ["RUNTIME_IMPORT", "module_head", "prune_unused"]
