"""Image bytes -> model input, torch-free: the same numbers as timm's eval transform
(torchvision Resize of the shorter side to H / crop_pct with the metadata's filter, CenterCrop,
ToTensor, Normalize), computed with PIL and numpy.

Decoding is defensive: the format is checked against an allow-list before any pixel is decoded,
the pixel count is checked from the header (decompression bombs), truncated data is an error, EXIF
orientation is applied and every mode becomes RGB (transparency composited on white)."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from transferzoo.zoo.errors import ImageError
from transferzoo.zoo.images import MAX_PIXELS, check_resize, to_rgb

from .errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from .model import Preprocess

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


# leading bytes -> PIL format name: a file that claims a format but does not parse is corrupt (400), not foreign (415)
MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def sniff(data: bytes) -> str | None:
    for magic, fmt in MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_image(data: bytes, max_pixels: int, formats: tuple[str, ...]) -> Image.Image:
    """Bytes -> fully decoded RGB image, or a ServeError saying why not (415 format, 413 too many
    pixels, 400 corrupt or truncated)."""
    if not data:
        raise BadRequest("empty image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(formats)) as img:
                w, h = img.size
                if w < 1 or h < 1:
                    raise BadRequest(f"image has no pixels ({w}x{h})")
                if w * h > max_pixels:
                    raise PayloadTooLarge(f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}")
                img.load()
                img = ImageOps.exif_transpose(img)
                return to_rgb(img)
    except (BadRequest, PayloadTooLarge):
        raise
    except (UnidentifiedImageError, SyntaxError) as e:
        claimed = sniff(data)
        if claimed in formats:
            raise BadRequest(f"corrupt {claimed} image ({e})") from None
        raise UnsupportedMediaType(f"not an image in an accepted format ({', '.join(formats)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PayloadTooLarge(f"image refused: {e}") from None
    except MemoryError:
        raise PayloadTooLarge("image too large to decode") from None
    except Exception as e:  # truncated/corrupt data: PIL raises OSError, SyntaxError, ValueError, struct.error...
        raise BadRequest(f"cannot decode image ({type(e).__name__}: {e})") from None


def _resize(img: Image.Image, w: int, h: int, interpolation: str, max_pixels: int) -> Image.Image:
    """Every resize of the server goes through here: the target is bounded before PIL allocates it
    (a 242-byte 1 x 40000 PNG would otherwise ask for a 224 x 8960000 image: 6 GB)."""
    if img.size == (w, h):
        return img  # torchvision skips a resize to the same size
    try:
        check_resize(img.size, (w, h), max_pixels)
    except ImageError as e:
        raise PayloadTooLarge(f"image refused: {e.reason}") from None
    return img.resize((w, h), FILTERS[interpolation])


def _crop_or_pad(img: Image.Image, h: int, w: int, fill=(0, 0, 0)) -> Image.Image:
    """torchvision center_crop (timm center_crop_or_pad with fill): pad symmetrically, then crop."""
    iw, ih = img.size
    if w > iw or h > ih:
        left, top = max(w - iw, 0) // 2, max(h - ih, 0) // 2
        canvas = Image.new("RGB", (max(w, iw), max(h, ih)), tuple(fill))
        canvas.paste(img, (left, top))
        img = canvas
        iw, ih = img.size
        if (iw, ih) == (w, h):
            return img
    top, left = int(round((ih - h) / 2.0)), int(round((iw - w) / 2.0))
    return img.crop((left, top, left + w, top + h))


def resize_crop(img: Image.Image, pre: Preprocess, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """timm transforms_imagenet_eval's geometry for crop_mode center / squash / border; a resize to
    more than `max_pixels` is a 413."""
    h, w = pre.size
    sh, sw = math.floor(h / pre.crop_pct), math.floor(w / pre.crop_pct)
    iw, ih = img.size
    if pre.crop_mode == "squash":
        return _crop_or_pad(_resize(img, sw, sh, pre.interpolation, max_pixels), h, w)
    if pre.crop_mode == "border":  # longest side to the scale size, pad with the mean colour
        ratio = max(ih / sh, iw / sw)
        img = _resize(img, round(iw / ratio), round(ih / ratio), pre.interpolation, max_pixels)
        return _crop_or_pad(img, h, w, fill=[round(255 * m) for m in pre.mean])
    if sh == sw:  # torchvision Resize(int): shorter side to the size, longer side truncated
        short, long = min(iw, ih), max(iw, ih)
        new_short, new_long = sh, int(sh * long / short)
        nw, nh = (new_short, new_long) if iw <= ih else (new_long, new_short)
    else:  # timm ResizeKeepRatio(longest=0): shorter side (relative to the target) matches
        ratio = min(ih / sh, iw / sw)
        nw, nh = round(iw / ratio), round(ih / ratio)
    return _crop_or_pad(_resize(img, nw, nh, pre.interpolation, max_pixels), h, w)


def to_input(img: Image.Image, pre: Preprocess, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One model input row: float32 3xHxW normalised, or uint8 HxWx3 (uint8_nhwc models)."""
    pixels = np.asarray(resize_crop(img, pre, max_pixels), dtype=np.uint8)
    if pre.input_format == "uint8_nhwc":
        return np.ascontiguousarray(pixels)
    x = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(pre.std, dtype=np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray((x - mean) / std)


def softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
