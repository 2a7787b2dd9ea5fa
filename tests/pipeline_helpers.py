"""Helpers shared by the end-to-end tests: manifests on disk, runs, ledger checks."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from batch.api.network import NetworkSettings
from batch.api.settings import ApiSettings, RetryPolicy
from batch.ledger.journal import load_state
from batch.manifest.load import load_manifest
from batch.run.pipeline import RunOptions, RunSummary, run_manifest
from batch.run.poller import PollPolicy
from batch.simulator import RequestRecord, Simulator
from tests.conftest import TEST_API_KEY, TEST_API_SECRET, make_png

FAST_POLL = PollPolicy(
    min_interval_s=0.02, initial_interval_s=0.05, max_interval_s=0.5, sweep_every_s=0.25
)
FAST_RETRY = RetryPolicy(attempts=8, initial_wait_s=0.01, max_wait_s=0.2, total_s=30)


def write_images(folder: Path, count: int, *, size: tuple[int, int] = (32, 24)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"img{index:04d}.png"
        color = (index * 37 % 256, index * 91 % 256, index * 13 % 256)
        path.write_bytes(make_png(*size, color=color))
        paths.append(path)
    return paths


def write_manifest(folder: Path, jobs: list[dict[str, Any]], **top: Any) -> Path:
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump({**top, "jobs": jobs}, sort_keys=False))
    return path


def numbered_manifest(
    folder: Path, count: int, prompt: str, *, images: int = 6, **top: Any
) -> Path:
    """`count` items `item-NN` ("<prompt> N", one of `images` images, 1 or 2 outputs)."""
    write_images(folder / "images", images)
    jobs = [
        {
            "id": f"item-{n:03d}",
            "prompt": f"{prompt} {n}",
            "referenceImages": [f"images/img{n % images:04d}.png"],
            "numOutputs": 1 + n % 2,
        }
        for n in range(count)
    ]
    return write_manifest(folder, jobs, **top)


def settings_for(sim: Simulator, **changes: Any) -> ApiSettings:
    """Settings for `sim`; over https, trusting its CA (and nothing else)."""
    if sim.tls is not None and "network" not in changes:
        changes["network"] = NetworkSettings(ca_data=sim.tls.ca_pem.decode())
    return ApiSettings(
        base_url=sim.base_url,
        api_key=TEST_API_KEY,
        api_secret=TEST_API_SECRET,
        retry=changes.pop("retry", FAST_RETRY),
        **changes,
    )


async def run(
    sim: Simulator,
    manifest_path: Path,
    out: Path,
    *,
    settings: Mapping[str, Any] | None = None,
    **options: Any,
) -> RunSummary:
    """Run a manifest against `sim`; `settings` changes ApiSettings fields (see settings_for)."""
    manifest = load_manifest(manifest_path)
    run_options = RunOptions(out_dir=out, poll=options.pop("poll", FAST_POLL), **options)
    return await run_manifest(manifest, settings_for(sim, **dict(settings or {})), run_options)


def api_records(sim: Simulator) -> list[RequestRecord]:
    """The API origin's log records, in arrival order."""
    return [r for r in sim.request_log if r.origin == "api"]


def max_in_window(times: Sequence[float], window_s: float = 1.0) -> int:
    """The most timestamps that fall in any half-open window of `window_s` seconds."""
    ordered = sorted(times)
    best = start = 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def jobs_created_per_prompt(sim: Simulator) -> Counter[str]:
    return Counter(
        str(r.body["prompt"])
        for r in sim.request_log
        if r.is_generate and r.job_id is not None and isinstance(r.body, dict)
    )


def assert_outputs_intact(out: Path) -> int:
    """Every succeeded item's files exist with the hash the ledger records; returns the count."""
    state = load_state(out)
    files = 0
    for record in state.items.values():
        if record.state != "succeeded":
            continue
        assert record.files, f"{record.id} succeeded without files"
        for output in record.files:
            data = (out / output.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == output.sha256, output.path
            assert len(data) == output.size
            files += 1
    assert not list(out.glob(".partial-*")), "a temp file survived"
    return files


def ledger_lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines()]
