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


def test_a_safetensors_file_whose_header_length_starts_like_a_pickle_is_accepted(tmp_path):
    """The header length is little-endian: a header of 0x..80 bytes makes the file's first byte 0x80, the first byte of a
    bare pickle. The file is judged by its header, so it is accepted, while a real pickle still is not."""
    import struct

    import torch
    from safetensors.torch import save_file

    from squeeze_core.checks import safetensors_file
    from squeeze_core.errors import SqueezeWeightsError

    path = tmp_path / "weights.safetensors"
    for pad in range(512):
        save_file({"w": torch.zeros(3)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80 and struct.unpack("<Q", path.read_bytes()[:8])[0] % 256 == 0x80
    assert "w" in safetensors_file(path, "--lora", "a LoRA")
    torch.save({"w": torch.zeros(3)}, tmp_path / "pickle.safetensors", _use_new_zipfile_serialization=False)
    with pytest.raises(SqueezeWeightsError, match="is a PyTorch pickle"):
        safetensors_file(tmp_path / "pickle.safetensors", "--lora", "a LoRA")
