"""Scale: validating a 100,000-item manifest, loading a 100,000-entry ledger (each in a
fresh process, for honest time and peak RSS)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.clients import peak_rss_mb
from bench.workload import write_bulk_manifest


@dataclass(slots=True)
class Timed:
    what: str
    count: int
    seconds: float
    peak_rss_mb: float  # the whole process: interpreter and imports included
    base_rss_mb: float  # the same process before the work started


def _validate(path: Path, conn: Any) -> None:
    from batch.manifest import load_manifest

    base = peak_rss_mb()
    started = time.perf_counter()
    manifest = load_manifest(path)
    seconds = time.perf_counter() - started
    conn.send(asdict(Timed("validate", len(manifest.items), seconds, peak_rss_mb(), base)))


def _load_ledger(directory: Path, conn: Any) -> None:
    from batch.ledger import load_state

    base = peak_rss_mb()
    started = time.perf_counter()
    state = load_state(directory)
    seconds = time.perf_counter() - started
    conn.send(asdict(Timed("ledger load", len(state.items), seconds, peak_rss_mb(), base)))


def _in_child(target: Any, arg: Path) -> Timed:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=target, args=(arg, child))
    process.start()
    raw = parent.recv()
    process.join()
    return Timed(**raw)


def manifest_validate(root: Path, images: int, prompts: int) -> Timed:
    """images x prompts items in one bulk job (a folder of images, a list of prompts)."""
    path = write_bulk_manifest(root, images, prompts=prompts)
    return _in_child(_validate, path)


def write_ledger(directory: Path, items: int, images: int = 1000) -> int:
    """A ledger as a finished run leaves it: per item planned, submitting, submitted,
    succeeded (with its file); plus the uploads of the shared images. Returns its size."""
    directory.mkdir(parents=True, exist_ok=True)
    ts = "2026-11-25T18:00:00.000Z"
    path = directory / "ledger.jsonl"
    handle = path.open("w")

    def add(record: dict[str, Any]) -> None:
        handle.write(json.dumps({"ts": ts, **record}, separators=(",", ":")) + "\n")

    add({"type": "run", "event": "start", "manifest": "manifest.yaml", "items": items})
    for index in range(images):
        key = hashlib.sha256(str(index).encode()).hexdigest()
        add(
            {
                "type": "asset",
                "key": f"file:/data/images/img{index:06d}.png:900:1",
                "assetId": f"asset_r{index}",
            }
        )
        add({"type": "asset", "key": f"sha256:{key}", "assetId": f"asset_r{index}"})
    for index in range(items):
        item = {"type": "item", "id": f"bench-p{index // images}-img{index % images:06d}"}
        item["fp"] = hashlib.sha256(item["id"].encode()).hexdigest()
        job, out = f"job_{index:012d}", f"asset_o{index:012d}"
        add({**item, "state": "planned", "prompt": f"Turn it into a watercolor number {index}"})
        add(
            {
                **item,
                "state": "submitting",
                "submittedAt": ts,
                "references": [f"asset_r{index % images}"],
            }
        )
        add({**item, "state": "submitted", "jobId": job, "cost": 5.0, "createdAt": ts})
        files = [
            {"path": f"{item['id']}_0.png", "sha256": item["fp"], "size": 48213, "assetId": out}
        ]
        add(
            {
                **item,
                "state": "succeeded",
                "jobId": job,
                "assetIds": [out],
                "files": files,
                "cuCost": 5.0,
            }
        )
    add({"type": "run", "event": "end", "succeeded": items, "failed": 0, "unfinished": 0})
    handle.close()
    return path.stat().st_size


def ledger_load(root: Path, items: int, *, snapshot: bool = False) -> Timed:
    """Load time of a finished run's ledger. With `snapshot`, the writer is opened and
    closed once first, as at the end of every run, which leaves ledger.snapshot.json."""
    write_ledger(root / "ledger", items)
    if snapshot:
        from batch.ledger import LedgerWriter

        writer = LedgerWriter(root / "ledger")
        writer.open()
        writer.close()
    return _in_child(_load_ledger, root / "ledger")
