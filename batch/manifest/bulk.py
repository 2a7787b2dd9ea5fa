"""Bulk jobs: find the images a glob or folder names, and turn file names into safe id parts."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import unicodedata

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_KEY_CHARS = 64


class BulkError(Exception):
    """The glob or folder of a bulk job cannot be expanded."""


def sanitize(text: str, *, fallback: str = "img") -> str:
    """A stable id fragment: ASCII letters, digits, '.', '_', '-'; no leading dots or dashes."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    cleaned = _UNSAFE.sub("_", ascii_text).strip("._-")[:MAX_KEY_CHARS].rstrip("._-")
    return cleaned or fallback


def find_images(
    base: str, *, glob_pattern: str | None, folder: str | None, limit: int
) -> list[str]:
    """Absolute paths of the matched regular files, sorted by their path relative to `base`.

    A folder lists image files (by suffix, not hidden) directly inside it. A glob is taken
    as written (`**` recurses); it may point anywhere readable, as only outputs are confined.
    More than `limit` matches is an error, raised before the rest of the tree is walked.
    """
    found: list[str] = []
    if folder is not None:
        directory = os.path.join(base, folder)
        if not os.path.isdir(directory):
            raise BulkError(f"folder {folder!r} does not exist or is not a directory")
        with os.scandir(directory) as entries:
            for entry in entries:
                suffix = os.path.splitext(entry.name)[1].lower()
                if entry.name.startswith(".") or suffix not in IMAGE_SUFFIXES:
                    continue
                if entry.is_file():
                    found.append(os.path.abspath(entry.path))
                    if len(found) > limit:
                        raise BulkError(f"folder {folder!r} holds more than {limit:,} images")
        what = f"folder {folder!r}"
    else:
        assert glob_pattern is not None
        root = None if os.path.isabs(glob_pattern) else base
        for match in glob.iglob(glob_pattern, root_dir=root, recursive=True):
            path = os.path.abspath(os.path.join(base, match))
            if os.path.isfile(path):
                found.append(path)
                if len(found) > limit:
                    raise BulkError(f"glob {glob_pattern!r} matches more than {limit:,} files")
        what = f"glob {glob_pattern!r}"
    if not found:
        raise BulkError(f"{what} matches no image files")
    return sorted(set(found), key=lambda p: os.path.relpath(p, base).replace(os.sep, "/"))


def image_keys(paths: list[str], base: str) -> list[str]:
    """One distinct id fragment per path: the file stem, disambiguated only where needed.

    `cat.png` -> `cat`. Where stems collide (`cat.png`, `cat.jpg`), the suffix is kept
    (`cat.png`, `cat.jpg`); where even that collides (`a/cat.png`, `b/cat.png`), a short
    hash of the relative path is appended. Deterministic for a given set of files.
    """
    keys = [sanitize(os.path.splitext(os.path.basename(p))[0]) for p in paths]
    keys = _disambiguate(keys, [sanitize(os.path.basename(p)) for p in paths])
    hashed = [
        f"{k}-{hashlib.sha256(os.path.relpath(p, base).encode()).hexdigest()[:6]}"
        for k, p in zip(keys, paths, strict=True)
    ]
    return _disambiguate(keys, hashed)


def _disambiguate(keys: list[str], alternatives: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    for key in keys:
        seen[key.lower()] = seen.get(key.lower(), 0) + 1
    return [
        alt if seen[key.lower()] > 1 else key for key, alt in zip(keys, alternatives, strict=True)
    ]
