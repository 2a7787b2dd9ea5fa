"""Decoding inputs and drawing outputs: a visible, deterministic "edit".

An output is the first reference image, shrunk to `max_px`, cropped to the
requested aspect ratio, tinted with a colour chosen by the prompt's hash
(optionally mirrored, also by hash), with a caption band carrying the prompt,
the output index and the seed. Same inputs, same bytes.
"""

from __future__ import annotations

import hashlib
import io
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

_FONT = ImageFont.load_default()


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
    """Draws outputs, caching shrunk references and finished PNGs (LRU)."""

    def __init__(self, max_px: int = 256, cache_size: int = 512) -> None:
        self._max_px = max_px
        self._cache_size = cache_size
        self._bases: OrderedDict[str, Image.Image] = OrderedDict()
        self._outputs: OrderedDict[OutputSpec, bytes] = OrderedDict()

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
        if len(self._outputs) > self._cache_size:
            self._outputs.popitem(last=False)
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
            img = ImageOps.fit(img, target)
        digest = _digest(spec.prompt)
        tint = Image.new("RGB", img.size, (digest[0], digest[1], digest[2]))
        img = Image.blend(img, tint, 0.45)
        if digest[3] & 1:
            img = ImageOps.mirror(img)
        draw = ImageDraw.Draw(img)
        band = 24
        w, h = img.size
        draw.rectangle((0, h - band, w, h), fill=(0, 0, 0))
        caption = spec.prompt if len(spec.prompt) <= 40 else spec.prompt[:39] + "…"
        draw.text((3, h - band + 1), caption, fill=(255, 255, 255), font=_FONT)
        draw.text(
            (3, h - band + 12), f"#{spec.index} seed {spec.seed}", fill=(255, 255, 0), font=_FONT
        )
        out = io.BytesIO()
        img.save(out, format="PNG", compress_level=1)
        return out.getvalue()
