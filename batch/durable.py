"""Writing files so that a crash at any instant leaves either the old file or the new one.

Every file scenario-batch writes goes to a fresh temporary name in the same directory,
is flushed, and is renamed into place; the rename itself is made durable by syncing the
directory (for downloaded outputs the ledger does that, once for many: see batch.ledger.journal).
`os.replace` over a planted symlink replaces the link, never its target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import Final

from batch.local_faults import file_fault

# Some file systems refuse to fsync a directory: that is no fault. Anything else (EIO, a
# directory that vanished) is, and reaches the caller (see batch.local_faults).
_NO_DIRECTORY_SYNC: Final = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF})


def fsync_directory(directory: Path) -> None:
    """Make renames and creations in `directory` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIRECTORY_SYNC:
            raise


def write_atomically(target: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write `target` via a fresh temporary name in the same directory, then rename.

    Any OSError is a machine fault (`LocalFaultError`, see batch.local_faults) naming
    `target`; the temp file is removed, and `target` keeps its old content."""
    try:
        _write_atomically(target, data, fsync)
    except OSError as exc:
        raise file_fault(exc, "cannot write", target) from exc


def _write_atomically(target: Path, data: bytes, fsync: bool) -> None:
    temp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(6)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(temp, flags, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if fsync:
        fsync_directory(target.parent)
