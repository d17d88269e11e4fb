"""Outputs that cannot be written: one line, exit 2, and several outputs all written or none.

Running as root passes every permission check, so the failures at write time are made by
monkeypatching the writer to raise what a read-only folder raises (PermissionError), and by
writing under /proc, where even root cannot create files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from lrp_num.cli import main
from lrp_num.errors import OutputPathError
from lrp_num.io.files import write_all_or_none


def _one_line_exit_2(command, capsys, message):
    assert main(command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    return err[0]


def _refuse_folder(monkeypatch, folder: Path):
    """Make creating a file in ``folder`` fail as a read-only folder does."""
    original = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise PermissionError(13, "Permission denied", str(dir))
        return original(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_out_into_a_folder_that_refuses_writes_is_one_line(tmp_path, capsys, monkeypatch):
    _refuse_folder(monkeypatch, tmp_path)
    _one_line_exit_2(["explain", "--rule", "zplus", "--out", str(tmp_path / "r.npy")], capsys,
                     f"cannot write {str(tmp_path / 'r.npy')!r}: Permission denied")
    assert list(tmp_path.iterdir()) == []


def test_heatmap_that_fails_leaves_no_relevance_either(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    (tmp_path / "pictures").mkdir()
    _refuse_folder(monkeypatch, tmp_path / "pictures")
    out, picture = tmp_path / "r.npy", tmp_path / "pictures" / "h.png"
    _one_line_exit_2(["explain", "--rule", "zplus", "--out", str(out), "--heatmap", str(picture)],
                     capsys, "Permission denied")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pictures"]  # no r.npy, no temporaries
    assert list((tmp_path / "pictures").iterdir()) == []


def test_a_rename_that_fails_takes_back_the_files_already_renamed(tmp_path, monkeypatch):
    original = os.replace

    def replace(source, target):
        if Path(target).name == "second.bin":
            raise OSError(28, "No space left on device")
        return original(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputPathError, match="second.bin'?: No space left on device"):
        write_all_or_none({tmp_path / "first.bin": b"1", tmp_path / "second.bin": b"2"})
    assert list(tmp_path.iterdir()) == []


def test_write_all_or_none_writes_every_file(tmp_path):
    paths = write_all_or_none({tmp_path / "a.bin": b"a", str(tmp_path / "b.bin"): b"bb"})
    assert paths == [tmp_path / "a.bin", tmp_path / "b.bin"]
    assert [p.read_bytes() for p in paths] == [b"a", b"bb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]


def test_write_all_or_none_keeps_old_files_when_a_write_fails(tmp_path, monkeypatch):
    (tmp_path / "refused").mkdir()
    old = tmp_path / "a.bin"
    old.write_bytes(b"old")
    _refuse_folder(monkeypatch, tmp_path / "refused")
    with pytest.raises(OutputPathError, match="Permission denied"):
        write_all_or_none({old: b"new", tmp_path / "refused" / "b.bin": b"b"})
    assert old.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "refused"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_out_under_proc_fails_at_write_time_in_one_line(capsys):
    """/proc accepts no new files, for root too: the failure comes at write time."""
    _one_line_exit_2(["explain", "--rule", "zplus", "--out", "/proc/lrp-r.npy"], capsys,
                     "cannot write '/proc/lrp-r.npy'")


def test_out_into_a_folder_without_write_permission_fails_before_the_work(tmp_path, capsys,
                                                                          monkeypatch):
    original = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == tmp_path
                        else original(path, mode, **kw))
    assert main(["explain", "--rule", "zplus", "--out", str(tmp_path / "r.npy")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before the work, not after
    assert captured.err.strip() == (f"lrp explain: error: cannot write the relevance to "
                                    f"{str(tmp_path / 'r.npy')!r}: its folder is not writable")


def _one_derivation(tmp_path) -> str:
    """A derivations folder holding only z+ (quick to derive)."""
    from lrp_sym.registry import DEFAULT_DERIVATIONS

    folder = tmp_path / "derivations"
    folder.mkdir()
    (folder / "z_plus.py").write_text((Path(DEFAULT_DERIVATIONS) / "z_plus.py").read_text())
    return str(folder)


def test_regenerate_into_a_folder_that_refuses_writes_is_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "kernels"
    out.mkdir()
    _refuse_folder(monkeypatch, out)
    _one_line_exit_2(["regenerate", "--derivations", _one_derivation(tmp_path), "--out", str(out)],
                     capsys, "Permission denied")
    assert list(out.iterdir()) == []  # no kernel at all, not some of them


def test_regenerate_without_write_permission_is_one_line_before_deriving(tmp_path, capsys, monkeypatch):
    docs = tmp_path / "docs"
    original = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == tmp_path
                        else original(path, mode, **kw))
    line = _one_line_exit_2(["regenerate", "--derivations", str(Path("derivations").resolve()),
                             "--out", str(tmp_path / "kernels"), "--docs", str(docs)], capsys,
                            "permission denied")
    assert line.startswith(f"lrp regenerate: error: --out {str(tmp_path / 'kernels')!r}")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_regenerate_under_proc_is_one_line(tmp_path, capsys):
    _one_line_exit_2(["regenerate", "--derivations", _one_derivation(tmp_path),
                      "--out", "/proc/lrp-kernels"], capsys, "cannot write '/proc/lrp-kernels'")
