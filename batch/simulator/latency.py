"""The network between a client and the simulator: a round trip added to every request.

Half of it passes before the request takes effect (a job is created half a trip after
the client sent its submit) and half on the way back (the answer reaches the client half
a trip after the simulator wrote it). Connection set-up (TCP and TLS handshakes) is not
delayed: clients that keep connections alive pay it once, as on a real network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def round_trip(rtt_s: float) -> list[Middleware]:
    """The middleware that adds `rtt_s` to every request (none when it is 0)."""
    if rtt_s <= 0:
        return []
    half = rtt_s / 2

    @web.middleware
    async def delayed(request: web.Request, handler: Handler) -> web.StreamResponse:
        await asyncio.sleep(half)
        response = await handler(request)
        await asyncio.sleep(half)
        return response

    return [delayed]
