"""Writing files so that a reader never sees half of one: every file Squeeze writes goes through `atomic_write`.

    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    atomic_write_text(path, json.dumps(data))

The content goes to a hidden temporary sibling (same folder, so the rename cannot cross file systems), which then
replaces `path` in one rename. On any error, the temporary file is removed and `path` is left as it was.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """Call write(temporary_path), then rename it to `path` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def atomic_copy(source, path) -> Path:
    import shutil

    return atomic_write(path, lambda temporary: shutil.copyfile(source, temporary))
