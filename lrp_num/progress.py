"""Progress bars for long work (verify, audit, derive --all, the reference on many samples).

A thin layer over tqdm: the bar goes to stderr and is drawn only when stderr is a terminal, so
logs and CI runs stay quiet and stdout keeps only the results. :func:`print_above` prints a
line of results on stdout without tearing a bar that is being drawn.
"""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
    """Yield from ``iterable``, with a progress bar on stderr when stderr is a terminal.

    Parameters
    ----------
    iterable : iterable
        The work items.
    label : str
        What is being done ("verifying digits-mlp"), shown before the bar.
    total : int, optional
        The number of items (default: ``len(iterable)`` where it has one).
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    quiet = not sys.stderr.isatty() or (total is not None and total < 2)
    return iter(tqdm(iterable, desc=label, total=total, file=sys.stderr, leave=False,
                     disable=quiet, dynamic_ncols=True))


def print_above(text: str) -> None:
    """Print ``text`` on stdout, above any progress bar on the terminal (see tqdm.write)."""
    tqdm.write(text, file=sys.stdout)
