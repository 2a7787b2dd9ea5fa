"""Shared fixtures: the Scenario API simulator on loopback, port 0."""

from __future__ import annotations

import io
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from PIL import Image

from batch.simulator import (
    Simulator,
    SimulatorConfig,
    running_simulator,
)
from tests.tls_helpers import shared_tls_identity

# Credentials the `simulator` fixture accepts (it accepts any non-empty pair; a test
# that needs exact matching builds its own config with api_key/api_secret).
TEST_API_KEY = "test-key"
TEST_API_SECRET = "test-secret"
FAST = SimulatorConfig(job_latency_s=0.05, upload_processing_s=0.01)

SimulatorFactory = Callable[..., Awaitable[Simulator]]


@pytest.fixture(autouse=True)
def isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """Every test gets its own user cache directory (model declarations are cached there)."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy_from_the_developer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy set in the developer's shell must not carry the tests' loopback traffic."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def transport(request: pytest.FixtureRequest) -> str:
    """ "http" unless a test parametrizes it (`over_http_and_https`): "https" serves the
    simulator with shared_tls_identity()."""
    return str(getattr(request, "param", "http"))


# Runs a test once over plain http and once over https (a private CA the client trusts).
over_http_and_https = pytest.mark.parametrize("transport", ["http", "https"], indirect=True)


@pytest.fixture
async def simulator_factory(transport: str) -> AsyncIterator[SimulatorFactory]:
    """`await simulator_factory(config=None, **knobs)` starts a simulator; all stop at teardown.

    Knobs given as keywords override `config` (default: the fast, fault-free FAST config).
    """
    tls = shared_tls_identity() if transport == "https" else None
    async with AsyncExitStack() as stack:

        async def make(config: SimulatorConfig | None = None, **knobs: Any) -> Simulator:
            base = config if config is not None else FAST
            if knobs:
                base = SimulatorConfig(**{**_as_dict(base), **knobs})
            return await stack.enter_async_context(running_simulator(base, tls=tls))

        yield make


def _as_dict(config: SimulatorConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in SimulatorConfig.__dataclass_fields__}


@pytest.fixture
async def simulator(simulator_factory: SimulatorFactory) -> Simulator:
    """A fault-free simulator with 0.05 s jobs and any credentials accepted."""
    return await simulator_factory()


@pytest.fixture
def scenario_env(simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> Simulator:
    """The `simulator`, with SCENARIO_BASE_URL and SDK credentials pointing at it."""
    monkeypatch.setenv("SCENARIO_BASE_URL", simulator.base_url)
    monkeypatch.setenv("SCENARIO_SDK_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("SCENARIO_SDK_API_SECRET", TEST_API_SECRET)
    monkeypatch.delenv("SCENARIO_PROJECT_ID", raising=False)
    return simulator


def make_png(
    width: int = 64,
    height: int = 48,
    color: tuple[int, int, int] = (200, 40, 40),
    *,
    noisy: bool = False,
) -> bytes:
    """A PNG with stripes (noisy=True: seeded noise, about 3 bytes per pixel, incompressible)."""
    if noisy:
        raw = random.Random(f"{width}x{height}{color}").randbytes(width * height * 3)
        img = Image.frombytes("RGB", (width, height), raw)
    else:
        img = Image.new("RGB", (width, height), color)
        for x in range(width):
            for y in range(0, height, 4):
                img.putpixel((x, y), (x * 4 % 256, y * 5 % 256, 128))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def png_bytes() -> Callable[..., bytes]:
    """`png_bytes(width=64, height=48, color=(r, g, b), noisy=False)` -> PNG bytes."""
    return make_png
