"""Safe image decoding shared by everything that reads user images: EXIF orientation applied,
every mode converted to RGB, decompression bombs refused, failures reported per file."""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

# 64 Mpx: far above any photo worth classifying, far below what exhausts memory when decoded.
MAX_PIXELS = 64_000_000
# A resize keeps the aspect ratio, so a tiny file (a 1 x 40000 strip is 242 bytes of PNG) can ask for a
# huge resized image: its shorter side scaled to 224 makes the longer one 9 million pixels. No photo is
# 100 times longer than wide; refusing such strips at decode bounds every resize that follows.
MAX_ASPECT = 100
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB for every mode: palette and alpha images are composited on white (not on black, which
    is what a bare convert('RGB') of a transparent PNG gives), CMYK/L/I;16 converted."""
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img, mask=img.getchannel("A"))
        return bg
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greyscale: keep the top 8 bits
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB") if img.mode != "RGB" else img


def decode(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, reduced: bool = False) -> Image.Image:
    """Open and decode an image, raising ImageError with the reason when it cannot be.

    reduced=True decodes JPEGs at 1/8 scale (`Image.draft`): the whole entropy-coded stream is still
    read, so truncation is still caught, at a fraction of the cost (for validating, not for pixels).
    """
    path = os.fspath(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageError(path, f"{w}x{h} pixels exceeds the limit of {max_pixels} (decompression bomb?)")
                if max(w, h) > MAX_ASPECT * max(1, min(w, h)):
                    raise ImageError(path, f"{w}x{h}: aspect ratio over {MAX_ASPECT}:1 (a strip, not a photo)")
                if reduced and img.format == "JPEG":
                    img.draft(img.mode, (max(1, w // 8), max(1, h // 8)))
                img.load()
                return img
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(path, f"refused: {e}") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not an image (unrecognised format)") from None
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not an image") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise ImageError(path, f"cannot decode ({e})") from None
    except MemoryError:
        raise ImageError(path, "too large to decode in the memory available") from None


def resize_bound(size: tuple[int, int], scale: int) -> tuple[int, int]:
    """The largest image a resize of a `size` (w, h) image to `scale` can produce: the shorter side
    to `scale`, the longer one in proportion (torchvision's Resize(int); squash, border and timm's
    keep-ratio resizes give no more)."""
    w, h = size
    short, long = max(1, min(w, h)), max(w, h)
    return (scale, -(-scale * long // short)) if w <= h else (-(-scale * long // short), scale)


def check_resize(size: tuple[int, int], target: tuple[int, int], max_pixels: int = MAX_PIXELS, what: str = "image"):
    """Refuse a resize whose result would exceed `max_pixels` before anything is allocated for it
    (ImageError naming `what`). The one bound every resize goes through: serve's preprocessing and
    the transforms `zoo.factory` builds."""
    tw, th = target
    if tw * th > max_pixels:
        raise ImageError(
            what,
            f"{size[0]}x{size[1]} would be resized to {tw}x{th} = {tw * th} pixels, over the limit of {max_pixels} "
            "(aspect ratio too extreme)",
        )


class ResizeGuard:
    """A transform step placed before a resize to `scale`: passes the image through unchanged, or
    raises ImageError when the resize would produce more than `max_pixels` (see `check_resize`)."""

    def __init__(self, scale: int, max_pixels: int = MAX_PIXELS):
        self.scale, self.max_pixels = int(scale), max_pixels

    def __call__(self, img: Image.Image) -> Image.Image:
        check_resize(img.size, resize_bound(img.size, self.scale), self.max_pixels)
        return img

    def __repr__(self) -> str:
        return f"ResizeGuard(scale={self.scale}, max_pixels={self.max_pixels})"


def load_rgb(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image fully (so truncation is caught here, not later in a worker), EXIF-oriented, RGB."""
    return to_rgb(ImageOps.exif_transpose(decode(path, max_pixels)))


def normalise(pixels: np.ndarray, mean, std) -> np.ndarray:
    """(..., H, W, 3) uint8 RGB -> (..., 3, H, W) float32, bit-identical to timm's ToTensor + Normalize
    (the same float32 divisions, in the same order)."""
    x = np.moveaxis(np.asarray(pixels, dtype=np.float32), -1, -3) / np.float32(255)
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray((x - m) / s)
