"""Decoding one image file safely to a ``R x R x 3`` uint8 RGB array.

Decoding policy (``decode_image``), the same as torchvision's ``Resize(round(R / crop_pct))`` +
``CenterCrop(R)`` on a PIL image:

1. EXIF orientation is applied (``ImageOps.exif_transpose``); unreadable EXIF is ignored and the
   pixels are used as stored.
2. Every mode becomes 8-bit RGB. Alpha (RGBA, LA, PA, palette or greyscale with a transparent
   colour) is *composited onto black* (i.e. RGB is premultiplied by alpha), so the colour hidden
   under fully transparent pixels never reaches the model. 16-bit modes (``I;16*``) are scaled with
   ``round(v * 255 / 65535)`` (65535 -> 255, 257*k -> k); ``I`` (32-bit int) uses that scale when
   all values lie in 0..65535, else a per-image min-max stretch; ``F`` (float) is multiplied by 255
   when all values lie in 0..1, else min-max stretched (NaN/inf -> 0). ``1`` maps to 0/255. CMYK is
   converted with Pillow's plain formula (no ICC profile).
3. Shorter side resized to ``round(R / crop_pct)`` with Pillow's *bilinear* filter, which is
   antialiased when downscaling (its support grows with the scale factor, like torchvision's
   ``antialias=True``); the longer side is ``int(s * long / short)`` as in torchvision. Then the
   centre ``R x R`` crop (offsets ``int(round((size - R) / 2))``, as torchvision). ``crop_pct``
   above 1 is treated as 1 (no zooming out / padding).
4. Rejected with a reason: shorter side under ``MIN_SIDE`` (8) pixels (so 1x1), aspect ratio above
   ``MAX_ASPECT`` (50:1; this also bounds the resized image to 50 * s pixels long), empty files,
   unrecognised contents, truncated or corrupt data, decompression bombs.

Decoding a valid image is exactly deterministic (pure integer Pillow/libjpeg-turbo paths, no
randomness, no threads). ``decode_image`` briefly sets process-wide Pillow/warnings state, so
decode in parallel with processes, not threads. libtiff may print its own complaints about a
corrupt TIFF to stderr; the file is still just skipped.
"""

from __future__ import annotations

import math
import os
import stat
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps

from ..errors import UsageError
from . import files
from .files import os_reason, safe_text

# Pillow format names we let Image.open try; nothing else (no EPS/Ghostscript, no plugins).
# (Multi-picture JPEGs from cameras come back from the JPEG plugin as MPO images.)
ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF")
MIN_SIDE = 8  # pixels: shorter side below this is rejected (1x1, 3x500 ...)
MAX_ASPECT = 50.0  # long side / short side above this is rejected
PILLOW_DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default, used when MAX_IMAGE_PIXELS is None


class SkipImage(Exception):
    """A file that cannot be used as an image; ``reason`` says why (one line, no path)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_OPENABLE: tuple[str, ...] | None = None


def _openable_formats() -> tuple[str, ...]:
    """ALLOWED_FORMATS this Pillow build can open (e.g. no WEBP without libwebp)."""
    global _OPENABLE
    if _OPENABLE is None:
        Image.init()  # registers every plugin; only ALLOWED_FORMATS are ever tried
        _OPENABLE = tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)
    return _OPENABLE


def _max_pixels() -> int:
    limit = Image.MAX_IMAGE_PIXELS
    return int(limit) if limit else PILLOW_DEFAULT_MAX_PIXELS


def _bomb_reason(pixels: int) -> str:
    return f"decompression bomb: {pixels} pixels over Pillow's limit of {_max_pixels()}"


def _to_uint8_gray(img: Image.Image) -> np.ndarray:
    """``I;16*``, ``I`` and ``F`` images as an 8-bit greyscale array (policy in the module doc)."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        a = arr.astype(np.int64)
        if img.mode.startswith("I;16S"):
            a = a - a.min() if a.size and a.min() < 0 else a
            a = np.minimum(a, 65535)
        return ((a * 255 + 32767) // 65535).astype(np.uint8)
    if img.mode == "I":
        a = arr.astype(np.int64)
        if a.size == 0 or (a.min() >= 0 and a.max() <= 65535):
            return ((a * 255 + 32767) // 65535).astype(np.uint8)
        lo, hi = int(a.min()), int(a.max())
        return (((a - lo) * 255 + (hi - lo) // 2) // (hi - lo)).astype(np.uint8)
    # "F"
    a = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if lo >= 0.0 and hi <= 1.0:
        return np.floor(a * 255.0 + 0.5).astype(np.uint8)
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.floor((a - lo) * (255.0 / (hi - lo)) + 0.5).clip(0, 255).astype(np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _to_uint8_gray(img)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        mode in ("P", "L", "RGB", "1") and img.info.get("transparency") is not None
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise SkipImage(f"unsupported colour mode {mode} ({safe_text(exc, 80)})") from None


def _target_short_side(resolution: int, crop_pct: float) -> int:
    return max(resolution, int(round(resolution / crop_pct)))


def check_decode_args(resolution: int, crop_pct: float) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise UsageError(f"resolution must be a positive int, got {resolution!r}")
    if not isinstance(crop_pct, (int, float)) or not math.isfinite(crop_pct) or crop_pct <= 0:
        raise UsageError(f"crop_pct must be a positive number, got {crop_pct!r}")


def _decode_open_image(img: Image.Image, resolution: int, crop_pct: float) -> np.ndarray:
    w, h = img.size
    if w * h > _max_pixels():
        raise SkipImage(_bomb_reason(w * h))
    if min(w, h) < MIN_SIDE:
        raise SkipImage(f"too small: {w}x{h} pixels (shorter side under {MIN_SIDE})")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise SkipImage(f"too elongated: {w}x{h} pixels (aspect {max(w, h) / min(w, h):.0f}:1 over {MAX_ASPECT:.0f}:1)")
    img.load()
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # unreadable EXIF: use the pixels as stored
        pass
    img = _to_rgb(img)
    w, h = img.size
    s = _target_short_side(resolution, crop_pct)
    if w <= h:
        new_w, new_h = s, int(s * h / w)
    else:
        new_w, new_h = int(s * w / h), s
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top = int(round((new_h - resolution) / 2.0))
    left = int(round((new_w - resolution) / 2.0))
    img = img.crop((left, top, left + resolution, top + resolution))
    out = np.array(img, dtype=np.uint8)
    if out.shape != (resolution, resolution, 3):  # defensive: never hand back a wrong shape
        raise SkipImage(f"decoded to an unexpected shape {out.shape}")
    return out


def _reason_for(exc: BaseException) -> str:
    msg = safe_text(exc)
    low = msg.lower()
    if isinstance(exc, Image.DecompressionBombError) or isinstance(exc, Image.DecompressionBombWarning):
        digits = [int(t) for t in msg.replace("(", " ").replace(")", " ").split() if t.isdigit()]
        return _bomb_reason(digits[0]) if digits else "decompression bomb: " + msg
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not a JPEG/PNG/BMP/WebP/TIFF image (unrecognised contents)"
    if "truncated" in low or isinstance(exc, EOFError):
        return f"truncated file ({msg})" if msg else "truncated file"
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    return f"corrupt image data ({type(exc).__name__}: {msg})" if msg else f"corrupt image data ({type(exc).__name__})"


def decode_image(path: str | bytes | os.PathLike, resolution: int, crop_pct: float = 0.875) -> np.ndarray:
    """Decode one file to a ``resolution x resolution x 3`` uint8 RGB array (policy: module doc).

    Raises ``SkipImage`` (with ``.reason``) for any file that cannot be used; never another
    exception for a bad *file* (bad arguments raise :class:`UsageError`). KeyboardInterrupt and
    SystemExit pass through.
    """
    check_decode_args(resolution, crop_pct)
    resolution = int(resolution)
    try:
        fd = files.open_for_reading(path)
    except OSError as exc:
        raise SkipImage(f"unreadable: {os_reason(exc)}") from None
    previous_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise SkipImage("a folder, not an image file")
        if not stat.S_ISREG(st.st_mode):
            raise SkipImage("not a regular file (FIFO, socket or device)")
        if st.st_size == 0:
            raise SkipImage("empty file (0 bytes)")
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow's per-file chatter (corrupt EXIF, ...)
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(fh, formats=_openable_formats()) as img:
                    return _decode_open_image(img, resolution, crop_pct)
    except SkipImage:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure on a bad file is a skip reason
        raise SkipImage(_reason_for(exc)) from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous_truncated
        if fd >= 0:
            os.close(fd)
