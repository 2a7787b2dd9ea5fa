"""Writing files so that a crash at any instant leaves either the old file or the new one.

Every file scenario-batch writes goes to a fresh temporary name in the same directory,
is flushed, and is renamed into place; the rename itself is made durable by syncing the
directory (for downloaded outputs the ledger does that, once for many: see batch.ledger).
`os.replace` over a planted symlink replaces the link, never its target.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make renames and creations in `directory` durable."""
    with contextlib.suppress(OSError):  # some file systems refuse to fsync a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomically(target: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write `target` via a fresh temporary name in the same directory, then rename."""
    temp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(6)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(temp, flags, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if fsync:
        fsync_directory(target.parent)
