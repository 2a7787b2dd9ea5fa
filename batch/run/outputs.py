"""Output files: stream from the CDN to a temp file, verify, then rename into place.

A file appears under its final name only once it is complete, matches the length the
CDN announced, and decodes as an image. Anything else is retried (with a fresh URL when
the old one expired) or reported; a half-written temp file never survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import random
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiofiles
import aiohttp
from PIL import Image, UnidentifiedImageError

from batch.api.network import setup_failure
from batch.api.urls import RedirectRefused, get_following_redirects
from batch.durable import fsync_directory
from batch.errors import DownloadError
from batch.local_faults import file_fault, socket_fault

log = logging.getLogger(__name__)

TEMP_PREFIX: Final = ".partial-"
MAX_OUTPUT_BYTES: Final = 256 * 1024 * 1024
EXPIRED_STATUSES: Final = frozenset({401, 403, 404, 410})
EXTENSIONS: Final = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif"}
CHUNK: Final = 256 * 1024
# Bodies up to this size are held in memory: at most this much per download in flight.
SPOOL_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Fetched:
    path: Path
    sha256: str
    size: int


class _Retry(Exception):
    """A download attempt failed in a way another attempt may fix."""


async def fetch_output(
    session: aiohttp.ClientSession,
    url: str,
    directory: Path,
    stem: str,
    *,
    refresh_url: Callable[[], Awaitable[str]],
    attempts: int = 6,
    base_wait_s: float = 0.25,
    client_timeout: aiohttp.ClientTimeout | None = None,
    sync_directory: bool = True,
    settle_in: Executor | None = None,
) -> Fetched:
    """Download `url` into `directory/stem.<ext>`. No credentials are sent to the CDN.
    The file is made durable in a thread of `settle_in` (default: the loop's default
    executor). `sync_directory=False` leaves the directory fsync that makes its name
    durable to the caller (the pipeline's ledger does one for many files)."""
    landing = _Landing(directory, sync_directory, settle_in)
    last_problem = "no attempt made"
    for attempt in range(1, attempts + 1):
        try:
            return await _fetch_once(session, url, landing, stem, client_timeout)
        except _Expired as expired:
            last_problem = str(expired)
            if attempt < attempts:
                # Use the fresh URL at once: waiting first could let a short-lived one lapse.
                url = await refresh_url()
            continue
        except _Retry as problem:
            last_problem = str(problem)
        if attempt < attempts:
            await asyncio.sleep(random.uniform(0, base_wait_s * 2 ** (attempt - 1)))
    raise DownloadError(f"could not download {stem}: {last_problem} (after {attempts} attempts)")


class _Expired(_Retry):
    """The signed URL was refused: fetch a fresh one."""


@dataclass(frozen=True, slots=True)
class _Landing:
    """Where a finished download lands: its directory, whether the rename into it is
    synced here, and the executor whose thread makes it durable."""

    directory: Path
    sync_directory: bool
    executor: Executor | None


async def _fetch_once(
    session: aiohttp.ClientSession,
    url: str,
    landing: _Landing,
    stem: str,
    client_timeout: aiohttp.ClientTimeout | None,
) -> Fetched:
    directory = landing.directory
    # Random without a system call (secrets/urandom costs one per download); the name
    # only has to differ from other temp files of this run, and "x" refuses a clash.
    temp = directory / f"{TEMP_PREFIX}{stem}.{random.getrandbits(32):08x}"
    digest = hashlib.sha256()
    spool = _Spool(temp)
    try:
        async with get_following_redirects(session, url, client_timeout=client_timeout) as response:
            if response.status in EXPIRED_STATUSES:
                raise _Expired(f"CDN answered HTTP {response.status}")
            if response.status != 200:
                raise _Retry(f"CDN answered HTTP {response.status}")
            expected = response.content_length
            if expected is not None and expected > MAX_OUTPUT_BYTES:
                raise DownloadError(f"output of {stem} is {expected} bytes, over the limit")
            async for chunk in response.content.iter_chunked(CHUNK):
                if spool.size + len(chunk) > MAX_OUTPUT_BYTES:
                    raise DownloadError(f"output of {stem} exceeds {MAX_OUTPUT_BYTES} bytes")
                digest.update(chunk)
                await spool.write(chunk)
            if expected is not None and spool.size != expected:
                raise _Retry(f"body was {spool.size} bytes, Content-Length said {expected}")
        held = await spool.finish()
        # One trip to a worker thread for all the blocking file work: the event loop
        # keeps serving the other jobs meanwhile.
        loop = asyncio.get_running_loop()
        final = await loop.run_in_executor(landing.executor, _settle, temp, landing, stem, held)
        return Fetched(final, digest.hexdigest(), spool.size)
    except RedirectRefused as refused:
        raise DownloadError(f"output of {stem}: {refused}") from None
    except aiohttp.ClientError as exc:
        fault = socket_fault(exc, "the CDN")
        if fault is not None:
            raise fault from exc
        # A certificate that fails verification fails every time: say so at once.
        problem = setup_failure(exc, url) if isinstance(exc, aiohttp.ClientSSLError) else None
        if problem is not None:
            raise DownloadError(f"output of {stem}: {problem}") from None
        raise _Retry(f"{type(exc).__name__}: {exc}") from exc
    except TimeoutError as exc:
        raise _Retry(f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:  # the temp file, its write, fsync or rename: the machine's fault
        raise file_fault(exc, "cannot write an output into", directory) from exc
    finally:
        await spool.discard()


class _Spool:
    """A body held in memory up to `SPOOL_BYTES`, past that streamed to the temp file.

    Holding a small body saves a worker-thread trip per chunk, and `_settle` writes it in
    the same trip that makes it durable. Large ones never sit in memory whole.
    """

    def __init__(self, temp: Path) -> None:
        self.temp = temp
        self.size = 0
        self._chunks: list[bytes] = []
        self._file: Any = None  # an aiofiles handle once spilled
        self._spilled = False
        self._settling = False

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if not self._spilled and self.size <= SPOOL_BYTES:
            self._chunks.append(chunk)
            return
        if not self._spilled:
            self._spilled = True
            # "x": never follow or reuse something planted under the temp name.
            self._file = await aiofiles.open(self.temp, "xb")
            held, self._chunks = b"".join(self._chunks), []
            await self._file.write(held)
        await self._file.write(chunk)

    async def finish(self) -> bytes | None:
        """The whole body if it stayed in memory; None if it is in the temp file."""
        if self._file is not None:
            handle, self._file = self._file, None
            await handle.close()  # if this fails, `discard` still removes the temp file
        self._settling = True
        return None if self._spilled else b"".join(self._chunks)

    async def discard(self) -> None:
        """After a failed attempt: close and remove the temp file, if there is one.
        (`_settle` cleans up after itself; a settled temp was renamed.)"""
        if self._file is not None:
            with contextlib.suppress(OSError):
                await self._file.close()
            self._file = None
        if self._spilled and not self._settling:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(self.temp.unlink)


def _settle(temp: Path, landing: _Landing, stem: str, held: bytes | None) -> Path:
    """Write (if still in memory) and fsync the temp file, check it is an image, and
    rename it into place. On any failure the temp file is removed."""
    try:
        if held is not None:
            # "x" and no symlinks: never follow or reuse something planted there.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        else:
            fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            if held is not None:
                view = memoryview(held)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        final = landing.directory / f"{stem}.{_image_extension(temp, held)}"
        os.replace(temp, final)  # replaces a planted symlink itself, never its target
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if landing.sync_directory:
        fsync_directory(landing.directory)
    return final


def _image_extension(path: Path, held: bytes | None = None) -> str:
    try:
        with Image.open(io.BytesIO(held) if held is not None else path) as image:
            kind = image.format or ""
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _Retry(f"downloaded bytes are not a valid image ({exc})") from exc
    return EXTENSIONS.get(kind, "img")


def image_format(data: bytes) -> str | None:
    """The Pillow format name of image bytes, or None when they are not an image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except (UnidentifiedImageError, OSError):
        return None


def remove_stale_temps(directory: Path) -> int:
    """Temp files left by a killed run are never results: remove them."""
    removed = 0
    for leftover in directory.glob(f"{TEMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            leftover.unlink()
            removed += 1
    return removed


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
