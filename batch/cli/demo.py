"""`make demo`: run configs/example.yaml against the simulator, started in-process.

This module and the CLI are the only places where the product meets the simulator.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from batch.api.settings import ApiSettings
from batch.cli.main import one_line_summary, run_with_signals
from batch.logs import configure_logging
from batch.manifest.load import load_manifest
from batch.run.pipeline import RunOptions, RunSummary, run_manifest
from batch.run.progress import BarProgress, LineProgress, Progress
from batch.simulator import SimulatorConfig, running_simulator

DEMO_KEY = "demo-key"
DEMO_SECRET = "demo-secret"


async def demo(manifest_path: Path) -> tuple[RunSummary, Path]:
    manifest = load_manifest(manifest_path)
    config = SimulatorConfig(seed=7, api_key=DEMO_KEY, api_secret=DEMO_SECRET, job_latency_s=1.5)
    async with running_simulator(config) as sim:
        print(f"simulator: API {sim.base_url}, CDN {sim.cdn_url}", file=sys.stderr)
        settings = ApiSettings(base_url=sim.base_url, api_key=DEMO_KEY, api_secret=DEMO_SECRET)
        assert manifest.output is not None
        options = RunOptions(out_dir=manifest.output, concurrency=manifest.concurrency or 4)
        progress: Progress = BarProgress() if sys.stderr.isatty() else LineProgress()
        summary = await run_manifest(manifest, settings, options, progress=progress)
    return summary, manifest.output


def main() -> int:
    configure_logging()
    here = Path(os.environ.get("DEMO_MANIFEST", "configs/example.yaml"))
    try:
        summary, out = run_with_signals(demo(here))
    except KeyboardInterrupt:
        return 130
    print(one_line_summary(summary, out))
    print(f"outputs: {out.resolve()}")
    print(f"ledger:  {(out / 'ledger.jsonl').resolve()}")
    report = out / "report.html"
    if report.exists():
        print(f"report:  {report.resolve()}")
    return summary.exit_code


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = ["demo", "main"]
