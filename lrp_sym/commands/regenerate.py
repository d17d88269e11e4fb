"""``lrp regenerate``: re-derive every rule, rewrite the generated kernels and the docs pages.

    lrp regenerate                       # lrp_num/_generated and docs/rules from derivations/
    lrp regenerate --check               # write nothing; diff what is stale, exit 1 if any
    lrp regenerate --derivations DIR --out OUT [--docs DOCS]   # a user's own rules

Kernels written to OUT load with ``lrp_num.engine.kernels.load_kernel(name, folder=OUT)``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from lrp_num.errors import LRPError
from lrp_sym.registry import checkout_root

#: the shipped kernels, next to the packages in a checkout and in an installed package alike
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "lrp_num" / "_generated"
#: the docs pages belong to a source checkout; an installed package has none (None)
DEFAULT_DOCS = checkout_root() / "docs" / "rules" if checkout_root() is not None else None
#: said once when the shipped docs pages are skipped because the package is installed
NO_DOCS_NOTE = ("the docs pages (docs/rules) are part of a source checkout, not of an installed "
                "package: kernels only")


class RegenerateError(LRPError):
    """Bad input to ``lrp regenerate``: no such folder, a broken derivation, a non-separable q."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--derivations", metavar="DIR",
                        help="folder of derivation files (default: the shipped derivations/)")
    parser.add_argument("--out", metavar="DIR",
                        help="kernel folder (default: lrp_num/_generated; required with "
                             "--derivations)")
    parser.add_argument("--docs", metavar="DIR",
                        help="docs folder (default: docs/rules when neither --derivations nor "
                             "--out is given, else no docs)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing: print a diff of anything stale, exit 1 if any")


def _command(args: argparse.Namespace, out: Path, docs: Path | None) -> str:
    """The command that regenerates these files, for their headers.

    The shipped derivations always name plain ``lrp regenerate``, wherever the output goes, so
    a generation into a temporary folder is byte-identical to the committed files. A user's
    derivations are named relative to the kernel folder (``--out .``, run there), so the
    headers do not depend on how the paths were spelled or where the command was run.
    """
    if args.derivations is None:
        return "lrp regenerate"
    home = out.resolve()
    words = ["lrp", "regenerate", "--derivations", _relative(args.derivations, home), "--out", "."]
    if docs is not None:
        words += ["--docs", _relative(docs, home)]
    return shlex.join(words) + "  (in the kernel folder)"


def _relative(path: Path, home: Path) -> str:
    return Path(os.path.relpath(path.resolve(), home)).as_posix()


def _typed_command(args: argparse.Namespace) -> str:
    """The command as the user spelled it (for messages, never for file contents)."""
    words = ["lrp", "regenerate"]
    for flag in ("derivations", "out", "docs"):
        value = getattr(args, flag)
        if value is not None:
            words += [f"--{flag}", str(value)]
    return shlex.join(words)


def _check_folder(path: Path, flag: str, writable: bool) -> None:
    """``path`` must be a folder or not exist yet, with its nearest existing ancestor a folder;
    with ``writable``, this user must be allowed to write there (the folder, or the ancestor
    it will be created in). Root passes every permission check: a write that still fails is
    caught when it happens (see :func:`run`)."""
    if path.exists() and not path.is_dir():
        raise RegenerateError(f"{flag} {str(path)!r} is a file, not a folder")
    for ancestor in (path.absolute(), *path.absolute().parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise RegenerateError(f"{flag} {str(path)!r}: {str(ancestor)!r} is a file, "
                                      f"not a folder")
            if writable and not os.access(ancestor, os.W_OK | os.X_OK):
                raise RegenerateError(f"{flag} {str(path)!r}: cannot write in {str(ancestor)!r} "
                                      "(permission denied)")
            break


def _skips_shipped_docs(args: argparse.Namespace) -> bool:
    """True when the shipped docs pages would be generated but this is an installed package."""
    shipped = args.derivations is None and args.out is None
    return shipped and args.docs is None and DEFAULT_DOCS is None


def _targets(args: argparse.Namespace) -> tuple[Path, Path | None]:
    for flag in ("derivations", "out", "docs"):  # kept as typed until here: "" is not "."
        value = getattr(args, flag)
        if value is not None:
            if not value:
                raise RegenerateError(f"--{flag} is empty: name a folder")
            setattr(args, flag, Path(value))
    if args.derivations is not None and args.out is None:
        raise RegenerateError("--derivations needs --out: the shipped kernels are generated "
                              "only from the shipped derivations")
    out = args.out if args.out is not None else DEFAULT_OUT
    shipped = args.derivations is None and args.out is None
    docs = args.docs if args.docs is not None else (DEFAULT_DOCS if shipped else None)
    _check_folder(out, "--out", writable=not args.check)
    if docs is not None:
        _check_folder(docs, "--docs", writable=not args.check)
    return out, docs


def run(args: argparse.Namespace) -> int:
    from lrp_sym.codegen import (CodegenError, build_outputs, derive_folder, diff_outputs,
                                 write_outputs)
    from lrp_sym.registry import DerivationFileError

    out, docs = _targets(args)
    try:
        sources = derive_folder(args.derivations)
        outputs = build_outputs(sources, command=_command(args, out, docs), docs=docs is not None)
    except (DerivationFileError, CodegenError) as error:
        raise RegenerateError(str(error)) from None

    if _skips_shipped_docs(args):
        print(f"lrp regenerate: {NO_DOCS_NOTE}")
    plan = [(out, outputs.kernels, ".py")]
    if docs is not None:
        plan.append((docs, outputs.docs, ".md"))
    if args.check:
        diffs = [d for folder, files, suffix in plan for d in diff_outputs(folder, files, suffix)]
        if diffs:
            sys.stdout.write("".join(diffs))
            print(f"lrp regenerate: {len(diffs)} generated file(s) are stale; update with: "
                  f"{_typed_command(args)}", file=sys.stderr)
            return 1
        print(f"lrp regenerate: up to date ({len(outputs.kernels)} kernel files"
              + (f", {len(outputs.docs)} docs pages" if docs is not None else "") + ")")
        return 0
    try:
        changes = [c for folder, files, suffix in plan for c in write_outputs(folder, files, suffix)]
    except OSError as error:  # a folder that cannot be created (a file: OutputPathError, one line)
        raise RegenerateError(f"cannot write {str(error.filename or out)!r}: "
                              f"{error.strerror or error}") from None
    for change in changes:
        print(change)
    print(f"lrp regenerate: {len(changes)} file(s) changed, {len(sources)} derivations")
    return 0
