"""Writing files so that a reader never sees half of one: every file Squeeze writes goes through `atomic_write`.

    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    atomic_write_text(path, json.dumps(data))

The content goes to a hidden temporary sibling (same folder, so the rename cannot cross file systems), which then
replaces `path` in one rename. On any error, the temporary file is removed and `path` is left as it was. The file
gets the permissions any new file gets (0666 less the umask, usually 0644), not a private temporary file's 0600.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable


def _new_temporary(path: Path) -> Path:
    """An empty hidden sibling of `path`, created exclusively with mode 0666 so that the umask applies, as to any
    new file (tempfile.mkstemp's 0600 would stay on the renamed result)."""
    for _ in range(100):
        temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.partial"
        try:
            os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside '{path}': 100 names were taken")


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """Call write(temporary_path), then rename it to `path` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _new_temporary(path)
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
