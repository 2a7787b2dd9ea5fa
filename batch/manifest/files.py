"""Cheap checks of local reference images, done once per distinct path.

Only the header is read (`Image.open` + size): a 100,000-item manifest over 1,000 images
costs 1,000 header reads, not 100,000 decodes.
"""

from __future__ import annotations

import os
import stat
import warnings
from typing import BinaryIO

from PIL import Image

MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_IMAGE_PIXELS = 50_000_000
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"})


class FileChecker:
    """Checks reference files and remembers each answer (None when the file is fine)."""

    def __init__(
        self, *, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS
    ) -> None:
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self._cache: dict[str, str | None] = {}

    def problem(self, path: str) -> str | None:
        """What is wrong with the image at `path` (absolute), or None."""
        if path not in self._cache:
            self._cache[path] = self._check(path)
        return self._cache[path]

    def _check(self, path: str) -> str | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return f"file not found: {path}"
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror or exc}"
        if not stat.S_ISREG(st.st_mode):
            return f"not a regular file: {path}"
        if st.st_size > self.max_bytes:
            limit, got = self.max_bytes // 2**20, st.st_size / 2**20
            return f"must be at most {limit} MB, got {got:.1f} MB: {path}"
        problem = image_problem(path, self.max_pixels)
        return f"{problem}: {path}" if problem else None


def image_problem(source: str | BinaryIO, max_pixels: int) -> str | None:
    """What is wrong with an image (a path or an open binary file), reading its header
    only; None when it is a supported image within the pixel limit."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                fmt = image.format
    except Image.DecompressionBombError:
        return f"must be at most {max_pixels:,} pixels, got a decompression bomb"
    except (OSError, ValueError, SyntaxError) as exc:
        return f"not a readable image ({type(exc).__name__})"
    if fmt not in IMAGE_FORMATS:
        return f"must be one of {', '.join(sorted(IMAGE_FORMATS))} images, got {fmt}"
    if width * height > max_pixels:
        return f"must be at most {max_pixels:,} pixels, got {width}x{height}"
    if width < 1 or height < 1:
        return f"must have a non-empty size, got {width}x{height}"
    return None
