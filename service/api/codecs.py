"""Image codecs (Pillow): decode uploads to gray levels, resize, and encode PNG grids and heat maps.

Uploads are sniffed by content, not by their declared type, and their header size is checked
against ``max_image_pixels`` before any pixel is decoded (decompression-bomb guard). Output images
map a model's value range ``[lo, hi]`` linearly onto gray levels 0..255.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ProblemError, invalid

__all__ = [
    "ALLOWED_FORMATS",
    "PixelBudget",
    "decode_gray",
    "encode_grid",
    "encode_heatmap",
    "encode_png",
    "resize_gray",
    "resize_values",
    "to_gray_levels",
]

ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
_PAD = 2  # pixels between grid cells
_REDUCING_GAP = 3.0  # Pillow's reduce-then-resample: within 3x of the target, Lanczos does the rest
_PAD_LEVEL = 128  # mid-gray separators stand out from both black and white backgrounds

# Anchor colours of a perceptually ordered dark-to-bright map (inferno-like), interpolated linearly.
_HEAT_ANCHORS = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    dtype=np.float64,
)


class PixelBudget:
    """Pixels one request may still decode (``MADE_MAX_DECODED_PIXELS``, summed over its files), so many
    large uploads cannot cost more decoding than one largest image."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, field: str, width: int, height: int) -> None:
        """Count a ``width x height`` decode against the budget, or refuse the file that would pass it."""
        total = self.used + width * height
        if total > self.limit:
            raise invalid(
                field,
                f"decoding this {width}x{height} image would bring the request to {total} decoded pixels; "
                f"the limit is {self.limit} per request (MADE_MAX_DECODED_PIXELS)",
            )
        self.used = total


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_pixels(data: bytes) -> int | None:
    r"""Width x height a PNG's header declares (``None`` for anything else), read from the bytes
    without decoding: to tell tiny uploads, decoded inline, from ones worth a worker thread.

    >>> png_pixels(b"\x89PNG\r\n\x1a\n" + bytes(4) + b"IHDR" + (28).to_bytes(4, "big") * 2)
    784
    """
    if len(data) < 24 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big") * int.from_bytes(data[20:24], "big")


def _unreadable(field: str, fmt: str | None, exc: BaseException) -> ProblemError:
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return invalid(field, f"corrupt or truncated {fmt or 'image'} file ({reason})")


def _unsupported(field: str, message: str) -> ProblemError:
    return ProblemError(
        415,
        f"{field}: {message}",
        title="Unsupported Media Type",
        errors=[{"field": field, "message": message}],
    )


def _gray8(img: Image.Image, field: str, stored_16bit: bool = False) -> np.ndarray:
    """8-bit gray levels of a loaded image. 16-bit gray keeps its high byte (``v >> 8``), so a 16-bit
    copy of an 8-bit image (``v * 257`` or ``v << 8``) gives back the 8-bit levels exactly; 32-bit
    integer and float pixels have no fixed white level and are refused. ``stored_16bit``: the file
    stored 16-bit samples that Pillow widened to its 32-bit ``I`` mode."""
    mode = img.mode
    if mode.startswith("I;16") or (mode == "I" and stored_16bit):
        wide = np.asarray(img).astype(np.int64)
        return (np.clip(wide, 0, 65535) >> 8).astype(np.uint8)
    if mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "floating-point"
        raise _unsupported(field, f"{kind} pixels are not supported; send an 8- or 16-bit image")
    return np.asarray(img.convert("L"), dtype=np.uint8)


def decode_gray(
    data: bytes,
    max_pixels: int,
    field: str,
    *,
    fit: tuple[int, int] | None = None,
    budget: PixelBudget | None = None,
) -> np.ndarray:
    """Decode one upload to an ``(H, W)`` uint8 gray image (first frame of animations, EXIF orientation
    applied). A plain synchronous function, safe to run in a worker thread.

    Colour images are converted with ITU-R 601-2 luma (Pillow's ``L`` mode); transparent pixels keep
    their colour, so a transparent black background stays black. With ``fit = (H, W)`` (the caller
    resizes) a JPEG is decoded at the smallest DCT scale still at least that size. The header size is
    checked against ``max_pixels`` and the pixels to decode against ``budget`` before decoding. Any
    failure is a 4xx naming ``field``: 415 for what is not an allowed image, 422 for a broken one.
    """
    if not data:
        raise invalid(field, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
    except UnidentifiedImageError:
        raise _unsupported(
            field, f"not a supported image; send one of {', '.join(ALLOWED_FORMATS)}"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise invalid(
            field, f"image has too many pixels; the limit is {max_pixels} (MADE_MAX_IMAGE_PIXELS)"
        ) from None
    except Exception as e:  # Pillow's plugins raise many kinds on a broken header
        raise _unreadable(field, None, e) from None
    with img:
        fmt = img.format
        w, h = img.size
        if w * h > max_pixels:
            raise invalid(
                field, f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels} (MADE_MAX_IMAGE_PIXELS)"
            )
        try:
            img.seek(0)
            if fit is not None and fmt == "JPEG":
                img.draft("L", (fit[1], fit[0]))
            if budget is not None:
                budget.spend(field, *img.size)
            stored_16bit = any("16" in str(t.args) for t in img.tile)  # read before load() clears it
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            return _gray8(img, field, stored_16bit)
        except ProblemError:
            raise
        except Exception as e:
            raise _unreadable(field, fmt, e) from None


def to_gray_levels(
    gray: np.ndarray, value_range: tuple[int, int], binary: bool, threshold: int
) -> np.ndarray:
    """Gray levels 0..255 -> model values: ``gray >= threshold`` for binary models, else a linear map
    onto ``lo..hi`` rounded to the nearest level.

    >>> gray = np.array([0, 127, 128, 255], dtype=np.uint8)
    >>> to_gray_levels(gray, (0, 1), True, 128).tolist()
    [0.0, 0.0, 1.0, 1.0]
    >>> to_gray_levels(gray, (0, 15), False, 128).tolist()
    [0.0, 7.0, 8.0, 15.0]
    """
    if binary:
        return (gray >= threshold).astype(np.float32)
    lo, hi = value_range
    if (lo, hi) == (0, 255):
        return gray.astype(np.float32)
    return np.rint(lo + gray.astype(np.float64) * ((hi - lo) / 255.0)).astype(np.float32)


def resize_gray(gray: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Fit an 8-bit image to ``(H, W)`` with Lanczos filtering (aspect ratio is not kept). A large
    image is first reduced by whole factors (box averages) to within ``_REDUCING_GAP`` times the
    target, so the filter's cost follows the target size, not the upload's."""
    h, w = shape
    img = Image.fromarray(gray)
    return np.asarray(
        img.resize((w, h), Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP), dtype=np.uint8
    )


def resize_values(
    image: np.ndarray, shape: tuple[int, int], value_range: tuple[int, int], binary: bool
) -> np.ndarray:
    """Fit an ``(h, w)`` array of model values to ``(H, W)``: bilinear in float, then back onto the
    model's levels (``>= 0.5`` for binary models, rounding and clipping otherwise)."""
    h, w = shape
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
    out = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float64)
    if binary:
        return (out >= 0.5).astype(np.float32)
    lo, hi = value_range
    return np.clip(np.rint(out), lo, hi).astype(np.float32)


def _to_uint8(values: np.ndarray, value_range: tuple[int, int]) -> np.ndarray:
    lo, hi = value_range
    scaled = (np.asarray(values, dtype=np.float64) - lo) * (255.0 / max(hi - lo, 1))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def encode_png(pixels: np.ndarray, scale: int = 1) -> bytes:
    """PNG bytes of an ``(H, W)`` uint8 gray or ``(H, W, 3)`` uint8 RGB array, each pixel drawn as a
    ``scale x scale`` block (nearest neighbour: no new levels, crisp edges).

    >>> png = encode_png(np.array([[0, 255]], dtype=np.uint8), scale=3)
    >>> Image.open(io.BytesIO(png)).size
    (6, 3)
    """
    img = Image.fromarray(pixels)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def encode_grid(
    images: np.ndarray,
    value_range: tuple[int, int],
    columns: int | None = None,
    gap_after_first: bool = False,
    scale: int = 1,
) -> bytes:
    """Tile ``(n, H, W)`` model values into one PNG, ``columns`` wide (about square by default),
    with mid-gray separators; ``gap_after_first`` widens the gap after cell 0 (an input beside its
    completions). ``scale`` enlarges the whole picture by pixel repetition."""
    n, h, w = images.shape
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    extra = _PAD * 2 if gap_after_first else 0
    canvas = np.full((rows * (h + _PAD) + _PAD, cols * (w + _PAD) + _PAD + extra), _PAD_LEVEL, dtype=np.uint8)
    pixels = _to_uint8(images, value_range)
    for i in range(n):
        r, c = divmod(i, cols)
        y = _PAD + r * (h + _PAD)
        x = _PAD + c * (w + _PAD) + (extra if c > 0 else 0)
        canvas[y : y + h, x : x + w] = pixels[i]
    return encode_png(canvas, scale)


def heat_colors(unit: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 along the dark-to-bright anchor colours."""
    t = np.clip(np.nan_to_num(unit, nan=0.0), 0.0, 1.0) * (len(_HEAT_ANCHORS) - 1)
    i = np.minimum(np.floor(t).astype(np.int64), len(_HEAT_ANCHORS) - 2)
    f = (t - i)[..., None]
    rgb = _HEAT_ANCHORS[i] * (1 - f) + _HEAT_ANCHORS[i + 1] * f
    return np.rint(rgb).astype(np.uint8)


def encode_heatmap(
    per_dim_log_prob: np.ndarray, scale_nats: float | None = None, scale: int = 1
) -> tuple[bytes, float]:
    r"""Heat map of one image's per-pixel surprise :math:`-\log p(x_d \mid x_{<d})` (nats, ``(H, W)``).

    Black is 0 nats, brightest is ``scale_nats`` (default: the image's largest value); each pixel is
    drawn as a ``scale x scale`` block. Returns the PNG and the top of the colour scale used, so a client
    can read values back off the colour bar.
    """
    nll = -np.asarray(per_dim_log_prob, dtype=np.float64)
    top = float(scale_nats) if scale_nats else float(max(np.max(nll), 1e-12))
    return encode_png(heat_colors(nll / top), scale), top
