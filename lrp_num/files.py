"""Writing output files safely: check the path first, then write through a temporary file.

Used by the command line and the heatmaps, so that a mistake in an output path is one clear
error before any work, and no half-written file is ever left behind.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from lrp_num.errors import OutputPathError


def check_output_path(path: str | os.PathLike, what: str) -> Path:
    """Raise LRPError unless ``path`` can be written as a file: its folder exists and is a
    folder, and ``path`` itself is not a folder. Writes nothing."""
    raw = os.fspath(path)
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if raw.endswith(("/", os.sep)) or path.is_dir():
        raise OutputPathError(f"cannot write {what} to {raw!r}: it is a folder; name a file")
    if not folder.exists():
        raise OutputPathError(f"cannot write {what} to {raw!r}: its folder does not exist")
    if not folder.is_dir():
        raise OutputPathError(f"cannot write {what} to {raw!r}: {str(folder)!r} is not a folder")
    return path


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(stream)`` on a temporary file in ``path``'s folder, then rename it to ``path``.

    No half-written file is ever left: on any error the temporary file is removed. The file
    gets the usual mode (0o666 less the umask), not the private 0o600 of a temporary file.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".",
                                         prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` with :func:`write_atomic`."""
    return write_atomic(path, lambda stream: stream.write(data))


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` in .npy format, in memory."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Save ``array`` to ``path`` through a temporary file, so no half-written file is left."""
    return write_bytes_atomic(path, npy_bytes(array))


