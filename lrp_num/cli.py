"""The ``lrp`` command line: one dispatcher, one module per subcommand.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int`` and imports its
heavy dependencies (SymPy, matplotlib, torch) inside ``run``, so ``lrp explain`` never pays for
SymPy. A documented :class:`lrp_num.errors.LRPError` becomes one line on stderr and exit 2; an
empty path flag (``--out ""``) is such an error. When the reader of stdout goes away
(``lrp derive --all | head -1``) the command stops quietly with exit 141, as a command killed
by SIGPIPE does.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from typing import Sequence

from lrp_num.errors import DerivationScopeWarning, LRPError

#: subcommand name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "derive": ("lrp_sym.commands.derive", "derive a rule from its root point and prove its properties"),
    "regenerate": ("lrp_sym.commands.regenerate",
                   "re-derive every rule; rewrite the generated kernels and docs (--check: diff)"),
    "explain": ("lrp_num.commands.explain", "explain a model's prediction with LRP"),
    "verify": ("lrp_num.commands.verify", "compare the float64 engine with the high-precision reference"),
    "audit": ("lrp_num.commands.audit", "audit zennit, captum or a saved attribution against the reference"),
}


#: flags that name a file or folder; an empty string there is a mistake, never "no value"
PATH_FLAGS = ("input", "out", "model", "heatmap", "attribution", "architecture", "derivations", "docs", "convention",
              "layers", "plot")

#: exit status after a broken pipe: 128 + SIGPIPE, what the shell reports for a killed writer
BROKEN_PIPE_STATUS = 141


def check_path_flags(args: argparse.Namespace) -> None:
    """Raise LRPError naming the first path flag given as an empty string (``--out ""``)."""
    for flag in PATH_FLAGS:
        value = getattr(args, flag, None)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v for v in values):
            raise LRPError(f"--{flag} is empty: name a file" + (" or folder" if flag in
                                                                ("derivations", "docs", "layers") else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrp",
        description="Derive, generate and verify layer-wise relevance propagation rules.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


@contextlib.contextmanager
def _one_line_warnings(command: str):
    """Show each distinct DerivationScopeWarning once, as one line on stderr (``lrp explain:
    warning: ...``), instead of Python's file, line and source text."""
    seen: set[str] = set()
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, DerivationScopeWarning):
            return shown(message, category, filename, lineno, file, line)
        if str(message) not in seen:
            seen.add(str(message))
            print(f"lrp {command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_path_flags(args)
        with _one_line_warnings(args.command):
            status = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
        return status
    except BrokenPipeError:
        # the reader (head, less) is gone: point stdout at devnull so the flush at exit is quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE_STATUS
    except LRPError as error:
        print(f"lrp {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lrp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
