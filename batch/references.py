"""Reference images -> asset ids, each distinct image uploaded once per output directory.

An image is identified by the sha256 of its bytes, so two paths to the same bytes share one
upload. A local file is also remembered by (path, size, mtime) so that a resume need not
read and hash thousands of files again just to learn they were uploaded already. Every
upload is recorded in the ledger before any job uses it.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import aiofiles
import aiohttp

from batch.api import ScenarioClient
from batch.errors import PermanentApiError, TransientApiError
from batch.manifest import Item, Reference

MAX_REMOTE_BYTES: Final = 50 * 1024 * 1024
MAX_REDIRECTS: Final = 3

RecordAsset = Callable[[Mapping[str, Any]], Awaitable[None]]


class References:
    def __init__(
        self,
        client: ScenarioClient,
        session: aiohttp.ClientSession,
        known: Mapping[str, str],
        record: RecordAsset,
    ) -> None:
        self._client = client
        self._session = session
        self._known = dict(known)  # reference key -> asset id (from the ledger)
        self._record = record
        self._in_progress: dict[str, asyncio.Future[str]] = {}
        self.uploads = 0

    async def asset_ids(self, item: Item) -> list[str]:
        return [await self.asset_id(reference) for reference in item.references]

    async def asset_id(self, reference: Reference) -> str:
        if reference.kind == "asset":
            return reference.value
        if reference.kind == "file":
            quick_key = _file_key(reference.value)
            if quick_key in self._known:
                return self._known[quick_key]
            return await self._once(quick_key, lambda: self._upload_file(reference.value))
        url_key = f"url:{reference.value}"
        if url_key in self._known:
            return self._known[url_key]
        return await self._once(url_key, lambda: self._upload_url(reference.value))

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
        async with aiofiles.open(path, "rb") as handle:
            data = await handle.read()
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return await self._upload_bytes(data, os.path.basename(path), content_type)

    async def _upload_bytes(self, data: bytes, name: str, content_type: str) -> str:
        content_key = "sha256:" + hashlib.sha256(data).hexdigest()
        if content_key in self._known:
            return self._known[content_key]
        asset_id = await self._client.upload_image(data, name, content_type)
        self.uploads += 1
        self._known[content_key] = asset_id
        await self._record({"type": "asset", "key": content_key, "assetId": asset_id})
        return asset_id

    async def _upload_url(self, url: str) -> str:
        """Fetch a reference given as an https URL (no credentials go there), then upload."""
        try:
            async with self._session.get(url, max_redirects=MAX_REDIRECTS) as response:
                if response.status != 200:
                    raise PermanentApiError(f"reference {url} answered HTTP {response.status}")
                content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
                if not content_type.startswith("image/"):
                    raise PermanentApiError(
                        f"reference {url} is not an image (Content-Type {content_type!r})"
                    )
                declared = response.content_length
                if declared is not None and declared > MAX_REMOTE_BYTES:
                    raise PermanentApiError(f"reference {url} is {declared} bytes, over the limit")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(256 * 1024):
                    size += len(chunk)
                    if size > MAX_REMOTE_BYTES:
                        raise PermanentApiError(
                            f"reference {url} exceeds {MAX_REMOTE_BYTES} bytes; refused"
                        )
                    chunks.append(chunk)
        except aiohttp.TooManyRedirects as exc:
            raise PermanentApiError(
                f"reference {url}: more than {MAX_REDIRECTS} redirects"
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientApiError(f"cannot fetch reference {url}: {exc}") from exc
        name = url.rsplit("/", 1)[-1].split("?")[0] or "reference"
        return await self._upload_bytes(b"".join(chunks), name, content_type)


def _file_key(path: str) -> str:
    try:
        stat = os.stat(path)
    except OSError:
        return f"file:{path}"
    return f"file:{path}:{stat.st_size}:{stat.st_mtime_ns}"
