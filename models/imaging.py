"""Reading user images safely and bringing them to the network's crop format.

Policy: the benchmark's crops are 128x128 RGB, centred on one mitotic figure, and that is what
the models expect. Another size is accepted: a non-square image is centre-cropped to a square,
then the square is resized to 128x128 (bilinear, antialiased), so submit crops at the
benchmark's scale (about 0.25 um/px) for meaningful answers. PNG, JPEG, TIFF and WebP are read;
RGBA is composited on white, greyscale, palette, CMYK and 16-bit images are converted to 8-bit
RGB; a multi-page TIFF gives its first page. Sides below 16 px, images over 50 megapixels
(decompression bombs) and truncated files are refused.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from models.errors import ImageError

CROP = 128
MIN_SIDE = 16
MAX_PIXELS = 50_000_000
FORMATS = ("PNG", "JPEG", "TIFF", "WEBP")

ImageInput = str | Path | bytes | Image.Image | np.ndarray


def _name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "the image"


def _open(source: ImageInput) -> Image.Image:
    try:
        data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    except OSError as e:
        raise ImageError(f"{_name(source)} cannot be read ({e.strerror}).") from e
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            if image.format not in FORMATS:
                raise ImageError(
                    f"{_name(source)} is a {image.format} file; PNG, JPEG, TIFF and "
                    "WebP are accepted."
                )
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(
                    f"{_name(source)} is {image.width}x{image.height} pixels, over "
                    f"the limit of {MAX_PIXELS // 1_000_000} megapixels."
                )
            image.load()
        except UnidentifiedImageError as e:
            raise ImageError(f"{_name(source)} is not an image (PNG, JPEG, TIFF or WebP).") from e
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise ImageError(
                f"{_name(source)} is too large to decode safely (a decompression bomb?)."
            ) from e
        except OSError as e:
            raise ImageError(
                f"{_name(source)} could not be decoded: it is truncated or corrupt ({e})."
            ) from e
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; transparency composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1
        image = Image.fromarray((array / top * 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_crop(source: ImageInput) -> np.ndarray:
    """A 128x128x3 uint8 crop from a path, bytes, a PIL image or an array (H, W[, C])."""
    if isinstance(source, np.ndarray):
        array = source if source.ndim == 3 else np.repeat(source[..., None], 3, axis=2)
        if array.dtype != np.uint8 or array.shape[2] not in (3, 4):
            raise ImageError(
                f"An array image must be uint8 (H, W), (H, W, 3) or (H, W, 4); "
                f"found {array.dtype} {array.shape}."
            )
        image = Image.fromarray(array)
    elif isinstance(source, Image.Image):
        image = source
    else:
        image = _open(source)
    if min(image.size) < MIN_SIDE:
        raise ImageError(
            f"{_name(source)} is {image.width}x{image.height} pixels; crops must be "
            f"at least {MIN_SIDE} px on each side (128x128 is native)."
        )
    try:
        image = to_rgb(image)
    except (ValueError, OSError) as e:  # e.g. LAB or other modes Pillow cannot convert
        raise ImageError(
            f"{_name(source)} is a {image.mode} image, which cannot be converted "
            "to RGB; save it as an RGB PNG."
        ) from e
    side = min(image.size)
    if image.width != image.height:
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if side != CROP:
        image = image.resize((CROP, CROP), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(image, dtype=np.uint8)
