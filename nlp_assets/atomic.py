"""The one way this package writes a local file that readers (the landing sensor, a browser, a
backfill) must never see half-written: a hidden temporary file beside it, then a rename."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def write_atomic(
    path: Path, content: bytes | Callable[[Path], object], *, fsync: bool = False
) -> None:
    """Write `content` (bytes, or a function that writes the file it is given) to a dot-file
    next to `path` (unique, so concurrent writers never share one; readers skip dot-files),
    then rename it over `path`. `fsync`: the bytes are on disk before the name appears (for a
    file that is the only copy of what was accepted)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if isinstance(content, bytes):
            with tmp.open("wb") as handle:
                handle.write(content)
                if fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
        else:
            content(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
