"""Reference images -> asset ids, each distinct image uploaded once per output directory.

An image is identified by the sha256 of its bytes, so two paths to the same bytes share one
upload. A local file is also remembered by (path, size, mtime) so that a resume need not
read and hash thousands of files again just to learn they were uploaded already. Every
upload is recorded in the ledger before any job uses it.

A reference given as a URL is hostile input: it is fetched without credentials, redirects
are followed by hand (at most three, never from https down to http), reading stops as soon
as the body passes the size limit, and the bytes must be an image within the pixel limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import mimetypes
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from batch.api.client import ScenarioClient
from batch.api.urls import MAX_REDIRECTS, RedirectRefused, get_following_redirects
from batch.errors import ChangedReferenceError, PermanentApiError, TransientApiError
from batch.local_faults import file_fault, socket_fault
from batch.manifest.files import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, image_problem
from batch.manifest.load import Item, Reference

MAX_REMOTE_BYTES: Final = MAX_IMAGE_BYTES  # the API's limits, as for local files
# A reference at most this big (as stamped at the start) is read on the event loop.
INLINE_READ_BYTES: Final = 32 * 1024

RecordAsset = Callable[[Mapping[str, Any]], Awaitable[None]]


class References:
    def __init__(
        self,
        client: ScenarioClient,
        session: aiohttp.ClientSession,
        known: Mapping[str, str],
        record: RecordAsset,
        *,
        max_bytes: int = MAX_REMOTE_BYTES,
        max_pixels: int = MAX_IMAGE_PIXELS,
        max_redirects: int = MAX_REDIRECTS,
        stamps: Mapping[str, FileStamp | None] | None = None,
    ) -> None:
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._max_redirects = max_redirects
        self._client = client
        self._session = session
        self._known = dict(known)  # reference key -> asset id (from the ledger)
        self._record = record
        self._in_progress: dict[str, asyncio.Future[str]] = {}
        # path -> asset id settled in this run: an item's own task asks again for what its
        # prefetch already resolved, and need not stat the file a second time.
        self._by_path: dict[str, str] = {}
        self.uploads = 0
        # path -> what the file was when the run started (None: missing): a file that is
        # no longer that is never uploaded (its item fails: see ChangedReferenceError).
        self._stamps = stamps or {}

    async def asset_ids(self, item: Item) -> list[str]:
        return [await self.asset_id(reference) for reference in item.references]

    async def asset_id(self, reference: Reference) -> str:
        if reference.kind == "asset":
            return reference.value
        if reference.kind == "file":
            path = reference.value
            settled = self._by_path.get(path)
            if settled is not None:
                return settled
            quick_key = self._checked_key(path)
            asset_id = self._known.get(quick_key)
            if asset_id is None:
                asset_id = await self._once(quick_key, lambda: self._upload_file(path))
            self._by_path[path] = asset_id
            return asset_id
        url_key = f"url:{reference.value}"
        if url_key in self._known:
            return self._known[url_key]
        return await self._once(url_key, lambda: self._upload_url(reference.value))

    def _checked_key(self, path: str) -> str:
        """The quick key of a local file, once it is known to be the validated one."""
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            if path in self._stamps:
                raise _changed(path, removed=True) from None
            return f"file:{path}"
        except OSError as exc:
            raise file_fault(exc, "cannot read the reference", path) from exc
        if path in self._stamps and FileStamp.of(stat) != self._stamps[path]:
            raise _changed(path, removed=False)
        return f"file:{path}:{stat.st_size}:{stat.st_mtime_ns}"

    async def _once(self, key: str, upload: Callable[[], Awaitable[str]]) -> str:
        """Concurrent items that share an image wait for the one upload in progress."""
        pending = self._in_progress.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._in_progress[key] = future
        try:
            asset_id = await upload()
        except BaseException as exc:
            del self._in_progress[key]
            if not future.done():
                future.set_exception(exc if isinstance(exc, Exception) else TransientApiError(""))
                future.exception()  # mark retrieved: waiters, if any, see it themselves
            raise
        self._known[key] = asset_id
        future.set_result(asset_id)
        del self._in_progress[key]
        await self._record({"type": "asset", "key": key, "assetId": asset_id})
        return asset_id

    async def _upload_file(self, path: str) -> str:
        # Read and hashed together; a small file on the loop (tens of microseconds, less
        # CPU than the worker-thread trip that would carry it: bench/RESULTS.md, round 9).
        stamp = self._stamps.get(path)
        if stamp is not None and stamp.size <= INLINE_READ_BYTES:
            data, digest = read_reference(path, stamp)
        else:
            data, digest = await asyncio.to_thread(read_reference, path, stamp)
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return await self._upload_bytes(data, os.path.basename(path), content_type, digest)

    async def _upload_bytes(
        self, data: bytes, name: str, content_type: str, digest: str | None = None
    ) -> str:
        content_key = "sha256:" + (digest or hashlib.sha256(data).hexdigest())
        if content_key in self._known:
            return self._known[content_key]
        asset_id = await self._client.upload_image(data, name, content_type)
        self.uploads += 1
        self._known[content_key] = asset_id
        await self._record({"type": "asset", "key": content_key, "assetId": asset_id})
        return asset_id

    async def _upload_url(self, url: str) -> str:
        """Fetch a reference given as an https URL (no credentials go there), then upload."""
        data, content_type = await self._fetch_url(url)
        problem = _image_problem(data, self._max_pixels)
        if problem:
            raise PermanentApiError(f"reference {url}: {problem}")
        name = url.rsplit("/", 1)[-1].split("?")[0] or "reference"
        return await self._upload_bytes(data, name, content_type)

    async def _fetch_url(self, url: str) -> tuple[bytes, str]:
        """GET `url` with no credentials, following at most `max_redirects` redirects by hand
        (never from https down to http), and stop reading past `max_bytes`."""
        try:
            async with get_following_redirects(
                self._session, url, max_redirects=self._max_redirects
            ) as response:
                if response.status != 200:
                    raise PermanentApiError(f"reference {url} answered HTTP {response.status}")
                content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
                if not content_type.startswith("image/"):
                    raise PermanentApiError(
                        f"reference {url} is not an image (Content-Type {content_type!r})"
                    )
                declared = response.content_length
                if declared is not None and declared > self._max_bytes:
                    raise PermanentApiError(
                        f"reference {url} is {declared} bytes, over the limit of {self._max_bytes}"
                    )
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise PermanentApiError(
                            f"reference {url} exceeds {self._max_bytes} bytes; refused"
                        )
                    chunks.append(chunk)
                return b"".join(chunks), content_type
        except RedirectRefused as refused:
            raise PermanentApiError(f"reference {url}: {refused}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            fault = socket_fault(exc, "a reference's host")
            if fault is not None:
                raise fault from exc
            raise TransientApiError(f"cannot fetch reference {url}: {exc}") from exc


def _image_problem(data: bytes, max_pixels: int) -> str | None:
    """What is wrong with fetched reference bytes (read from the header only), or None."""
    return image_problem(io.BytesIO(data), max_pixels)


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What a reference file was when the run started: the bytes uploaded must be those."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, stat: os.stat_result) -> FileStamp:
        return cls(stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def stamp_files(items: Iterable[Item]) -> dict[str, FileStamp | None]:
    """Stamp every local reference of `items` (None: missing), once per distinct path."""
    stamps: dict[str, FileStamp | None] = {}
    for item in items:
        for reference in item.references:
            path = reference.value
            if reference.kind == "file" and path not in stamps:
                try:
                    stamps[path] = FileStamp.of(os.stat(path))
                except OSError:
                    stamps[path] = None
    return stamps


def _changed(path: str, *, removed: bool) -> ChangedReferenceError:
    what = "was removed" if removed else "changed"
    return ChangedReferenceError(
        f"reference {path} {what} after the manifest was validated; nothing was uploaded "
        "or submitted for this item",
        "put the file back as it was, or check the new one (scenario-batch validate), "
        "then run again with --retry-failed",
    )


def read_reference(path: str, stamp: FileStamp | None) -> tuple[bytes, str]:
    """The bytes of a local reference and their sha256, read only if the file is still
    the one stamped at the start (and did not change while it was read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise _changed(path, removed=True) from None
    except OSError as exc:
        raise file_fault(exc, "cannot read the reference", path) from exc
    try:
        before = FileStamp.of(os.fstat(fd))
        if stamp is not None and before != stamp:
            raise _changed(path, removed=False)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        if FileStamp.of(os.fstat(fd)) != before:
            raise _changed(path, removed=False)
    except OSError as exc:
        raise file_fault(exc, "cannot read the reference", path) from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return data, hashlib.sha256(data).hexdigest()
