"""The image stream reader: find, decode and keep the unlabeled field images as one set.

``edgeprune adapt --images DIR`` runs unattended, so every bad file in ``DIR`` is *skipped with a
reason* rather than stopping the run, and nothing in a file is ever executed:

* Only JPEG (and MPO, the multi-picture JPEG many cameras write), PNG, BMP, WebP and TIFF are
  decoded, whatever the file is named: Pillow is never allowed to fall back to other plugins (EPS
  would run Ghostscript). Files are opened without following them as FIFOs or devices.
* Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, or Pillow's default 89,478,485
  pixels when someone set it to ``None``) is enforced: the warning is treated as an error.
* Truncated files are errors (``ImageFile.LOAD_TRUNCATED_IMAGES`` is forced to ``False`` while
  decoding, and every image is fully ``load()``-ed).

The parts: ``discovery.py`` (which files, and why others were skipped), ``decoding.py`` (one file
to pixels, with the decoding policy), this module (the decoded set, labels from class folders),
``split.py`` (prune / fine-tune / held-out), ``transforms.py`` (pixels to model input).

Public API::

    discover_images(root) -> (list[Path], list[{"path": str, "reason": str}])     (discovery)
    decode_image(path, resolution, crop_pct=0.875) -> np.ndarray  (uint8, R x R x 3) (decoding)
    load_images(root, resolution, crop_pct=0.875, limit=None, class_to_index=None, progress=None) -> ImageSet
    require_images(imageset, minimum) -> None                    (ImageError when too few)
    normalise(pixels_uint8, mean, std) -> float32 tensor        ((x / 255 - mean) / std)  (transforms)
    split_indices(n, prune=64, finetune=1000, seed=0, minimum=16) -> Split                 (split)
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch

from ..errors import ImageError, UsageError
from .decoding import SkipImage, check_decode_args, decode_image
from .discovery import check_root, detect_classes, discover_images, summarise_skipped
from .files import display_path


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
    check_decode_args(resolution, crop_pct)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UsageError(f"limit must be a positive int or None, got {limit!r}")
    root_path = check_root(root)
    paths, skipped = discover_images(root_path)
    labels_all, classes, unmapped = detect_classes(root_path, paths, class_to_index)
    for i in unmapped:
        folder = paths[i].relative_to(root_path).parts[0]
        skipped.append({"path": display_path(paths[i]), "reason": f"unknown class: folder {display_path(folder)!r} is not in class_to_index"})
    unusable = set(unmapped)
    order = [i for i in range(len(paths)) if i not in unusable]
    if limit is not None and limit < len(order):
        random.Random(0).shuffle(order)
    capacity = len(order) if limit is None else min(limit, len(order))
    pixels, kept = _decode_until(paths, order, capacity, int(resolution), crop_pct, skipped, progress)
    if limit is not None:  # back to path order
        pixels, kept = _in_path_order(pixels, kept)
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


def _decode_until(paths: list[Path], order: list[int], capacity: int, r: int, crop_pct: float,
                  skipped: list[dict[str, str]], progress) -> tuple[torch.Tensor, list[int]]:
    """Decode ``paths`` in ``order`` until ``capacity`` images are usable: (uint8 N x 3 x r x r, kept positions)."""
    pixels = torch.empty((capacity, 3, r, r), dtype=torch.uint8)
    kept: list[int] = []
    total = capacity
    for done, i in enumerate(order, start=1):
        if len(kept) >= capacity:
            break
        try:
            arr = decode_image(paths[i], r, crop_pct)
        except SkipImage as exc:
            skipped.append({"path": display_path(paths[i]), "reason": exc.reason})
            if total < len(order):
                total += 1
        else:
            pixels[len(kept)] = torch.from_numpy(arr).permute(2, 0, 1)
            kept.append(i)
        if progress is not None:
            progress(done, total)
    n = len(kept)
    return (pixels[:n].clone() if n < capacity else pixels), kept


def _in_path_order(pixels: torch.Tensor, kept: list[int]) -> tuple[torch.Tensor, list[int]]:
    n = len(kept)
    rank = sorted(range(n), key=lambda j: kept[j])
    if n:
        pixels[:n] = pixels[:n][torch.tensor(rank, dtype=torch.long)]
    return pixels, [kept[j] for j in rank]


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
