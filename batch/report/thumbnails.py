"""Thumbnails for report.html: small JPEGs in `out_dir/thumbs/`, named by a hash of their source.

Why on disk: a page of a big run must open quickly, so it never inlines or loads full
images where a thumbnail exists. Each is made once and remade only when its source is
newer. Making one costs a full decode of its source (about 1 ms for a 256 px PNG, 14 ms
for a 1024 px one): a run of 100,000 outputs would spend many minutes at its end on them,
so one report makes thumbnails for at most `budget_s` seconds, in page order, and the
page shows the original file (scaled by the browser, loaded lazily) for the rest; the
next report goes on where this one stopped.

Nothing is written outside the output directory: each thumbnail goes to a temporary name
first and is renamed into place (a rename replaces a planted symlink instead of following
it), and a symlink planted among the outputs is never read.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from PIL import Image

from batch.durable import write_atomically

log = logging.getLogger(__name__)

THUMBS_DIR: Final = "thumbs"
THUMB_PX: Final = 160
DEFAULT_BUDGET_S: Final = 20.0
_WORKERS: Final = min(8, os.cpu_count() or 1)
_CHUNK: Final = 64  # thumbnails handed to the pool between two looks at the clock


@dataclass(frozen=True, slots=True)
class Source:
    """An image a thumbnail may be made of."""

    key: str  # what the thumbnail's name is hashed from
    path: str
    follow: bool  # follow a symlink: yes for the user's references, never inside out_dir


class OutputPaths:
    """Output files named inside the output directory, judged by name once per path."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = str(out_dir)
        self._known: dict[str, Source | None] = {}

    def source(self, relative: str) -> Source | None:
        """The output file's source, or None if the name points outside the directory."""
        if relative not in self._known:
            normal = os.path.normpath(relative)
            inside = not (
                os.path.isabs(normal)
                or normal == os.pardir
                or normal.startswith(os.pardir + os.sep)
            )
            path = os.path.join(self.out_dir, normal)
            self._known[relative] = Source("out:" + normal, path, False) if inside else None
        return self._known[relative]


def reference_source(value: str) -> Source:
    """A local reference image (the user's file, outside the output directory)."""
    path = os.path.abspath(value)
    return Source("ref:" + path, path, True)


class Thumbnails:
    """What has a current thumbnail (`ready`), and what could have one (`usable`)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = str(out_dir)
        self.directory = out_dir / THUMBS_DIR
        self.ready: dict[str, str] = {}  # source key -> its thumbnail's name (hash only)
        self.usable: set[str] = set()  # source keys of regular files, thumbnail or not
        self.failed: set[str] = set()  # source keys that did not decode

    @staticmethod
    def name(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    @staticmethod
    def relative(name: str) -> str:
        return f"{THUMBS_DIR}/{name}.jpg"

    def make(self, sources: Iterable[Source], budget_s: float = DEFAULT_BUDGET_S) -> int:
        """Make missing or stale thumbnails, in the given order, for up to `budget_s`
        seconds (in threads: Pillow decodes without the GIL); return how many were left."""
        if not self._prepare_directory():
            return 0
        stale: list[tuple[str, Source, str]] = []
        for source in sources:
            name = self.name(source.key)
            target = os.path.join(self.out_dir, self.relative(name))
            fresh = _is_fresh(source, target)
            if fresh is None:
                continue
            self.usable.add(source.key)
            if fresh:
                self.ready[source.key] = name
            else:
                stale.append((source.key, source, target))
        if not stale:
            return 0
        deadline = time.monotonic() + budget_s
        done = 0
        with ThreadPoolExecutor(_WORKERS, thread_name_prefix="thumbs") as pool:
            while done < len(stale) and time.monotonic() < deadline:
                chunk = stale[done : done + _CHUNK]
                made = pool.map(lambda job: _make_thumbnail(job[1].path, job[2]), chunk)
                for (key, _, _), ok in zip(chunk, made, strict=True):
                    if ok:
                        self.ready[key] = self.name(key)
                    else:
                        self.failed.add(key)
                done += len(chunk)
        if done < len(stale):
            log.info(
                "report: %d thumbnail(s) left for the next report (time budget %.0f s); "
                "the page shows their original files meanwhile",
                len(stale) - done,
                budget_s,
            )
        return len(stale) - done

    def _prepare_directory(self) -> bool:
        if self.directory.is_symlink() or (self.directory.exists() and not self.directory.is_dir()):
            log.warning("%s is not a plain directory; the report has no thumbnails", self.directory)
            return False
        self.directory.mkdir(exist_ok=True)
        return True


def _is_fresh(source: Source, target: str) -> bool | None:
    """True: the thumbnail is current; False: make it; None: the source is unusable."""
    try:
        info = os.stat(source.path) if source.follow else os.lstat(source.path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):  # a symlink planted among the outputs is not followed
        return None
    try:
        thumb = os.lstat(target)
    except OSError:
        return False
    return stat.S_ISREG(thumb.st_mode) and thumb.st_mtime_ns >= info.st_mtime_ns


def _make_thumbnail(source: str, target: str) -> bool:
    try:
        data = _thumbnail_jpeg(source)
    except Exception as exc:  # an undecodable image must only cost its own thumbnail
        log.debug("no thumbnail for %s: %s", source, exc)
        return False
    write_atomically(Path(target), data, fsync=False)
    return True


def _thumbnail_jpeg(path: str) -> bytes:
    with Image.open(path) as opened:
        opened.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at a reduced scale
        opened.thumbnail((THUMB_PX, THUMB_PX))
        image: Image.Image = opened
        if image.mode in ("RGBA", "LA", "P", "PA"):
            rgba = image.convert("RGBA")  # transparency: flatten onto white
            image = Image.new("RGB", rgba.size, (255, 255, 255))
            image.paste(rgba, mask=rgba.getchannel("A"))
        elif image.mode != "RGB":
            image = image.convert("RGB")
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=80)
    return out.getvalue()
