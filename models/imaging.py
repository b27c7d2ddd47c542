"""Reading user images safely and bringing them to the network's crop format.

Policy: the benchmark's crops are 128x128 RGB, centred on one mitotic figure, and that is what
the models expect. Another size is accepted: a non-square image is centre-cropped to a square,
then the square is resized to 128x128 (bilinear, antialiased), so submit crops at the
benchmark's scale (about 0.25 um/px) for meaningful answers. PNG, JPEG, TIFF and WebP are read;
RGBA is composited on white, greyscale, palette, CMYK and 16-bit images are converted to 8-bit
RGB; a multi-page TIFF gives its first page. Sides below 16 px, files over 64 MB (measured
before reading), images over 50 megapixels (decompression bombs, judged from the header before
decoding) and truncated files are refused. Messages name a file by its base name only.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fileio import describe_sizes, display_name, read_bounded, source_size
from models.errors import ImageError
from settings import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

CROP = 128
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
MIN_SIDE = 16
_NOT_IMAGES = (
    (b"PK\x03\x04", "a zip archive"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x80", "a Python pickle"),
)
FORMATS = ("PNG", "JPEG", "TIFF", "WEBP")

ImageInput = str | Path | bytes | Image.Image | np.ndarray


def _name(source) -> str:
    """The file's base name (never a server path), or "the image"."""
    return display_name(source, "the image") if isinstance(source, (str, Path)) else "the image"


def _looks_like(head: bytes) -> str:
    """What a file that is not an image seems to be, from its first bytes ('' if unknown)."""
    for magic, kind in _NOT_IMAGES:
        if head.startswith(magic):
            return kind
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    if "<svg" in text.lower() or "<html" in text.lower() or "<script" in text.lower():
        return "markup (HTML or SVG)"
    return "text" if text.isprintable() or text.strip() else ""


def _open(source: ImageInput) -> Image.Image:
    name = _name(source)
    try:
        size = source_size(source)
    except OSError as e:
        raise ImageError(f"{name} cannot be read ({e.strerror}).") from e
    if size == 0:
        raise ImageError(f"{name} is empty (0 bytes); upload a PNG, JPEG, TIFF or WebP crop.")
    if size > MAX_IMAGE_BYTES:
        shown, cap = describe_sizes(size, MAX_IMAGE_BYTES)
        raise ImageError(f"{name} is {shown}; an image may be at most {cap}.")
    data = read_bounded(source, MAX_IMAGE_BYTES, lambda n: ImageError(f"{name} grew while read."))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            if image.format not in FORMATS:
                raise ImageError(
                    f"{name} is a {image.format} file; PNG, JPEG, TIFF and WebP are accepted."
                )
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ImageError(
                    f"{name} is {image.width}x{image.height} pixels, over the limit of "
                    f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels; upload the 128x128 crop around "
                    "the mitotic figure."
                )
            image.load()
        except ImageError:
            raise
        except UnidentifiedImageError as e:
            kind = _looks_like(data[:512])
            seems = f": it looks like {kind}" if kind else ""
            raise ImageError(
                f"{name} is not an image{seems}. Upload a PNG, JPEG, TIFF or WebP crop."
            ) from e
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise ImageError(
                f"{name} is too large to decode safely (far over {MAX_IMAGE_PIXELS // 1_000_000} "
                "megapixels: a decompression bomb?); upload the 128x128 crop."
            ) from e
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(
                f"{name} could not be decoded: it is truncated or corrupt ({_first_line(e)})."
            ) from e
    return image


def _first_line(error: Exception) -> str:
    """A decoder's message without any path in it."""
    return str(error).splitlines()[0][:120] if str(error) else type(error).__name__


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


def image_note(source: ImageInput) -> str:
    """What was done to an image that is not a 128x128 H&E colour crop ('' for one), and why.

    Its size (cropped, resized), no colour (grayscale), colours unlike an H&E stain,
    transparency (filled with white).
    """
    image = source if isinstance(source, Image.Image) else _open(source)
    size = _size_note(image)  # from the header
    colour = _colour_note(image.copy() if image is source else image)  # it shrinks its image
    return " ".join(note for note in (size, colour) if note)


def _size_note(image: Image.Image) -> str:
    width, height = image.size
    if (width, height) == (CROP, CROP):
        return ""
    done = []
    if width != height:
        done.append(f"took its centre {min(width, height)}x{min(width, height)} square")
    if min(width, height) != CROP:
        done.append(f"resized it to {CROP}x{CROP}")
    return (
        f"This image is {width}x{height} px: the model {' and '.join(done)}. It expects a "
        f"{CROP}x{CROP} px crop at about 0.25 µm per pixel (40x), centred on one mitotic "
        "figure; other scales or several figures in view make the answer unreliable."
    )


GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
# H&E stains pink (eosin) and blue-violet (hematoxylin): hues from 240 to 360 degrees and a little
# beyond. On 64 px copies of the 2,894 AMi-Br train crops (no test crop; tests/models/
# test_stain_note.py measures it), at most 0.56 % of a crop's visible pixels are a saturated
# green, yellow, cyan or light blue, and every crop's mean saturation is at least 0.095: the
# limits are far outside both.
OFF_STAIN_HUES = (45, 210)  # degrees
SATURATED = 0.15
VISIBLE = 0.2  # HSV value: in darker pixels, compression noise has a saturation and any hue
MAX_OFF_STAIN_SHARE = 0.05
MIN_MEAN_SATURATION = 0.05


def colour_sample(image: Image.Image) -> Image.Image:
    """The 64 px copy of ``image`` that its colour is judged on (``image`` itself may shrink)."""
    image.draft("RGB", (64, 64))  # a JPEG is decoded at 1/8 scale; others are read whole
    try:
        image.thumbnail((64, 64))  # enough to see colour
    except (ValueError, OSError):  # a mode Pillow cannot resize (16-bit gray): converted first
        image = to_rgb(image)
        image.thumbnail((64, 64))
    return image


def _colour_note(image: Image.Image) -> str:
    """Notes on missing colour, colours unlike an H&E stain and transparency (a 64 px copy)."""
    mode, see_through = image.mode, "transparency" in image.info
    image = colour_sample(image)
    notes = []
    if mode in ("RGBA", "LA", "PA") or see_through:
        if image.convert("RGBA").getchannel("A").getextrema()[0] < 255:
            notes.append("Its transparent pixels were filled with white.")
    rgb_image = to_rgb(image)
    rgb = np.asarray(rgb_image, dtype=np.int16)
    if mode in GRAY_MODES or np.abs(rgb - rgb[..., :1]).max() <= 2:
        notes.append(
            "This image has no colour: the model learned from H&E-stained colour crops, so "
            "its answer on a grayscale image is unreliable."
        )
    elif unlike := unlike_stain(rgb_image):
        notes.append(
            f"Its colours are unlike an H&E stain ({unlike}): the model learned from "
            "H&E-stained crops of mitotic figures, so its answer on this image is unreliable."
        )
    return " ".join(notes)


def stain_measures(image: Image.Image) -> tuple[float, float]:
    """The share of an RGB image's pixels of a hue H&E stains lack, and its mean saturation.

    A pixel counts when it is visible (HSV value above ``VISIBLE``), saturated (above
    ``SATURATED``) and its hue within ``OFF_STAIN_HUES``; saturation runs from 0 to 1.
    """
    hsv = np.asarray(image.convert("HSV"), dtype=np.float32) / 255
    hue, saturation, value = hsv[..., 0] * 360, hsv[..., 1], hsv[..., 2]
    low, high = OFF_STAIN_HUES
    off_hue = (hue > low) & (hue < high)
    off_stain = np.mean(off_hue & (saturation > SATURATED) & (value > VISIBLE))
    return float(off_stain), float(saturation.mean())


def unlike_stain(image: Image.Image) -> str:
    """How an RGB image's colours differ from an H&E stain's ('' when they do not)."""
    off_stain, saturation = stain_measures(image)
    if off_stain > MAX_OFF_STAIN_SHARE:
        return f"{off_stain:.0%} of its pixels are green, yellow, cyan or light blue"
    if saturation < MIN_MEAN_SATURATION:
        return "it is almost colourless"
    return ""
