"""Decoding inputs and drawing outputs: a visible, deterministic "edit".

An output is the first reference image, shrunk to `max_px`, cropped to the
requested aspect ratio, tinted with a colour chosen by the prompt's hash
(optionally mirrored, also by hash), with a caption band carrying the prompt,
the output index and the seed. Same inputs, same bytes.

Drawing is kept cheap because a benchmark asks for thousands of outputs a second:
the shrunk reference is decoded once per reference, the caption uses Pillow's
bitmap font (Latin-1; other characters print as `?`), PNGs are written directly
(no row filters, zlib level 1), and finished PNGs stay in a
cache bounded by bytes, so a get-bulk and the download that follows draw once.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

# The bitmap font draws a caption ~15x faster than the FreeType default.
_FONT = ImageFont.load_default_imagefont()
_BAND = 24  # caption band height: two lines of the 11 px bitmap font


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What Pillow says about some bytes that are an image."""

    mime_type: str
    width: int
    height: int


def inspect_image(data: bytes) -> ImageInfo:
    """Identify an image; ValueError if the bytes are not one Pillow can read."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
            fmt = img.format or ""
            width, height = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"not a readable image ({exc})") from exc
    mime = Image.MIME.get(fmt, "application/octet-stream")
    return ImageInfo(mime_type=mime, width=width, height=height)


def _ratio(aspect_ratio: str) -> float | None:
    if aspect_ratio == "auto":
        return None
    w, h = aspect_ratio.split(":")
    return int(w) / int(h)


def _digest(prompt: str) -> bytes:
    return hashlib.sha256(prompt.encode()).digest()


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """Everything an output's pixels depend on (also its cache key)."""

    reference_id: str
    prompt: str
    seed: int
    index: int
    aspect_ratio: str


class Renderer:
    """Draws outputs, caching shrunk references (LRU by count) and PNGs (LRU by bytes)."""

    def __init__(
        self, max_px: int = 256, cache_size: int = 512, cache_bytes: int = 64 * 1024 * 1024
    ) -> None:
        self._max_px = max_px
        self._cache_size = cache_size
        self._cache_bytes = cache_bytes
        self._bases: OrderedDict[str, Image.Image] = OrderedDict()
        self._outputs: OrderedDict[OutputSpec, bytes] = OrderedDict()
        self._held = 0  # bytes of PNG in `_outputs`

    def _base(self, reference_id: str, data: bytes) -> Image.Image:
        base = self._bases.get(reference_id)
        if base is None:
            with Image.open(io.BytesIO(data)) as img:
                base = ImageOps.exif_transpose(img).convert("RGB")
            base.thumbnail((self._max_px, self._max_px))
            self._bases[reference_id] = base
            if len(self._bases) > self._cache_size:
                self._bases.popitem(last=False)
        else:
            self._bases.move_to_end(reference_id)
        return base

    def render(self, spec: OutputSpec, reference: bytes) -> bytes:
        """The PNG bytes of one output."""
        cached = self._outputs.get(spec)
        if cached is not None:
            self._outputs.move_to_end(spec)
            return cached
        png = self._draw(spec, self._base(spec.reference_id, reference))
        self._outputs[spec] = png
        self._held += len(png)
        while self._held > self._cache_bytes and len(self._outputs) > 1:
            self._held -= len(self._outputs.popitem(last=False)[1])
        return png

    def _draw(self, spec: OutputSpec, base: Image.Image) -> bytes:
        img = base
        ratio = _ratio(spec.aspect_ratio)
        if ratio is not None:
            w, h = img.size
            if w / h > ratio:
                target = (max(1, round(h * ratio)), h)
            else:
                target = (w, max(1, round(w / ratio)))
            if target != img.size:
                img = ImageOps.fit(img, target)
        digest = _digest(spec.prompt)
        tint = Image.new("RGB", img.size, (digest[0], digest[1], digest[2]))
        img = Image.blend(img, tint, 0.45)
        if digest[3] & 1:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        draw = ImageDraw.Draw(img)
        w, h = img.size
        draw.rectangle((0, h - _BAND, w, h), fill=(0, 0, 0))
        caption = spec.prompt if len(spec.prompt) <= 40 else spec.prompt[:37] + "..."
        draw.text((3, h - _BAND + 1), _latin1(caption), fill=(255, 255, 255), font=_FONT)
        draw.text(
            (3, h - _BAND + 12), f"#{spec.index} seed {spec.seed}", fill=(255, 255, 0), font=_FONT
        )
        return encode_png(img)


def _latin1(text: str) -> str:
    """What the bitmap font can draw: characters outside Latin-1 become `?`."""
    return text.encode("latin-1", "replace").decode("latin-1")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(img: Image.Image) -> bytes:
    """An RGB image as a plain PNG (no row filters, zlib level 1): the same bytes as
    Pillow would decode back, several times faster than Pillow's encoder on small images."""
    width, height = img.size
    raw = img.convert("RGB").tobytes()
    stride = 3 * width
    rows = b"".join(b"\x00" + raw[i : i + stride] for i in range(0, len(raw), stride))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows, 1)),
            _chunk(b"IEND", b""),
        )
    )


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (no decoding)."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
