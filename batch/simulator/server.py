"""Running the simulator: on loopback for tests, or until cancelled for the CLI."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from .config import SimulatorConfig
from .simulator import Simulator
from .tls import TlsIdentity


async def _start(
    app: web.Application, host: str, port: int, tls: ssl.SSLContext | None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    await site.start()
    # runner.addresses holds the bound (host, port) of every site, port 0 resolved.
    bound: int = runner.addresses[-1][1]
    return runner, bound


@asynccontextmanager
async def running_simulator(
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    cdn_port: int = 0,
    *,
    tls: TlsIdentity | None = None,
) -> AsyncIterator[Simulator]:
    """Serve the API and CDN apps (port 0: any free port); yields the Simulator.
    With `tls`, both serve https with that identity's certificate."""
    sim = Simulator(config)
    sim.tls = tls
    context = tls.server_context() if tls is not None else None
    scheme = "https" if tls is not None else "http"
    runners: list[web.AppRunner] = []
    try:
        cdn_runner, cdn_bound = await _start(sim.cdn_app(), host, cdn_port, context)
        runners.append(cdn_runner)
        sim.cdn_url = f"{scheme}://{host}:{cdn_bound}"
        api_runner, api_bound = await _start(sim.api_app(), host, port, context)
        runners.append(api_runner)
        sim.base_url = f"{scheme}://{host}:{api_bound}/v1"
        yield sim
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


async def serve(
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8750,
    cdn_port: int | None = None,
    *,
    tls: TlsIdentity | None = None,
) -> None:
    """Serve until cancelled; the CDN listens on port+1 unless cdn_port says otherwise."""
    async with running_simulator(
        config, host, port, cdn_port if cdn_port is not None else port + 1, tls=tls
    ) as sim:
        print(f"Scenario API simulator: API {sim.base_url}  CDN {sim.cdn_url}", flush=True)
        await asyncio.Event().wait()
