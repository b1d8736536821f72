"""The image stream reader: find, decode and split the unlabeled field images.

``edgeprune adapt --images DIR`` runs unattended, so every bad file in ``DIR`` is *skipped with a
reason* rather than stopping the run, and nothing in a file is ever executed:

* Only JPEG (and MPO, the multi-picture JPEG many cameras write), PNG, BMP, WebP and TIFF are
  decoded, whatever the file is named: Pillow is never allowed to fall back to other plugins (EPS
  would run Ghostscript). Files are opened without following them as FIFOs or devices.
* Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, or Pillow's default 89,478,485
  pixels when someone set it to ``None``) is enforced: the warning is treated as an error.
* Truncated files are errors (``ImageFile.LOAD_TRUNCATED_IMAGES`` is forced to ``False`` while
  decoding, and every image is fully ``load()``-ed).

Public API::

    discover_images(root) -> (list[Path], list[{"path": str, "reason": str}])
    decode_image(path, resolution, crop_pct=0.875) -> np.ndarray  (uint8, R x R x 3)
    load_images(root, resolution, crop_pct=0.875, limit=None, class_to_index=None, progress=None) -> ImageSet
    require_images(imageset, minimum) -> None                    (ImageError when too few)
    split_indices(n, prune=64, finetune=1000, seed=0, minimum=16) -> Split

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

import errno
import math
import os
import random
import stat
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from ..errors import ImageError, UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Pillow format names we let Image.open try; nothing else (no EPS/Ghostscript, no plugins).
# (Multi-picture JPEGs from cameras come back from the JPEG plugin as MPO images.)
ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF")
MIN_SIDE = 8  # pixels: shorter side below this is rejected (1x1, 3x500 ...)
MAX_ASPECT = 50.0  # long side / short side above this is rejected
PILLOW_DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default, used when MAX_IMAGE_PIXELS is None
MIN_USABLE_IMAGES = 16  # split_indices refuses fewer usable images than this
HELD_OUT_FRACTION = 0.10  # when images are short, at least this share is kept held out
FEW_HELD_OUT = 20  # warn when fewer held-out images than this remain for the report

_EXT_LIST = "jpg/jpeg/png/bmp/webp/tif/tiff"


class _SkipImage(Exception):
    """A file that cannot be used as an image; ``reason`` says why (one line, no path)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------- small helpers
def display_path(path: str | bytes | os.PathLike) -> str:
    """A printable, JSON/UTF-8-safe form of ``path``: undecodable bytes become ``\\xNN``."""
    raw = os.fsencode(path)
    return raw.decode(sys.getfilesystemencoding() or "utf-8", "backslashreplace")


def _safe_text(text: object, limit: int = 200) -> str:
    """One line, at most ``limit`` characters, encodable as UTF-8 (no lone surrogates)."""
    s = str(text).strip().splitlines()[0] if str(text).strip() else ""
    s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _os_reason(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT:
        return "no such file"
    return _safe_text(exc.strerror or exc) or type(exc).__name__


def _open_for_reading(path: str | os.PathLike) -> int:
    """``os.open`` read-only; O_NONBLOCK so a FIFO or device named ``x.jpg`` cannot hang us."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    return os.open(path, flags)


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _sort_key(rel: Path) -> tuple[bytes, ...]:
    # Byte-wise per component: independent of locale, works for non-UTF-8 names.
    return tuple(os.fsencode(p) for p in rel.parts)


# ---------------------------------------------------------------------------- discovery
def _check_root(root: str | bytes | os.PathLike) -> Path:
    if isinstance(root, bytes):
        root = os.fsdecode(root)
    root = Path(root)
    shown = display_path(root)
    try:
        st = os.stat(root)
    except FileNotFoundError:
        if os.path.islink(root):
            raise ImageError(f"image folder {shown} is a broken symlink") from None
        raise ImageError(f"image folder not found: {shown}", "pass the folder that holds the field images") from None
    except OSError as exc:
        raise ImageError(f"cannot open image folder {shown}: {_os_reason(exc)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{shown} is a file, not a folder", "pass the folder that contains the images (searched recursively)")
    return root


def discover_images(root: str | bytes | os.PathLike) -> tuple[list[Path], list[dict[str, str]]]:
    """Image files under ``root`` (recursively), and what was skipped on the way.

    Returns ``(paths, skipped)``. ``paths`` are ``root``-joined :class:`Path` objects (openable,
    also with non-UTF-8 names), sorted byte-wise by their path components relative to ``root``.
    Files count as images by extension (``jpg jpeg png bmp webp tif tiff``, any case); contents are
    checked later by :func:`decode_image`. ``skipped`` is a list of ``{"path": str, "reason": str}``
    (``path`` made printable with :func:`display_path`), one entry per item, for: hidden files with
    an image extension and hidden folders (leading ``.``; not searched), folders named like images
    (their contents *are* searched), broken symlinks, symlink loops, symlinked folders already
    searched (cycles, duplicates), unreadable files or folders, non-regular files (FIFOs, devices)
    with an image extension, and second links (symlink/hardlink) to a file already found.
    Other non-image files are ignored silently.

    Raises :class:`ImageError` when ``root`` is missing, not a folder, or holds no images.
    """
    root = _check_root(root)
    skipped: list[dict[str, str]] = []
    found: list[tuple[tuple[bytes, ...], Path, tuple[int, int], bool]] = []

    def skip(path: Path, reason: str) -> None:
        skipped.append({"path": display_path(path), "reason": reason})

    root_st = os.stat(root)
    visited_dirs = {(root_st.st_dev, root_st.st_ino)}
    stack: list[Path] = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            skip(folder, f"unreadable folder: {_os_reason(exc)}")
            continue
        subdirs: list[Path] = []
        for entry in entries:
            path = Path(entry.path)
            name = entry.name
            imagey = _is_image_name(name)
            is_link = False
            try:
                is_link = entry.is_symlink()
                st = os.stat(path)  # follows symlinks
            except FileNotFoundError:
                if is_link:
                    skip(path, "broken symlink")
                continue  # vanished while listing
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    skip(path, "symlink loop")
                else:
                    skip(path, f"unreadable: {_os_reason(exc)}")
                continue
            if stat.S_ISDIR(st.st_mode):
                if name.startswith("."):
                    skip(path, "hidden folder (not searched)")
                    continue
                key = (st.st_dev, st.st_ino)
                if key in visited_dirs:
                    skip(path, "folder already searched (symlink cycle or second link)")
                    continue
                visited_dirs.add(key)
                if imagey:
                    skip(path, "a folder named like an image, not an image file (its contents are searched)")
                subdirs.append(path)
                continue
            if not imagey:
                continue
            if name.startswith("."):
                skip(path, "hidden file")
                continue
            if not stat.S_ISREG(st.st_mode):
                skip(path, "not a regular file (FIFO, socket or device)")
                continue
            try:
                os.close(_open_for_reading(path))
            except OSError as exc:
                skip(path, f"unreadable: {_os_reason(exc)}")
                continue
            found.append((_sort_key(path.relative_to(root)), path, (st.st_dev, st.st_ino), is_link))
        stack.extend(reversed(subdirs))

    # Several links to one file (symlinks, hardlinks): keep one, preferring a non-symlink, then
    # the first in path order.
    found.sort(key=lambda t: t[0])
    keep: dict[tuple[int, int], tuple[tuple[bytes, ...], Path, tuple[int, int], bool]] = {}
    for item in found:
        if item[2] not in keep or (keep[item[2]][3] and not item[3]):
            keep[item[2]] = item
    paths: list[Path] = []
    for key, path, ident, _ in found:
        chosen = keep[ident]
        if chosen[0] != key:
            skip(path, f"duplicate: same file as {display_path(chosen[1].relative_to(root))} (a link), used once")
            continue
        paths.append(path)
    skipped.sort(key=lambda d: os.fsencode(d["path"]))
    if not paths:
        msg = f"no images ({_EXT_LIST}) found in {display_path(root)}"
        if skipped:
            msg += f" ({len(skipped)} skipped: {summarise_skipped(skipped)})"
        raise ImageError(msg, "edgeprune adapts to the images the robot sees; point --images at that folder")
    return paths, skipped


def detect_classes(
    root: str | os.PathLike, paths: Sequence[Path], class_to_index: Mapping[str, int] | None = None
) -> tuple[list[int] | None, list[str] | None, list[int]]:
    """Class-per-subfolder (ImageFolder) layout detection.

    Labelled when every image lies *directly* in a first-level subfolder of ``root`` and there are
    at least two such folders (one is enough when ``class_to_index`` is given). Without a mapping,
    label = index of the folder name in the sorted (byte-wise) folder names, and ``classes`` is that
    sorted list. With ``class_to_index`` (e.g. ImageNet wnid -> logit index) labels are the mapped
    indices, ``classes[i]`` is the (first, sorted) name mapped to ``i`` (``""`` for unused indices),
    and images in folders missing from the mapping are reported in the third return value (their
    positions in ``paths``) so the caller can skip them.

    Note: any tree of exactly two levels looks labelled (e.g. ``stream/2024-05-01/*.jpg``); labels
    only mean something when the caller knows the folder names are classes.

    Returns ``(labels or None, classes or None, unmapped positions)``. Raises :class:`ImageError`
    when ``class_to_index`` is given but the layout is not class-per-subfolder.
    """
    root = Path(root)
    folders: list[str] = []
    for p in paths:
        rel = p.relative_to(root)
        if len(rel.parts) != 2:
            folders = []
            break
        folders.append(rel.parts[0])
    distinct = sorted(set(folders), key=os.fsencode)
    if class_to_index is None:
        if len(distinct) < 2:
            return None, None, []
        index = {name: i for i, name in enumerate(distinct)}
        return [index[f] for f in folders], [display_path(n) for n in distinct], []
    if not distinct:
        raise ImageError(
            f"class_to_index was given but {display_path(root)} is not a class-per-subfolder layout",
            "put each class's images directly in ROOT/<class folder>/",
        )
    values = list(class_to_index.values())
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in values):
        raise UsageError("class_to_index values must be non-negative ints")
    if values and max(values) > 1_000_000:
        raise UsageError("class_to_index values must be class indices (at most 1,000,000)")
    classes = [""] * (max(values) + 1 if values else 0)
    for name in sorted(class_to_index, key=lambda n: os.fsencode(n)):
        if not classes[class_to_index[name]]:
            classes[class_to_index[name]] = display_path(name)
    labels, unmapped = [], []
    for i, f in enumerate(folders):
        if f in class_to_index:
            labels.append(class_to_index[f])
        else:
            labels.append(-1)
            unmapped.append(i)
    return labels, classes, unmapped


# ---------------------------------------------------------------------------- decoding
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
        raise _SkipImage(f"unsupported colour mode {mode} ({_safe_text(exc, 80)})") from None


def _target_short_side(resolution: int, crop_pct: float) -> int:
    return max(resolution, int(round(resolution / crop_pct)))


def _check_args(resolution: int, crop_pct: float) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise UsageError(f"resolution must be a positive int, got {resolution!r}")
    if not isinstance(crop_pct, (int, float)) or not math.isfinite(crop_pct) or crop_pct <= 0:
        raise UsageError(f"crop_pct must be a positive number, got {crop_pct!r}")


def _decode_open_image(img: Image.Image, resolution: int, crop_pct: float) -> np.ndarray:
    w, h = img.size
    if w * h > _max_pixels():
        raise _SkipImage(_bomb_reason(w * h))
    if min(w, h) < MIN_SIDE:
        raise _SkipImage(f"too small: {w}x{h} pixels (shorter side under {MIN_SIDE})")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise _SkipImage(f"too elongated: {w}x{h} pixels (aspect {max(w, h) / min(w, h):.0f}:1 over {MAX_ASPECT:.0f}:1)")
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
        raise _SkipImage(f"decoded to an unexpected shape {out.shape}")
    return out


def _reason_for(exc: BaseException) -> str:
    msg = _safe_text(exc)
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

    Raises ``_SkipImage`` (with ``.reason``) for any file that cannot be used; never another
    exception for a bad *file* (bad arguments raise :class:`UsageError`). KeyboardInterrupt and
    SystemExit pass through.
    """
    _check_args(resolution, crop_pct)
    resolution = int(resolution)
    try:
        fd = _open_for_reading(path)
    except OSError as exc:
        raise _SkipImage(f"unreadable: {_os_reason(exc)}") from None
    previous_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise _SkipImage("a folder, not an image file")
        if not stat.S_ISREG(st.st_mode):
            raise _SkipImage("not a regular file (FIFO, socket or device)")
        if st.st_size == 0:
            raise _SkipImage("empty file (0 bytes)")
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow's per-file chatter (corrupt EXIF, ...)
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(fh, formats=_openable_formats()) as img:
                    return _decode_open_image(img, resolution, crop_pct)
    except _SkipImage:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure on a bad file is a skip reason
        raise _SkipImage(_reason_for(exc)) from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous_truncated
        if fd >= 0:
            os.close(fd)


# ---------------------------------------------------------------------------- loading
@dataclass
class ImageSet:
    """Decoded images, kept as uint8 (4x less memory than float) until ``data.transforms.normalise``.

    ``pixels``: uint8 ``N x 3 x R x R``. ``paths``: printable paths (:func:`display_path`) of the
    N images, in order. ``labels``: long ``N`` or None (unlabeled). ``classes``: label names or
    None. ``found``: image files discovery handed to the decoder. ``skipped``: ``{"path",
    "reason"}`` for every unusable item (discovery and decoding). ``root``: printable folder.
    """

    pixels: torch.Tensor
    paths: list[str]
    labels: torch.Tensor | None
    classes: list[str] | None
    found: int
    skipped: list[dict[str, str]] = field(default_factory=list)
    root: str = ""

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


def summarise_skipped(skipped: Sequence[Mapping[str, str]], top: int = 3) -> str:
    """``"5 truncated file, 4 hidden file, 2 other"``: counts per reason kind (text before ':' / '(')."""
    kinds = Counter(d["reason"].split(":")[0].split(" (")[0].strip() for d in skipped)
    parts = [f"{n} {k}" for k, n in kinds.most_common(top)]
    rest = sum(kinds.values()) - sum(n for _, n in kinds.most_common(top))
    if rest:
        parts.append(f"{rest} other")
    return ", ".join(parts)


def load_images(
    root: str | bytes | os.PathLike,
    resolution: int,
    crop_pct: float = 0.875,
    limit: int | None = None,
    class_to_index: Mapping[str, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImageSet:
    """Discover and decode the images under ``root`` (see :func:`discover_images`, :func:`decode_image`).

    ``limit``: keep at most this many *usable* images. The files are tried in a fixed pseudo-random
    order (seed 0) so the subset is spread over the whole stream / all class folders, and a bad
    file is replaced by the next one; the kept images are returned in path order. Files not tried
    are neither loaded nor reported.
    ``progress(done, total)``: called after each file; ``total`` is the number of files that will be
    tried, which grows by one for each file skipped while ``limit`` is not yet met.
    Labels: see :func:`detect_classes`. Too few images is the caller's call: :func:`require_images`.
    """
    _check_args(resolution, crop_pct)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UsageError(f"limit must be a positive int or None, got {limit!r}")
    root_path = _check_root(root)
    paths, skipped = discover_images(root_path)
    labels_all, classes, unmapped = detect_classes(root_path, paths, class_to_index)
    bad = set(unmapped)
    for i in unmapped:
        folder = paths[i].relative_to(root_path).parts[0]
        skipped.append({"path": display_path(paths[i]), "reason": f"unknown class: folder {display_path(folder)!r} is not in class_to_index"})
    order = [i for i in range(len(paths)) if i not in bad]
    if limit is not None and limit < len(order):
        random.Random(0).shuffle(order)
    capacity = len(order) if limit is None else min(limit, len(order))
    r = int(resolution)
    pixels = torch.empty((capacity, 3, r, r), dtype=torch.uint8)
    kept: list[int] = []
    total = capacity
    for done, i in enumerate(order, start=1):
        if len(kept) >= capacity:
            break
        try:
            arr = decode_image(paths[i], r, crop_pct)
        except _SkipImage as exc:
            skipped.append({"path": display_path(paths[i]), "reason": exc.reason})
            if total < len(order):
                total += 1
        else:
            pixels[len(kept)] = torch.from_numpy(arr).permute(2, 0, 1)
            kept.append(i)
        if progress is not None:
            progress(done, total)
    n = len(kept)
    if limit is not None:  # back to path order
        rank = sorted(range(n), key=lambda j: kept[j])
        pixels[:n] = pixels[:n][torch.tensor(rank, dtype=torch.long)] if n else pixels[:n]
        kept = [kept[j] for j in rank]
    if n < capacity:
        pixels = pixels[:n].clone()
    skipped.sort(key=lambda d: os.fsencode(d["path"]))
    labels = torch.tensor([labels_all[i] for i in kept], dtype=torch.long) if labels_all is not None else None
    return ImageSet(
        pixels=pixels,
        paths=[display_path(paths[i]) for i in kept],
        labels=labels,
        classes=classes,
        found=len(paths),
        skipped=skipped,
        root=display_path(root_path),
    )


def require_images(imageset: ImageSet, minimum: int) -> None:
    """Raise :class:`ImageError` unless ``imageset`` holds at least ``minimum`` usable images."""
    n = len(imageset)
    if n >= minimum:
        return
    where = imageset.root or "the image folder"
    extra = f" ({len(imageset.skipped)} skipped: {summarise_skipped(imageset.skipped)})" if imageset.skipped else ""
    raise ImageError(
        f"only {n} usable image{'s' if n != 1 else ''} in {where}{extra}, need at least {minimum}",
        "add more images (jpg/jpeg/png/bmp/webp/tif/tiff) or fix the skipped ones",
    )


# ---------------------------------------------------------------------------- splitting
@dataclass
class Split:
    """Disjoint index lists into the usable images, and what was cut short."""

    prune: list[int]
    finetune: list[int]
    held_out: list[int]
    warnings: list[str] = field(default_factory=list)


def split_indices(n: int, prune: int = 64, finetune: int = 1000, seed: int = 0, minimum: int = MIN_USABLE_IMAGES) -> Split:
    """Seeded split of ``n`` usable images into prune / fine-tune / held-out index lists.

    A ``random.Random(seed)`` permutation of ``range(n)`` (the same on every platform and Python
    version) is cut in order: the first ``prune`` indices score blocks, the next ``finetune`` are
    distilled on, the rest are held out for the report. Each list keeps permutation order, so any
    prefix is itself a random subset.

    Too few images: refused with :class:`ImageError` below ``minimum`` (default 16). Otherwise, if
    ``prune + finetune`` would leave fewer than ``ceil(10% of n)`` images held out, that 10% is
    reserved first; of the remaining ``a`` images the prune set gets
    ``min(prune, max(a - finetune, ceil(a / 2)))`` (at most half unless fine-tuning needs less) and
    fine-tuning gets the rest up to ``finetune``; a warning says so. A warning is also added when
    fewer than 20 images end up held out (the report's estimates will be noisy).
    """
    for name, v in (("n", n), ("prune", prune), ("finetune", finetune), ("minimum", minimum)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise UsageError(f"{name} must be a non-negative int, got {v!r}")
    n, prune, finetune = int(n), int(prune), int(finetune)
    if n < minimum:
        raise ImageError(
            f"only {n} usable image{'s' if n != 1 else ''}, need at least {minimum} to prune, fine-tune and hold some out",
            "add more images to the stream folder",
        )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    notes: list[str] = []
    reserve = math.ceil(HELD_OUT_FRACTION * n)
    if prune + finetune <= n - reserve:
        p, f = prune, finetune
    else:
        a = n - reserve
        p = min(prune, max(a - finetune, (a + 1) // 2))
        f = min(finetune, a - p)
        notes.append(
            f"only {n} usable images: using {p} to prune and {f} to fine-tune (asked {prune} and {finetune}), "
            f"keeping {n - p - f} held out for the report"
        )
    held = n - p - f
    if held < FEW_HELD_OUT:
        notes.append(f"only {held} held-out image{'s' if held != 1 else ''}: the report's estimates will be noisy")
    return Split(prune=order[:p], finetune=order[p : p + f], held_out=order[p + f :], warnings=notes)
