"""`scenario-batch simulate`: the API simulator on this machine, with the knobs a user
needs to try the tool against an API that behaves like the real one far away (round
trips, wide job times, short list pages, https with a private CA)."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from batch.durable import write_atomically
from batch.errors import UsageError


def add_simulate_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate = commands.add_parser("simulate", help="serve the Scenario API simulator")
    simulate.add_argument("--port", type=int, default=8750)
    simulate.add_argument("--cdn-port", type=int, help="default: PORT + 1")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--latency", type=float, default=2.0, help="mean job seconds")
    simulate.add_argument(
        "--distribution",
        choices=("uniform", "lognormal"),
        default="uniform",
        help="how job times spread around --latency (default: uniform)",
    )
    simulate.add_argument(
        "--jitter", type=float, default=0.25, help="uniform: job times within mean x (1 +- J)"
    )
    simulate.add_argument(
        "--sigma", type=float, default=0.6, help="lognormal: sigma of the log of job times"
    )
    simulate.add_argument(
        "--api-rtt", type=float, default=0.0, help="seconds of network round trip per API call"
    )
    simulate.add_argument(
        "--cdn-rtt", type=float, default=0.0, help="seconds of network round trip per CDN call"
    )
    simulate.add_argument(
        "--short-page-rate",
        type=float,
        default=0.0,
        help="share of job-list pages cut short (even empty) that still carry a next token",
    )
    simulate.add_argument("--failure-rate", type=float, default=0.0)
    simulate.add_argument("--parallel-limit", type=int, help="account ceiling on running jobs")
    simulate.add_argument(
        "--tls",
        action="store_true",
        help="serve https with a throwaway CA (needs the trustme package); "
        "its certificate is written to --ca-file",
    )
    simulate.add_argument(
        "--ca-file", type=Path, help="with --tls: where to write the CA (default: a temp file)"
    )


def serving(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    """The coroutine that serves until cancelled (the caller handles signals); the CA
    certificate, with --tls, is written first."""
    from batch.simulator import SimulatorConfig, TlsIdentity, make_identity, serve

    try:
        config = SimulatorConfig(
            seed=args.seed,
            job_latency_s=args.latency,
            job_latency_distribution=args.distribution,
            job_latency_jitter=args.jitter,
            job_latency_sigma=args.sigma,
            api_rtt_s=args.api_rtt,
            cdn_rtt_s=args.cdn_rtt,
            list_short_page_rate=args.short_page_rate,
            job_failure_rate=args.failure_rate,
            parallel_jobs_limit=args.parallel_limit,
        )
    except ValueError as exc:
        raise UsageError(f"simulate: {exc}") from None
    tls: TlsIdentity | None = None
    if args.tls:
        try:
            tls = make_identity()
        except RuntimeError as exc:
            raise UsageError(f"simulate --tls: {exc}") from None
        ca_file = args.ca_file or Path(tempfile.mkdtemp(prefix="scenario-sim-")) / "ca.pem"
        try:
            write_atomically(ca_file, tls.ca_pem)
        except OSError as exc:
            raise UsageError(f"simulate --ca-file {ca_file}: {exc.strerror or exc}") from None
        print(f"CA certificate: {ca_file} (clients: export SSL_CERT_FILE={ca_file})", flush=True)
    elif args.ca_file:
        raise UsageError("simulate: --ca-file goes with --tls")
    return serve(config, port=args.port, cdn_port=args.cdn_port, tls=tls)
