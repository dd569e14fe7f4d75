"""Image bytes → a verified PNG, or a `BadImage` saying why not (the stage skips and counts those)."""
from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # a CLEVR image is 480×320; anything far larger is not one


class BadImage(Exception):
    """An image that is missing, truncated or not decodable."""


def to_png(data: bytes | None) -> tuple[bytes, tuple[int, int]]:
    """Fully decode `data` (catching truncation, which `verify()` alone misses) and return PNG bytes and size.

    PNG input is returned unchanged; other formats are re-encoded as RGB PNG.
    """
    if not data:
        raise BadImage("no image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                probe.verify()
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise BadImage(f"implausibly large image ({img.width}×{img.height})")
                img.load()
                if img.format == "PNG":
                    return bytes(data), img.size
                buf = io.BytesIO()
                img.convert("RGB").save(buf, format="PNG", compress_level=3)
                return buf.getvalue(), img.size
    except BadImage:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as e:
        raise BadImage(f"{type(e).__name__}: {e}") from None
