"""`scenario-batch init FOLDER --prompt ...`: a first manifest, one job per image."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from batch.durable import write_atomically
from batch.errors import UsageError
from batch.manifest.bulk import sanitize
from batch.manifest.load import load_manifest

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def write_starter_manifest(
    folder: Path, prompt: str, manifest: Path | None = None, force: bool = False
) -> Path:
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder")
    target = manifest or folder / "scenario-batch.yaml"
    if target.exists() and not force:
        raise UsageError(f"{target} exists; use --force to overwrite it")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UsageError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    base = target.resolve().parent
    jobs = []
    taken: set[str] = set()
    for image in images:
        item_id = sanitize(image.stem)
        if item_id.lower() in taken:
            item_id = sanitize(image.name)
        taken.add(item_id.lower())
        jobs.append(
            {
                "id": item_id,
                "prompt": prompt,
                "referenceImages": [os.path.relpath(image.resolve(), base)],
            }
        )
    document = {
        "model": "model_flux-kontext-editing",
        "output": "out/{date}",
        "concurrency": 8,
        "defaults": {"aspectRatio": "auto", "quality": "high", "numOutputs": 1},
        "jobs": jobs,
    }
    header = (
        "# Written by `scenario-batch init`. Edit freely; check with `scenario-batch validate`.\n"
        "# The format is in README.md; configs/manifest.schema.json gives editors completion.\n"
    )
    text = header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    write_atomically(target, text.encode())
    load_manifest(target)  # what we wrote must validate
    return target
