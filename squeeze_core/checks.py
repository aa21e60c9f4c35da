"""Checks of user input that need no model: run them all before anything heavy loads.

    output = checks.output_file(args.output, "--output", suffix=".png")     # not a directory, parent creatable
    device = checks.device(args.device)                                     # cuda only where there is a GPU
    checks.finite(args.cfg, "--cfg", low=0.0)
    header = checks.safetensors_file(args.dla, "--dla", "DLA weights")      # a real safetensors file, not a pickle

Each raises SqueezeInputError (bad values and paths) or SqueezeWeightsError (files that are not what they should
be) with the option's name, the bad value and what to do; the CLI prints it as one line and exits with status 2.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from pathlib import Path

import torch

from .errors import SqueezeInputError, SqueezeWeightsError

MAX_SAFETENSORS_HEADER = 100 * 2**20  # the safetensors format's own limit on its JSON header


def finite(value, name: str, low: float | None = None, high: float | None = None) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SqueezeInputError(f"{name} {value!r} is not a finite number.")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise SqueezeInputError(f"{name} {value!r} is outside {bounds}.")
    return float(value)


def positive_int(value, name: str, multiple_of: int = 1) -> int:
    if not isinstance(value, int) or value < 1 or value % multiple_of:
        extra = f" and a multiple of {multiple_of}" if multiple_of > 1 else ""
        raise SqueezeInputError(f"{name} {value!r} must be a positive integer{extra}.")
    return value


def existing(path, name: str, what: str, directory: bool = False) -> Path:
    """A path that exists and is a file (or, with directory=True, a directory)."""
    path = Path(path)
    if not path.exists():
        raise SqueezeInputError(f"{name} '{path}' does not exist; it should be {what}.")
    if path.is_dir() != directory:
        raise SqueezeInputError(f"{name} '{path}' is a {'file' if directory else 'directory'}; it should be {what}.")
    return path


def text(value: str, name: str) -> str:
    """A text input that is valid Unicode (a command line in another encoding gives undecodable bytes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise SqueezeInputError(f"{name} is not valid UTF-8 text ({error.reason} at character {error.start}); "
                                "write it in UTF-8.") from None
    return value


def _creatable(path: Path, name: str) -> None:
    """Prove that `path` can be created: every missing name fits the file system, and the nearest existing ancestor
    takes a new file (one is created there and removed: permission bits do not stop root, a read-only mount does)."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SqueezeInputError(f"{name} '{path}' cannot be created: '{ancestor}' is a file, not a directory.")
    try:
        longest = os.pathconf(ancestor, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows): the usual limit
        longest = 255
    for part in path.relative_to(ancestor).parts:
        if len(os.fsencode(part)) > longest:
            raise SqueezeInputError(f"{name}: the name '{part[:40]}...' is {len(os.fsencode(part))} bytes, over this file "
                                    f"system's {longest}; use a shorter name.")
    try:
        handle, probe = tempfile.mkstemp(prefix=".squeeze-write-test-", dir=ancestor)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise SqueezeInputError(f"{name} '{path}' cannot be written: '{ancestor}' takes no new file ({error.strerror}).") from error


def _names_fit(path: Path, name: str) -> None:
    """No part of `path` is longer than a file name can be (most file systems: 255 bytes), so no call on it fails."""
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            raise SqueezeInputError(f"{name}: the name '{part[:40]}...' is {len(os.fsencode(part))} bytes, over the 255 a "
                                    "file name can have; use a shorter name.")


def output_file(path, name: str, suffix: str) -> Path:
    """A file Squeeze will write: not a directory, with `suffix`, somewhere it can be created."""
    path = Path(path)
    _names_fit(path, name)
    if path.is_dir():
        raise SqueezeInputError(f"{name} '{path}' is a directory; give a file name ending in {suffix}.")
    if path.suffix.lower() != suffix:
        raise SqueezeInputError(f"{name} '{path}' must end in {suffix} (it is written as that format).")
    _creatable(path, name)
    return path


def output_dir(path, name: str) -> Path:
    path = Path(path)
    _names_fit(path, name)
    if path.exists() and not path.is_dir():
        raise SqueezeInputError(f"{name} '{path}' is a file; give a directory (it is created if missing).")
    _creatable(path / "x", name)
    return path


def device(name: str, option: str = "--device") -> torch.device:
    try:
        parsed = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise SqueezeInputError(f"{option} {name!r} is not a torch device ({error}); use cpu, cuda or cuda:N.") from error
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise SqueezeInputError(f"{option} {name!r}: this machine has no CUDA GPU (or torch was built without CUDA); use --device cpu.")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise SqueezeInputError(f"{option} {name!r}: there are {torch.cuda.device_count()} CUDA device(s), numbered from 0.")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise SqueezeInputError(f"{option} {name!r}: MPS is not available here; use --device cpu.")
    elif parsed.type not in ("cpu", "cuda", "mps", "xpu"):
        raise SqueezeInputError(f"{option} {name!r}: Squeeze runs on cpu, cuda, mps or xpu.")
    return parsed


def safetensors_file(path, name: str, what: str) -> dict:
    """Check that `path` is a safetensors file by its header alone; returns the header: tensor name -> dtype, shape
    and offsets, plus "__metadata__" when the file has metadata."""
    path = existing(path, name, f"{what} (.safetensors)")
    with open(path, "rb") as handle:
        start = handle.read(9)  # the header length (8 bytes, little-endian), then the header's opening "{"
        plausible = len(start) == 9 and start[8:] == b"{" and struct.unpack("<Q", start[:8])[0] <= path.stat().st_size - 8
        if not plausible and (start[:2] == b"PK" or start[:1] == b"\x80"):  # torch.save's zip, or a bare pickle
            raise SqueezeWeightsError(
                f"{name} '{path}' is a PyTorch pickle (torch.save), not a safetensors file, whatever its name says. "
                "Squeeze never loads pickles (they can run code); convert it with safetensors.torch.save_file."
            )
        if len(start) < 9:
            raise SqueezeWeightsError(f"{name} '{path}' is too short to be a safetensors file ({len(start)} bytes).")
        (length,) = struct.unpack("<Q", start[:8])
        handle.seek(8)
        if length > MAX_SAFETENSORS_HEADER or length > path.stat().st_size - 8:
            raise SqueezeWeightsError(f"{name} '{path}' is not a safetensors file "
                                      "(its first 8 bytes do not give a header length that fits).")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SqueezeWeightsError(f"{name} '{path}' is not a safetensors file (its header is not JSON: {error}).") from error
    if not isinstance(header, dict):
        raise SqueezeWeightsError(f"{name} '{path}' is not a safetensors file (its header is not a JSON object).")
    ends = [entry["data_offsets"][1] for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict) and len(entry.get("data_offsets", ())) == 2]
    size = path.stat().st_size
    if ends and 8 + length + max(ends) > size:
        raise SqueezeWeightsError(f"{name} '{path}' is truncated: its header describes {8 + length + max(ends)} bytes, the file "
                                  f"has {size}. Copy or download it again.")
    return header
