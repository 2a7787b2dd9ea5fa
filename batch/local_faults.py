"""Faults of the machine the run is on, not of the API: one class, recognised in one place.

A full disk, a read-only or vanished output directory, a permission refused, an I/O
error, too few file descriptors: none of them is the API's doing, none clears by retrying
the next call, and every one means that outputs bought now could not be kept. So they are
not retried and not pinned on an item: wherever one strikes, it becomes a
`LocalFaultError`, which no item handler catches. It ends the run's task group (no more
submits, downloads in flight are cancelled and their temp files removed), the ledger keeps
what it had (see `batch.ledger.journal`: a failed append is cut off), and the CLI prints its one
line and exits 1 (2 when nothing was spent yet). The same command resumes.

Two doors lead here:
- `file_fault(exc, action, path)`: an `OSError` from local file work, whatever its errno
  (the places that write files call it: the ledger, outputs, the report, `durable`).
- `socket_fault(exc, where)`: a network error that is really the machine's, i.e. a socket
  that could not be opened for want of file descriptors (EMFILE, ENFILE).
`stray_fault(exc)` is the safety net at the top: an `OSError` that escaped from file work,
or a fault inside an exception group, is still reported as one line, never a traceback.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Final

from batch.errors import LocalFaultError

RESUME: Final = "then run the same command again: it resumes, and pays for nothing twice"

_ADVICE: Final[dict[int, str]] = {
    errno.ENOSPC: "free space on that file system (or give another --out)",
    errno.EDQUOT: "raise the disk quota or free space (or give another --out)",
    errno.EFBIG: "the file system refuses files that large: give another --out",
    errno.EROFS: "the file system is read-only: remount it read-write (or give another --out)",
    errno.EACCES: "give this user write access there (or give another --out)",
    errno.EPERM: "give this user write access there (or give another --out)",
    errno.ENOENT: "the output directory vanished (deleted or unmounted): make sure it stays",
    errno.ENOTDIR: "the output directory vanished (deleted or unmounted): make sure it stays",
    errno.ESTALE: "the output directory's network mount went stale: remount it",
    errno.EIO: "the disk reported an I/O error: check the device (dmesg) or give another --out",
    errno.EMFILE: "raise the open-file limit (ulimit -n 4096) or lower --concurrency",
    errno.ENFILE: "the system's file table is full: close other programs or raise fs.file-max",
    errno.ENOMEM: "the machine is out of memory: lower --concurrency or free memory",
}
# Errors that are the machine's whatever the file (the safety net recognises only these).
LOCAL_ERRNOS: Final = frozenset(_ADVICE)
_SOCKET_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def file_fault(exc: OSError, action: str, path: Path | str | None = None) -> LocalFaultError:
    """An OSError from local file work, as the run's one kind of machine fault."""
    where = path if path is not None else exc.filename
    return fault(action, None if where is None else str(where), exc.errno)


def fault(
    action: str,
    path: str | None,
    code: int | None,
    advice: str | None = None,
    *,
    resume: bool = True,
) -> LocalFaultError:
    """A machine fault with the advice its errno calls for (or `advice`); `resume`: say
    that the same command resumes once it is fixed."""
    advice = advice or _ADVICE.get(code or 0, "fix the machine or give another --out")
    return LocalFaultError(action, path, code, f"{advice}; {RESUME}" if resume else advice)


def socket_fault(exc: BaseException, where: str) -> LocalFaultError | None:
    """A connection that failed because this machine could not open a socket (too few
    file descriptors, no buffers), or None when it is a network problem like any other."""
    found = _os_error(exc)
    if found is None or found.errno not in _SOCKET_ERRNOS:
        return None
    return fault(f"cannot open a connection to {where}", None, found.errno)


def stray_fault(exc: BaseException) -> LocalFaultError | None:
    """The machine fault inside `exc` (an exception group's leaves included), if any."""
    if isinstance(exc, LocalFaultError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            fault = stray_fault(inner)
            if fault is not None:
                return fault
        return None
    import aiohttp  # here: `validate` never makes a session, and need not load aiohttp

    if isinstance(exc, aiohttp.ClientError):
        return socket_fault(exc, "the network")
    if isinstance(exc, OSError) and exc.errno in LOCAL_ERRNOS:
        return file_fault(exc, "cannot use")
    cause = exc.__cause__
    return stray_fault(cause) if cause is not None else None


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError under a network error: aiohttp keeps it in `os_error` or the cause."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        inner = getattr(current, "os_error", None)
        if isinstance(inner, OSError) and inner.errno is not None:
            return inner
        if isinstance(current, OSError) and current.errno is not None:
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None
