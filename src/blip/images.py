"""Open any image a user or a web crawl brings as a clean RGB PIL image, or say why not."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from PIL import Image, ImageFile, UnidentifiedImageError

from blip.errors import ImageError

# Decoding more pixels than this is refused (PIL's own default: about 89 MP); PIL only warns below 2x the limit.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

ImageSource = str | os.PathLike | bytes | Image.Image


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert every PIL mode to 8-bit RGB; transparency is composited on white, 16-bit is rescaled, not clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        import numpy as np  # here only: numpy costs a third of a second of every `blip --help`

        arr = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16"):
            arr = arr / 257.0
        elif im.mode == "I":
            arr = arr / 257.0 if arr.max() > 255 else arr
        elif im.mode == "F":
            arr = arr * 255.0 if arr.max() <= 1.0 else arr
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # CMYK, YCbCr, LAB, HSV, L, 1, P all have a direct conversion.
    return im.convert("RGB")


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Return `source` (path, bytes or PIL image) as RGB; raise ImageError with a reason tag if it is unusable."""
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.exists():
            raise ImageError("missing", f"{name}: no such file")
        if path.is_dir():
            raise ImageError("not_image", f"{name}: is a directory, not an image")
        data = path.read_bytes()
    if not data:
        raise ImageError("empty", f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            width, height = im.size
            if width * height > max_pixels:
                raise ImageError(
                    "too_large",
                    f"{name}: {width}x{height} pixels exceeds the limit of {max_pixels} (decompression bomb?)",
                )
            im.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("too_large", f"{name}: {e}") from None
    except UnidentifiedImageError:
        raise ImageError("not_image", f"{name}: not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = "truncated" if "truncated" in str(e).lower() or "end of file" in str(e).lower() else "corrupt"
        raise ImageError(reason, f"{name}: cannot decode image ({reason}: {e})") from None
    return _to_rgb(im)


# Fail loudly on truncated files instead of silently padding them with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
