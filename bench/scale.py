"""Scale: validating a 100,000-item manifest (bulk, and written job by job as scripts
write them), the first submit of a run on the latter, loading a 100,000-entry ledger (each
in a fresh process, for honest time and peak RSS)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.clients import API_KEY, API_SECRET, peak_rss_mb
from bench.simproc import SimProcess
from bench.workload import write_bulk_manifest, write_explicit_manifest, write_table_manifest


@dataclass(slots=True)
class Timed:
    what: str
    count: int
    seconds: float
    peak_rss_mb: float  # the whole process: interpreter and imports included
    base_rss_mb: float  # the same process before the work started
    cpu_s: float = 0.0  # CPU of the work (user + system): the wall on a machine not shared


def _validate(path: Path, conn: Any) -> None:
    from batch.manifest.load import load_manifest

    base = peak_rss_mb()
    started, cpu = time.perf_counter(), time.process_time()
    manifest = load_manifest(path)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    timed = Timed("validate", len(manifest.items), seconds, peak_rss_mb(), base, cpu)
    conn.send(asdict(timed))


def _load_ledger(directory: Path, conn: Any) -> None:
    from batch.ledger.journal import load_state

    base = peak_rss_mb()
    started = time.perf_counter()
    state = load_state(directory)
    seconds = time.perf_counter() - started
    conn.send(asdict(Timed("ledger load", len(state.items), seconds, peak_rss_mb(), base)))


def _in_child(target: Any, *args: Any) -> Timed:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=target, args=(*args, child))
    process.start()
    raw = parent.recv()
    process.join()
    return Timed(**raw)


def manifest_validate(root: Path, images: int, prompts: int) -> Timed:
    """images x prompts items in one bulk job (a folder of images, a list of prompts)."""
    path = write_bulk_manifest(root, images, prompts=prompts)
    return _in_child(_validate, path)


def table_validate(root: Path, images: int, rows: int) -> Timed:
    """A manifest whose one job is a CSV table of `rows` rows over `images` images."""
    timed = _in_child(_validate, write_table_manifest(root, images, rows))
    timed.what = f"validate ({rows:,}-row CSV table over {images:,} images)"
    return timed


# Started from a small interpreter of its own: on Linux a child's peak RSS counts the memory
# of the process it was forked from (this one may be big), which `/usr/bin/time` avoids by
# being small. Prints [wall s, peak MB, CPU s, exit code].
_TIMER = """
import json, os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
code = os.waitstatus_to_exitcode(status)
print(json.dumps([seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, code]))
"""


def _whole_process(argv: list[str]) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MB) and CPU seconds of a command, from its start to its
    exit, as `/usr/bin/time -v` sees them."""
    out = subprocess.run(
        [sys.executable, "-c", _TIMER, *argv], check=True, capture_output=True, text=True
    ).stdout
    seconds, peak, cpu, code = json.loads(out)
    if code != 0:
        raise RuntimeError(f"{argv} exited with {code}")
    return seconds, peak, cpu


def scripted_validate(root: Path, jobs: int, images: int) -> Timed:
    """`scenario-batch validate` on `jobs` explicit jobs over `images` shared images, the
    whole process (start-up included); the base is `validate --help`'s process."""
    path = write_explicit_manifest(root, jobs, images)
    _, base, _ = _whole_process([sys.executable, "-m", "batch", "validate", "--help"])
    argv = [sys.executable, "-m", "batch", "validate", str(path)]
    seconds, peak, cpu = _whole_process(argv)
    what = f"validate ({jobs:,} scripted jobs over {images} images, whole process)"
    return Timed(what, jobs, seconds, peak, base, cpu)


def _vm_hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def first_submit(root: Path, jobs: int, images: int, timeout_s: float = 60.0) -> Timed:
    """Seconds from starting `scenario-batch run` on the scripted manifest (a fresh output
    directory) to the simulator creating its first job, i.e. the first POST /generate
    taking effect; peak RSS is the run's at that moment. The run is then stopped."""
    path = write_explicit_manifest(root, jobs, images)
    env = {
        **os.environ,
        "SCENARIO_SDK_API_KEY": API_KEY,
        "SCENARIO_SDK_API_SECRET": API_SECRET,
    }
    with SimProcess(job_latency_s=2.0) as sim:
        env["SCENARIO_BASE_URL"] = sim.base_url
        argv = [sys.executable, "-m", "batch", "run", str(path), "--out", str(root / "out")]
        started = time.time()  # the simulator stamps jobs with time.time()
        process = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            created: list[float] = []
            peak = 0.0
            while not created and time.time() - started < timeout_s:
                time.sleep(0.05)
                peak = _vm_hwm_mb(process.pid) if process.poll() is None else peak
                created = [at for at, _ in sim.stats().jobs.values()]
            if not created:
                raise RuntimeError(f"no job was created in {timeout_s:.0f} s")
        finally:
            process.kill()
            process.wait()
    what = "run on it: first submit (peak RSS at that moment)"
    return Timed(what, jobs, min(created) - started, peak, 0.0)


def _ledger_records(items: int, images: int) -> Iterator[dict[str, Any]]:
    """A finished run's records: per item planned, submitting, submitted, succeeded (with
    its file); plus the uploads of the shared images."""
    ts = "2026-11-25T18:00:00.000Z"
    yield {"ts": ts, "type": "run", "event": "start", "manifest": "manifest.yaml", "items": items}
    for index in range(images):
        key = hashlib.sha256(str(index).encode()).hexdigest()
        asset = f"asset_r{index}"
        path_key = f"file:/data/images/img{index:06d}.png:900:1"
        yield {"ts": ts, "type": "asset", "key": path_key, "assetId": asset}
        yield {"ts": ts, "type": "asset", "key": f"sha256:{key}", "assetId": asset}
    for index in range(items):
        item = {"ts": ts, "type": "item", "id": f"bench-p{index // images}-img{index % images:06d}"}
        item["fp"] = hashlib.sha256(item["id"].encode()).hexdigest()
        job, out = f"job_{index:012d}", f"asset_o{index:012d}"
        yield {**item, "state": "planned", "prompt": f"Turn it into a watercolor number {index}"}
        yield {
            **item,
            "state": "submitting",
            "submittedAt": ts,
            "references": [f"asset_r{index % images}"],
        }
        yield {**item, "state": "submitted", "jobId": job, "cost": 5.0, "createdAt": ts}
        files = [
            {"path": f"{item['id']}_0.png", "sha256": item["fp"], "size": 48213, "assetId": out}
        ]
        yield {
            **item,
            "state": "succeeded",
            "jobId": job,
            "assetIds": [out],
            "files": files,
            "cuCost": 5.0,
        }
    yield {
        "ts": ts,
        "type": "run",
        "event": "end",
        "succeeded": items,
        "failed": 0,
        "unfinished": 0,
    }


def write_ledger(directory: Path, items: int, images: int = 1000) -> int:
    """A finished run's ledger, written directly (no writer: no snapshot). Returns its size."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ledger.jsonl"
    with path.open("w") as handle:
        for record in _ledger_records(items, images):
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
    return path.stat().st_size


def _killed_run(directory: Path, items: int, conn: Any) -> None:
    """Write the ledger as a run does (through the writer, which checkpoints every 16 MiB),
    then die without closing it, as a kill -9 would."""
    from batch.ledger.journal import LedgerWriter

    writer = LedgerWriter(directory)
    writer.open()
    batch: list[dict[str, Any]] = []
    for record in _ledger_records(items, 1000):
        batch.append(record)
        if len(batch) == 512:  # about a second of a C=256 run's records
            writer.append_many(batch)
            batch = []
            # A run appends ~150 KB/s: checkpoints (seconds each) keep up with it. Writing
            # flat out here would outrun them, so wait for the one under way, if any.
            writer.wait_for_checkpoint(600)
    writer.append_many(batch)
    writer.wait_for_checkpoint(600)  # no checkpoint left to land during the load
    conn.send(asdict(Timed("killed run", items, 0.0, 0.0, 0.0)))
    os._exit(0)


def ledger_load(root: Path, items: int, *, snapshot: bool = False, killed: bool = False) -> Timed:
    """Load time of a finished run's ledger. With `snapshot`, the writer is opened and
    closed once first, as at the end of every run, which leaves ledger.snapshot.json.
    With `killed`, the ledger is written by a run killed before its end: the last
    checkpoint and the lines after it."""
    if killed:
        (root / "ledger").mkdir(parents=True)
        _in_child(_killed_run, root / "ledger", items)
        timed = _in_child(_load_ledger, root / "ledger")
        snapshot_path = root / "ledger" / "ledger.snapshot.json"
        covered = 0  # below the first checkpoint's mark there is no snapshot yet
        if snapshot_path.exists():
            with snapshot_path.open("rb") as header:
                covered = json.loads(header.readline())["ledgerSize"]
        tail = (root / "ledger" / "ledger.jsonl").stat().st_size - covered
        timed.what = f"ledger load (killed run: last checkpoint + {tail / 2**20:.1f} MiB after it)"
        return timed
    write_ledger(root / "ledger", items)
    if snapshot:
        from batch.ledger.journal import LedgerWriter

        writer = LedgerWriter(root / "ledger")
        writer.open()
        writer.close()
    return _in_child(_load_ledger, root / "ledger")
