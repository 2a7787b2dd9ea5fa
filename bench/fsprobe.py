"""What creating a small file costs on the file system the runs write to.

Every job creates one output file, so this cost is part of the client's CPU per job. It
is not a constant of the machine: on ext4 without a journal (as on this benchmark's VM),
creating a file skips every inode freed in the last 1-5 minutes, checking each, so right
after many deletions in the same area it can cost 20x more (0.03 ms -> 0.7 ms of kernel
CPU per file, measured). The benchmark reports the figure before and after its runs, and
removes no run's files before the end, so one run's clean-up does not tax the next.
"""

from __future__ import annotations

import os
import resource
import tempfile
from pathlib import Path

PROBE_FILES = 300


def file_create_cpu_us(directory: Path, files: int = PROBE_FILES) -> float:
    """CPU microseconds (user + system) per small file created, written and closed, as
    the pipeline creates its temp files. The probe's files are left in place: deleting
    them would tax the next creations."""
    probe = Path(tempfile.mkdtemp(prefix="fsprobe-", dir=directory))
    payload = b"\0" * 600
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    before = resource.getrusage(resource.RUSAGE_SELF)
    for index in range(files):
        fd = os.open(probe / f"f{index:04d}", flags, 0o644)
        try:
            os.write(fd, payload)
        finally:
            os.close(fd)
    after = resource.getrusage(resource.RUSAGE_SELF)
    spent = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return 1e6 * spent / files


def durable_output_cpu_us(
    directory: Path, files: int = PROBE_FILES, per_directory_sync: int = 32
) -> float:
    """CPU microseconds per output made durable the way the pipeline makes one (create
    the temp file with O_EXCL, write, fsync, rename into place) plus a share of one
    directory fsync per `per_directory_sync` files (the ledger syncs the directory once
    per batch), in a plain loop: no event loop, no thread. The least the output
    guarantee costs per job on this file system."""
    probe = Path(tempfile.mkdtemp(prefix="fsprobe-durable-", dir=directory))
    payload = b"\0" * 600
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    directory_fd = os.open(probe, os.O_RDONLY)
    try:
        before = resource.getrusage(resource.RUSAGE_SELF)
        for index in range(files):
            temp = probe / f".tmp-{index:04d}"
            fd = os.open(temp, flags, 0o644)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, probe / f"f{index:04d}.png")
            if index % per_directory_sync == per_directory_sync - 1:
                os.fsync(directory_fd)
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        os.close(directory_fd)
    spent = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return 1e6 * spent / files
