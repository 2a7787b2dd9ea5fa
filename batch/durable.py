"""Writing files so that a crash at any instant leaves either the old file or the new one.

Every file scenario-batch writes goes to a fresh temporary name in the same directory,
is flushed, and is renamed into place; the rename itself is made durable by syncing the
directory. `os.replace` over a planted symlink replaces the link, never its target.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make renames and creations in `directory` durable."""
    with contextlib.suppress(OSError):  # some file systems refuse to fsync a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class DirectorySync:
    """`fsync_directory` for many worker threads renaming into one directory.

    One fsync makes durable every rename finished before it began, so a thread whose
    rename is covered by a sync that started after it returns without syncing again:
    group commit, as the ledger does for records. Under load, a handful of fsyncs cover
    many downloads.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.syncs = 0
        self._count = threading.Lock()
        self._one_at_a_time = threading.Lock()
        self._renamed = 0  # renames announced through `after_rename`
        self._durable = 0  # of those, how many a finished fsync covers

    def after_rename(self) -> None:
        """Call (from any thread) once a rename into the directory has returned; returns
        when it is durable."""
        with self._count:
            self._renamed += 1
            mine = self._renamed
        with self._one_at_a_time:
            with self._count:
                if self._durable >= mine:
                    return
                covers = self._renamed  # all of these finished before the fsync below
            fsync_directory(self.directory)
            self.syncs += 1
            with self._count:
                self._durable = max(self._durable, covers)


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
