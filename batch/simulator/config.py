"""The simulator's knobs: one frozen value object, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, fields

MODEL_ID = "model_flux-kontext-editing"
DISTRIBUTIONS = ("uniform", "lognormal")


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Every behaviour of the simulator that a test may want to change.

    Rates are probabilities per event (0.0-1.0); faults are drawn from one
    `random.Random` stream per knob seeded from `seed`, so turning one knob on
    does not shift the pattern of another. See README.md for each knob.
    """

    seed: int = 0
    # None: any non-empty Basic credentials pass; otherwise both must match.
    api_key: str | None = None
    api_secret: str | None = None
    job_latency_s: float = 2.0
    job_latency_jitter: float = 0.25
    job_failure_rate: float = 0.0
    http500_rate: float = 0.0
    http429_rate: float = 0.0
    retry_after_s: float = 0.1
    rate_limit_rps: float | None = None
    reset_rate: float = 0.0
    drop_after_submit_rate: float = 0.0
    truncate_rate: float = 0.0
    stall_rate: float = 0.0
    url_lifetime_s: float = 3600.0
    parallel_jobs_limit: int | None = None
    inline_upload_limit_bytes: int = 100_000
    list_short_page_rate: float = 0.0
    cost_per_output: float = 5.0
    upload_processing_s: float = 0.05
    # Added knobs (not in the original brief).
    # Burst size of the rate-limit token bucket; None: one second's worth (max(1, rps)).
    rate_limit_burst: float | None = None
    # Most reference images a generate call takes.
    max_reference_images: int = 4
    # False: log only generate calls (keeps memory flat in 100k-job benchmarks).
    record_requests: bool = True
    # Largest side of an output image, in pixels.
    output_max_px: int = 256
    # (start, end) windows in seconds after the first API request: every API call answers 503.
    outage_windows: tuple[tuple[float, float], ...] = ()
    # Models whose generate calls answer 403 naming the model and the plan it needs.
    forbidden_models: tuple[str, ...] = ()
    # CDN download: the full Content-Length of bytes that are not an image (an HTML page).
    corrupt_rate: float = 0.0
    # The network between client and simulator: seconds of round trip added to every API
    # (CDN) request, half before the request takes effect and half on the way back.
    api_rtt_s: float = 0.0
    cdn_rtt_s: float = 0.0
    # How job durations spread around job_latency_s: "uniform" (mean x (1 +- jitter)) or
    # "lognormal" (mean kept, log of the duration normal with job_latency_sigma).
    job_latency_distribution: str = "uniform"
    job_latency_sigma: float = 0.6

    def __post_init__(self) -> None:
        problems: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_rate") and not 0.0 <= value <= 1.0:
                problems.append(f"{f.name}: must be 0.0-1.0, got {value!r}")
        if self.job_latency_s < 0:
            problems.append(f"job_latency_s: must be >= 0, got {self.job_latency_s!r}")
        if not 0.0 <= self.job_latency_jitter <= 1.0:
            problems.append(f"job_latency_jitter: must be 0.0-1.0, got {self.job_latency_jitter!r}")
        for name in ("api_rtt_s", "cdn_rtt_s", "job_latency_sigma"):
            if getattr(self, name) < 0:
                problems.append(f"{name}: must be >= 0, got {getattr(self, name)!r}")
        if self.job_latency_distribution not in DISTRIBUTIONS:
            problems.append(
                f"job_latency_distribution: must be one of {', '.join(DISTRIBUTIONS)}, "
                f"got {self.job_latency_distribution!r}"
            )
        if self.rate_limit_rps is not None and self.rate_limit_rps <= 0:
            problems.append(f"rate_limit_rps: must be > 0 or None, got {self.rate_limit_rps!r}")
        if self.parallel_jobs_limit is not None and self.parallel_jobs_limit < 1:
            problems.append(
                f"parallel_jobs_limit: must be >= 1 or None, got {self.parallel_jobs_limit!r}"
            )
        if self.url_lifetime_s <= 0:
            problems.append(f"url_lifetime_s: must be > 0, got {self.url_lifetime_s!r}")
        for start, end in self.outage_windows:
            if not 0.0 <= start < end:
                problems.append(f"outage_windows: need 0 <= start < end, got {(start, end)!r}")
        if (self.api_key is None) != (self.api_secret is None):
            problems.append("api_key and api_secret: set both or neither")
        if problems:
            raise ValueError("invalid SimulatorConfig: " + "; ".join(problems))
