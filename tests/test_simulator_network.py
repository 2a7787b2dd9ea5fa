"""The simulator's network and job-time knobs do what they say: round trips split half
before the request takes effect and half on the way back, API and CDN apart; job times
uniform or lognormal around their mean, seeded."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Callable

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.simulator import MODEL_ID, SimulatorConfig
from batch.simulator.faults import Faults
from tests.conftest import SimulatorFactory
from tests.test_simulator_faults import AUTH, reference


async def _timed_submit(http: aiohttp.ClientSession, base: str, ref: str) -> tuple[float, float]:
    """(epoch when sent, seconds to the answer) of one generate call."""
    sent, started = time.time(), time.perf_counter()
    body = {"prompt": "rtt", "referenceImages": [ref]}
    async with http.post(f"{base}/generate/custom/{MODEL_ID}", json=body) as response:
        assert response.status == 200
        await response.read()
    return sent, time.perf_counter() - started


async def test_api_round_trip_is_half_before_and_half_after(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """api_rtt_s=0.3: each API call takes at least 0.3 s, and its job is created at least
    0.15 s after the call was sent and at least 0.15 s before the answer arrived."""
    sim = await simulator_factory(api_rtt_s=0.3, cdn_rtt_s=0.0)
    ref = await reference(sim, png_bytes())
    async with aiohttp.ClientSession(headers=AUTH) as http:
        sent, took = await _timed_submit(http, sim.base_url, ref)
        job = next(iter(sim.jobs.values()))
        assert took >= 0.3
        assert job.created - sent >= 0.15 - 0.01
        assert (sent + took) - job.created >= 0.15 - 0.01
        url = sim.asset_url(next(iter(sim.assets.values())))
        started = time.perf_counter()
        async with http.get(url) as response:
            assert response.status == 200
        assert time.perf_counter() - started < 0.15, "the CDN has its own round trip: none here"


async def test_cdn_round_trip_is_its_own(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """cdn_rtt_s=0.3 with no API round trip: CDN downloads take >= 0.3 s, API calls do not."""
    sim = await simulator_factory(api_rtt_s=0.0, cdn_rtt_s=0.3)
    ref = await reference(sim, png_bytes())
    async with aiohttp.ClientSession(headers=AUTH) as http:
        _, took = await _timed_submit(http, sim.base_url, ref)
        assert took < 0.15
        started = time.perf_counter()
        async with http.get(sim.asset_url(sim.assets[ref])) as response:
            assert response.status == 200
        assert time.perf_counter() - started >= 0.3


def test_defaults_add_no_round_trip_and_keep_uniform_times() -> None:
    """The defaults are unchanged: no round trip, uniform job times within mean x (1 +- 0.25)."""
    config = SimulatorConfig()
    assert (config.api_rtt_s, config.cdn_rtt_s) == (0.0, 0.0)
    assert config.job_latency_distribution == "uniform"


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    mean=st.floats(0.5, 10.0),
    jitter=st.floats(0.0, 1.0),
)
def test_uniform_job_times_stay_within_the_spread(seed: int, mean: float, jitter: float) -> None:
    """Uniform: every duration within mean x (1 +- jitter), the same for the same seed, and
    turning another job knob on does not move them."""
    config = SimulatorConfig(seed=seed, job_latency_s=mean, job_latency_jitter=jitter)
    first = Faults(config).for_job().duration_s
    draws = Faults(config)
    many = [draws.for_job().duration_s for _ in range(300)]
    assert many[0] == first
    assert all(mean * (1 - jitter) - 1e-9 <= d <= mean * (1 + jitter) + 1e-9 for d in many)
    failing = Faults(
        SimulatorConfig(
            seed=seed, job_latency_s=mean, job_latency_jitter=jitter, job_failure_rate=0.5
        )
    )
    assert [failing.for_job().duration_s for _ in range(300)] == many


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), sigma=st.floats(0.2, 1.0))
def test_lognormal_job_times_keep_the_mean_with_the_given_sigma(seed: int, sigma: float) -> None:
    """Lognormal: positive durations whose mean is job_latency_s and whose log has standard
    deviation sigma (within sampling error of 20,000 draws); seeded."""
    config = SimulatorConfig(
        seed=seed, job_latency_s=4.0, job_latency_distribution="lognormal", job_latency_sigma=sigma
    )
    draws = Faults(config)
    durations = [draws.for_job().duration_s for _ in range(20_000)]
    assert min(durations) > 0
    # The sample mean's standard error is mean x sqrt(exp(sigma^2) - 1) / sqrt(n).
    error = 4.0 * math.sqrt(math.exp(sigma**2) - 1) / math.sqrt(len(durations))
    assert abs(statistics.fmean(durations) - 4.0) < 5 * error
    assert abs(statistics.stdev(math.log(d) for d in durations) - sigma) < 0.03
    again = Faults(config)
    assert [again.for_job().duration_s for _ in range(10)] == durations[:10]


@pytest.mark.parametrize(
    ("knobs", "named"),
    [
        ({"api_rtt_s": -0.1}, "api_rtt_s"),
        ({"cdn_rtt_s": -1}, "cdn_rtt_s"),
        ({"job_latency_distribution": "pareto"}, "job_latency_distribution"),
        ({"job_latency_sigma": -0.5}, "job_latency_sigma"),
    ],
)
def test_bad_network_knobs_are_refused(knobs: dict[str, object], named: str) -> None:
    """A negative round trip or sigma, or an unknown distribution: ValueError naming the knob."""
    with pytest.raises(ValueError, match=named):
        SimulatorConfig(**knobs)  # type: ignore[arg-type]


async def test_short_pages_of_a_filtered_list_still_carry_a_token(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """The poller's query (status=success, newest update first) with half the pages cut
    short: some pages short or empty, yet following tokens lists every finished job once."""
    sim = await simulator_factory(list_short_page_rate=0.5, job_latency_s=0.01, seed=4)
    ref = await reference(sim, png_bytes())
    async with aiohttp.ClientSession(headers=AUTH) as http:
        for _ in range(25):
            await _timed_submit(http, sim.base_url, ref)
        await asyncio.sleep(0.1)
        seen: list[str] = []
        sizes: list[int] = []
        token: str | None = None
        for _ in range(200):
            query = {"status": "success", "pageSize": "4"}
            if token:
                query["paginationToken"] = token
            async with http.get(f"{sim.base_url}/jobs", params=query) as response:
                page = await response.json()
            seen += [job["jobId"] for job in page["jobs"]]
            sizes.append(len(page["jobs"]))
            token = page.get("nextPaginationToken")
            if token is None:
                break
    assert sorted(seen) == sorted(sim.jobs) and len(seen) == len(set(seen)) == 25
    assert any(size < 4 for size in sizes[:-1])
