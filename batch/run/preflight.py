"""Before anything is spent: can this machine keep what the run is about to buy?

- The output directory must take a file (written, fsynced, removed) and a lock: a
  read-only, full or foreign directory is refused with exit 2 before a single call.
- File descriptors: every connection, every output being written and every reference
  being read holds one. The soft limit is raised to the hard one; if that is still short
  of what the concurrency asks for, connections and parallel downloads are lowered to
  fit (a run that is slower but keeps every output), and a limit too low even for that
  is refused, naming the concurrency that fits.
- Free space: a warning when the file system holds less than the outputs still to come
  are likely to need (their typical size is learnt from the ledger). Not a refusal: the
  estimate is rough, and a disk that does fill stops the run cleanly (batch.local_faults).
"""

from __future__ import annotations

import logging
import os
import resource
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from batch.errors import LocalFaultError
from batch.local_faults import fault, file_fault

log = logging.getLogger(__name__)

# Descriptors a run holds whatever its size: stdio, the event loop (epoll, self-pipe), the
# ledger and its lock, resolver and checkpoint pipes, with room to spare. Measured peaks
# against the simulator: 14 at --concurrency 1, 27 at 8, 48 at 32; the model below needs
# at least 37, 44 and 68 there (126, 126, 158 for full speed): it errs on the safe side.
BASE_FDS: Final = 24
# References read at once (the loop's default executor) and the report's thumbnails.
READ_FDS: Final = min(32, (os.cpu_count() or 1) + 4)
MIN_DOWNLOADS: Final = 2
SPARE_CONNECTIONS: Final = 4  # the poller, URL lookups, an upload: beside the jobs' own
TYPICAL_OUTPUT_BYTES: Final = 2 * 1024 * 1024  # until the ledger knows better
SPACE_MARGIN: Final = 1.2


def check_output_dir(out_dir: Path) -> None:
    """The output directory exists (created if need be) and takes a durable file."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-probe-{secrets.token_hex(4)}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            try:
                os.write(fd, b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            os.unlink(probe)
    except OSError as exc:
        raise _before_spending(
            file_fault(exc, "cannot write in the output directory", out_dir)
        ) from exc


@dataclass(frozen=True, slots=True)
class Descriptors:
    """How many connections and parallel downloads the open-file limit allows."""

    limit: int
    connections: int
    downloads: int


def fit_file_limit(concurrency: int, connections: int, downloads: int) -> Descriptors:
    """Raise the soft open-file limit to the hard one, then fit connections and downloads
    under it. Raises LocalFaultError (before spending) when even the least does not fit."""
    limit = raise_soft_file_limit()
    available = limit - BASE_FDS - READ_FDS
    least_connections = concurrency + SPARE_CONNECTIONS
    if connections + downloads <= available:
        return Descriptors(limit, connections, downloads)
    if least_connections + MIN_DOWNLOADS > available:
        fits = available - SPARE_CONNECTIONS - MIN_DOWNLOADS
        needed = BASE_FDS + READ_FDS + least_connections + 4 * MIN_DOWNLOADS
        advice = f"raise it (ulimit -n {max(needed, 1024)})" + (
            f" or run with --concurrency {fits}" if fits >= 1 else ""
        )
        raise _before_spending(
            fault(
                f"the open-file limit ({limit}) is too low for --concurrency {concurrency}",
                None,
                None,
                advice,
                resume=False,
            )
        )
    # Downloads get a third of what is left beyond the jobs' own connections; each also
    # holds a connection, so connections take the rest.
    spare = available - least_connections
    fitted_downloads = max(MIN_DOWNLOADS, min(downloads, spare // 3))
    fitted_connections = min(connections, available - fitted_downloads)
    log.warning(
        "the open-file limit is %d: using %d connections (not %d) and %d parallel downloads "
        "(not %d) so that every output can be written; raise it (ulimit -n) for full speed",
        limit,
        fitted_connections,
        connections,
        fitted_downloads,
        downloads,
    )
    return Descriptors(limit, fitted_connections, fitted_downloads)


def raise_soft_file_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one (as far as the OS allows); the
    limit in force after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # e.g. macOS caps it below an infinite hard limit
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def warn_if_short_of_space(out_dir: Path, outputs_to_come: int, typical_bytes: int) -> None:
    """Warn when the outputs still to download look larger than the free space."""
    if outputs_to_come <= 0:
        return
    try:
        free = shutil.disk_usage(out_dir).free
    except OSError:
        return
    needed = int(outputs_to_come * typical_bytes * SPACE_MARGIN)
    if free < needed:
        log.warning(
            "%s has %s free, and the %d output(s) still to download need about %s "
            "(%s each): free space now, or the run will stop when the disk is full "
            "(it resumes once space is freed)",
            out_dir,
            _size(free),
            outputs_to_come,
            _size(needed),
            _size(typical_bytes),
        )


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover


def _before_spending(error: LocalFaultError) -> LocalFaultError:
    error.before_spending = True
    return error
