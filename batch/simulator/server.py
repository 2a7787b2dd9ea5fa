"""Running the simulator: on loopback for tests, or until cancelled for the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from .config import SimulatorConfig
from .simulator import Simulator


async def _start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
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
) -> AsyncIterator[Simulator]:
    """Serve the API and CDN apps (port 0: any free port); yields the Simulator."""
    sim = Simulator(config)
    runners: list[web.AppRunner] = []
    try:
        cdn_runner, cdn_bound = await _start(sim.cdn_app(), host, cdn_port)
        runners.append(cdn_runner)
        sim.cdn_url = f"http://{host}:{cdn_bound}"
        api_runner, api_bound = await _start(sim.api_app(), host, port)
        runners.append(api_runner)
        sim.base_url = f"http://{host}:{api_bound}/v1"
        yield sim
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


async def serve(
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8750,
    cdn_port: int | None = None,
) -> None:
    """Serve until cancelled; the CDN listens on port+1 unless cdn_port says otherwise."""
    async with running_simulator(
        config, host, port, cdn_port if cdn_port is not None else port + 1
    ) as sim:
        print(f"Scenario API simulator: API {sim.base_url}  CDN {sim.cdn_url}", flush=True)
        await asyncio.Event().wait()
