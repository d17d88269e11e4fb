"""Writing output files safely: check the path first, then write through a temporary file.

Used by the command line, the model files and the heatmaps, so that a mistake in an output path
is one clear error before any work, a failure while writing (permissions, a full disk) is one
clear :class:`OutputPathError`, and no half-written file is ever left behind. A command with
several outputs writes them with :func:`write_all_or_none`: all of them land, or none does.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Mapping

import numpy as np

from lrp_num.errors import OutputPathError


def check_output_path(path: str | os.PathLike, what: str) -> Path:
    """Raise OutputPathError unless ``path`` can be written as a file: its folder exists, is a
    folder and is writable for this user, and ``path`` itself is not a folder. Writes nothing.

    A write can still fail later (a read-only file system, a full disk; root passes every
    permission check): the writers below turn that into OutputPathError too."""
    raw = os.fspath(path)
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if raw.endswith(("/", os.sep)) or path.is_dir():
        raise OutputPathError(f"cannot write {what} to {raw!r}: it is a folder; name a file")
    if not folder.exists():
        raise OutputPathError(f"cannot write {what} to {raw!r}: its folder does not exist")
    if not folder.is_dir():
        raise OutputPathError(f"cannot write {what} to {raw!r}: {str(folder)!r} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {what} to {raw!r}: its folder is not writable")
    return path


def check_distinct(outputs: Mapping[str, str | os.PathLike | None],
                   inputs: Mapping[str, str | os.PathLike | None]) -> None:
    """Raise OutputPathError when an output names the same file as an input or another output.

    ``outputs`` and ``inputs`` map a flag (``"--out"``) to its path (None: not given). Paths are
    compared resolved (symbolic links, ``..``, relative spellings), so ``--input x.npy --out
    ./x.npy`` is refused rather than overwriting the input.
    """
    seen: dict[Path, str] = {}
    for flag, path in inputs.items():
        if path is not None:
            seen.setdefault(Path(path).resolve(), flag)
    for flag, path in outputs.items():
        if path is None:
            continue
        resolved = Path(path).resolve()
        if resolved in seen:
            other = seen[resolved]
            kind = "input" if other in inputs else "output"
            raise OutputPathError(f"{flag} {os.fspath(path)!r} is the same file as the {kind} "
                                  f"{other}; it would be overwritten: name another file")
        seen[resolved] = flag


def _cannot_write(path: str | os.PathLike, error: OSError) -> OutputPathError:
    reason = error.strerror or str(error)
    return OutputPathError(f"cannot write {os.fspath(path)!r}: {reason}")


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(stream)`` on a temporary file in ``path``'s folder, then rename it to ``path``.

    No half-written file is ever left: on any error the temporary file is removed. The file
    gets the usual mode (0o666 less the umask), not the private 0o600 of a temporary file.

    Raises
    ------
    OutputPathError
        The folder cannot be written, or writing or renaming fails (an OSError: permissions,
        a full disk, ``path`` a folder).
    """
    path = Path(path)
    temporary = _staged(path, write)
    try:
        os.replace(temporary, path)
    except OSError as error:
        raise _cannot_write(path, error) from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def _staged(path: Path, write: Callable[[BinaryIO], None]) -> str:
    """A temporary file next to ``path`` holding what ``write`` wrote (mode as a normal file)."""
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".",
                                             prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _cannot_write(path, error) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
    except OSError as error:
        os.unlink(temporary)
        raise _cannot_write(path, error) from None
    except BaseException:
        os.unlink(temporary)
        raise
    return temporary


def write_all_or_none(files: Mapping[str | os.PathLike, bytes]) -> list[Path]:
    """Write several files so that all of them land, or none does.

    Every file is first written in full to a temporary file next to it; only when all are
    written are they renamed into place. If a write fails, the temporary files are removed and
    no target is touched; if a rename fails, the files already renamed by this call are removed
    again (a file they replaced is not restored). Returns the paths, in the order given.

    Raises
    ------
    OutputPathError
        A file cannot be written (one line naming it and the reason).
    """
    paths = [Path(path) for path in files]
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in zip(paths, files.values()):
            staged.append((_staged(path, lambda stream, data=data: stream.write(data)), path))
        renamed: list[Path] = []
        for temporary, path in staged:
            try:
                os.replace(temporary, path)
            except OSError as error:
                for done in renamed:
                    done.unlink(missing_ok=True)
                raise _cannot_write(path, error) from None
            renamed.append(path)
    finally:
        for temporary, _ in staged:
            if os.path.exists(temporary):
                os.unlink(temporary)
    return paths


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


