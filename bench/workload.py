"""Workloads on disk: N distinct small reference images, and a bulk manifest or a table
manifest over them."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

from PIL import Image

PROMPT = "Turn it into a watercolor"


def tiny_png(index: int, size: int = 16) -> bytes:
    """A small PNG whose pixels encode `index`: every image has its own bytes."""
    image = Image.new("RGB", (size, size), (index % 251, index // 251 % 251, 90))
    image.putpixel((0, 0), (index & 255, (index >> 8) & 255, (index >> 16) & 255))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def write_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"img{index:06d}.png"
        path.write_bytes(tiny_png(index))
        paths.append(path)
    return paths


def write_bulk_manifest(folder: Path, images: int, *, prompts: int = 1) -> Path:
    """`images` distinct images x `prompts` prompts, as one bulk job (images x prompts items)."""
    write_images(folder / "images", images)
    lines = ["jobs:", "  - id: bench", "    images: {folder: images}"]
    if prompts == 1:
        lines.append(f"    prompt: {PROMPT}")
    else:
        lines.append("    prompts:")
        lines += [f"      - {{id: p{i}, prompt: {PROMPT} number {i}}}" for i in range(prompts)]
    path = folder / "manifest.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_table_manifest(folder: Path, images: int, rows: int) -> Path:
    """A manifest whose one job is a CSV table of `rows` rows over `images` images, each
    row with its own id, prompt, seed and guidance (what a labelling tool exports)."""
    write_images(folder / "images", images)
    lines = ["id,prompt,referenceImages,seed,guidanceScale"]
    lines += [
        f"row{n},{PROMPT} number {n},images/img{n % images:06d}.png,{n},{1 + n % 9}.5"
        for n in range(rows)
    ]
    (folder / "edits.csv").write_text("\n".join(lines) + "\n")
    path = folder / "manifest.yaml"
    path.write_text("jobs:\n  - table: edits.csv\n    quality: high\n")
    return path


def checksum(paths: list[Path]) -> int:
    """A cheap check that the images really differ (used by the smoke test)."""
    return len({zlib.crc32(p.read_bytes()) for p in paths})


def write_explicit_manifest(folder: Path, jobs: int, images: int) -> Path:
    """`jobs` jobs written one by one, as scripts write them (`id`, `prompt`,
    `referenceImages`: 3 lines each), over `images` shared images (job k uses image k %
    images)."""
    write_images(folder / "images", images)
    path = folder / "manifest.yaml"
    with path.open("w") as out:
        out.write("jobs:\n")
        for index in range(jobs):
            out.write(
                f"  - id: job{index:06d}\n"
                f"    prompt: {PROMPT} number {index}\n"
                f"    referenceImages: [images/img{index % images:06d}.png]\n"
            )
    return path
