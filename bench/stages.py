"""Where a pipeline job's added latency goes: a timestamp per item at each stage after its
job ends (seen final, URLs known, a download slot taken, file settled).

Installed only in the benchmark's client process. It wraps three private pieces of
`batch.run.pipeline` (the poller wait, the download step, the fetch); if they change, the
smoke test (tests/test_bench_smoke.py) says so.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

STAGES = ("seen", "urls", "download", "settled")


def install(marks: dict[str, dict[str, Any]]) -> None:
    """From now on, fill `marks`: item id -> stage -> epoch seconds (and "job": job id)."""
    import batch.run.pipeline as pipeline

    run = pipeline.Run
    wait_for_job, download, fetch_output = run._wait_for_job, run._download, pipeline.fetch_output

    async def timed_wait(self: Any, item: Any, job_id: str, *args: Any, **kwargs: Any) -> Any:
        final = await wait_for_job(self, item, job_id, *args, **kwargs)
        marks[item.id] = {"job": job_id, "seen": time.time()}
        return final

    async def timed_download(self: Any, item: Any, job: Any, urls: Any) -> None:
        marks.setdefault(item.id, {})["urls"] = time.time()
        await download(self, item, job, urls)

    async def timed_fetch(session: Any, url: str, directory: Path, stem: str, **kw: Any) -> Any:
        item_id = stem.rsplit("_", 1)[0]  # `<item id>_<n>`: the bench's items have one output
        marks.setdefault(item_id, {})["download"] = time.time()
        fetched = await fetch_output(session, url, directory, stem, **kw)
        marks[item_id]["settled"] = time.time()
        return fetched

    setattr(run, "_wait_for_job", timed_wait)  # noqa: B010 (private hooks, bench only)
    setattr(run, "_download", timed_download)  # noqa: B010
    setattr(pipeline, "fetch_output", timed_fetch)  # noqa: B010


def by_job(marks: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    """job id -> the stages' times in STAGES order, for items that went through them all."""
    return {
        str(m["job"]): [float(m[s]) for s in STAGES]
        for m in marks.values()
        if "job" in m and all(s in m for s in STAGES)
    }
