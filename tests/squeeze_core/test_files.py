"""Every file Squeeze writes goes through files.atomic_write: complete or absent, never half-written."""

import pytest

from squeeze_core.files import atomic_copy, atomic_write, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "deep" / "out.json", "old\n")  # parents are created
    assert target.read_text() == "old\n"

    def broken(temporary):
        temporary.write_text("half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_written_files_get_the_permissions_of_any_new_file(tmp_path):
    import os

    umask = os.umask(0o027)
    try:
        written = atomic_write_text(tmp_path / "shared.json", "{}")
    finally:
        os.umask(umask)
    assert written.stat().st_mode & 0o777 == 0o640  # 0666 less the umask, not a temporary file's 0600
    default = atomic_write_text(tmp_path / "default.json", "{}")
    assert default.stat().st_mode & 0o777 == 0o666 & ~umask


def test_copy_and_replace(tmp_path):
    source = atomic_write_text(tmp_path / "a.txt", "content")
    atomic_write_text(tmp_path / "b.txt", "to be replaced")
    atomic_copy(source, tmp_path / "b.txt")
    assert (tmp_path / "b.txt").read_text() == "content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
