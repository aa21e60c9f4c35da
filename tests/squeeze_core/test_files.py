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


def test_copy_and_replace(tmp_path):
    source = atomic_write_text(tmp_path / "a.txt", "content")
    atomic_write_text(tmp_path / "b.txt", "to be replaced")
    atomic_copy(source, tmp_path / "b.txt")
    assert (tmp_path / "b.txt").read_text() == "content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
