"""Files that appear whole or not at all: the one atomic-write helper, for every writer that must
survive an interruption (resumable work directories, run metrics, assembled outputs)."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_json"]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it onto ``path``.

    The rename is atomic on POSIX file systems, so a reader (or a resumed run) sees either the old
    file or the complete new one, never a half-written file. The temporary keeps ``path``'s suffix
    (writers choose the format from it); it is removed if ``write`` raises.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1) + "\n"))
