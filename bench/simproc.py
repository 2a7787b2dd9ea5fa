"""The simulator in its own process, so its CPU never counts as the client's.

The parent talks to it over a pipe: the child answers `stats` with request counts by
kind, every job's creation time and planned duration, and its own CPU seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import resource
from collections import Counter
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

from batch.simulator import SimulatorConfig, make_identity, running_simulator


@dataclass(slots=True)
class SimStats:
    requests: dict[str, int] = field(default_factory=dict)  # by kind, see `kind_of`
    jobs: dict[str, tuple[float, float]] = field(default_factory=dict)  # id -> (created, dur)
    cpu_s: float = 0.0

    @property
    def api_requests(self) -> int:
        return sum(n for kind, n in self.requests.items() if kind != "cdn")

    def count(self, *kinds: str) -> int:
        return sum(self.requests.get(kind, 0) for kind in kinds)


def kind_of(origin: str, method: str, path: str) -> str:
    """upload | submit | poll | urls | other (API) or cdn."""
    if origin == "cdn":
        return "cdn"
    if path.startswith("/v1/generate/"):
        return "submit"
    if (path == "/v1/assets" and method == "POST") or path.startswith("/v1/uploads"):
        return "upload"
    if path.startswith("/v1/jobs") and method == "GET":
        return "poll"
    if path == "/v1/assets/get-bulk" or (path.startswith("/v1/assets/") and method == "GET"):
        return "urls"
    return "other"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(knobs: dict[str, Any], tls: bool, conn: multiprocessing.connection.Connection) -> None:
    asyncio.run(_serve(SimulatorConfig(**knobs), tls, conn))


async def _serve(
    config: SimulatorConfig, tls: bool, conn: multiprocessing.connection.Connection
) -> None:
    loop = asyncio.get_running_loop()
    identity = make_identity() if tls else None
    async with running_simulator(config, tls=identity) as sim:
        ca_pem = identity.ca_pem.decode() if identity is not None else None
        conn.send((sim.base_url, sim.cdn_url, ca_pem))
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command != "stats":
                break
            requests = Counter(kind_of(r.origin, r.method, r.path) for r in sim.request_log)
            jobs = {j.id: (j.created, j.plan.duration_s) for j in sim.store.job_order}
            conn.send(asdict(SimStats(dict(requests), jobs, _cpu_seconds())))


class SimProcess:
    """`with SimProcess(job_latency_s=2.0) as sim:` sim.base_url, sim.stats().
    `tls=True`: https with a throwaway CA, whose PEM is then `sim.ca_pem`."""

    def __init__(self, *, tls: bool = False, **knobs: Any) -> None:
        self.knobs = knobs
        self.base_url = ""
        self.cdn_url = ""
        self.ca_pem: str | None = None
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=_child, args=(knobs, tls, child_conn), daemon=True)

    def __enter__(self) -> SimProcess:
        self._process.start()
        if not self._conn.poll(60):
            raise RuntimeError("the simulator process did not start in 60 s")
        self.base_url, self.cdn_url, self.ca_pem = self._conn.recv()
        return self

    def stats(self) -> SimStats:
        self._conn.send("stats")
        raw = self._conn.recv()
        return SimStats(
            raw["requests"], {k: tuple(v) for k, v in raw["jobs"].items()}, raw["cpu_s"]
        )

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
