"""URLs we are handed rather than build: presigned ones (part uploads, outputs on the CDN)
and the redirects between hops, followed by hand.

Why by hand: aiohttp re-quotes a URL given as text and a redirect's Location, which
rewrites `%2F`, `%7E` or `%2B` in a signed query (a signature over the exact query can
then be refused), and it would send a request down an https -> http redirect before we
could refuse it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import aiohttp
import yarl

MAX_REDIRECTS: Final = 3
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})

# What never appears in a URL as sent on the wire: a URL holding any of it is not
# percent-encoded yet, so yarl may quote it.
_NOT_ENCODED = re.compile(r'[^\x21-\x7e]|["<>\\^`{|}]')


def signed_url(url: str) -> yarl.URL:
    """`url` as given when it is already encoded (a presigned URL is), else quoted by
    yarl (spaces, non-ASCII). An unparsable one raises aiohttp.InvalidURL, as aiohttp
    itself would."""
    try:
        if _NOT_ENCODED.search(url):
            return yarl.URL(url)
        return yarl.URL(url, encoded=True)
    except (ValueError, UnicodeError) as exc:
        raise aiohttp.InvalidURL(url) from exc


class RedirectRefused(ValueError):
    """A redirect not followed; the message says why."""


@contextlib.asynccontextmanager
async def get_following_redirects(
    session: aiohttp.ClientSession,
    url: str,
    *,
    max_redirects: int = MAX_REDIRECTS,
    client_timeout: aiohttp.ClientTimeout | None = None,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """GET `url` without credentials, following at most `max_redirects` redirects by hand:
    every hop goes out as given, and none is taken off http(s) or from https down to http
    (RedirectRefused, before anything is sent there). `client_timeout`: None keeps the
    session's (aiohttp reads an explicit None as no timeout at all)."""
    options: dict[str, Any] = {"allow_redirects": False}
    if client_timeout is not None:
        options["timeout"] = client_timeout
    current = url
    for _ in range(max_redirects + 1):
        async with session.get(signed_url(current), **options) as response:
            if response.status not in REDIRECT_STATUSES:
                yield response
                return
            current = redirect_target(current, response.headers.get("Location"))
    raise RedirectRefused(f"more than {max_redirects} redirects")


def redirect_target(current: str, location: str | None) -> str:
    """The next hop of a redirect from `current`. RedirectRefused when there is no
    Location, or it leads off http(s), or from https down to plain http."""
    if not location:
        raise RedirectRefused("a redirect without a Location")
    target = urljoin(current, location)
    scheme = urlsplit(target).scheme.lower()
    came_from = urlsplit(current).scheme.lower()
    if scheme not in ("http", "https") or (scheme == "http" and came_from == "https"):
        raise RedirectRefused(
            f"refused a redirect from {came_from} to {scheme or 'an unknown scheme'}"
        )
    return target
