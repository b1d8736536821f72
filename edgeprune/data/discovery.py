"""Finding the image files under a folder, and what had to be skipped on the way.

Every item that cannot be used is recorded as ``{"path": str, "reason": str}`` instead of stopping
the run: ``edgeprune adapt --images DIR`` runs unattended. Files are checked for readability
without following them as FIFOs or devices; their contents are checked later (``decoding.py``).
"""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import ImageError, UsageError
from . import files
from .files import display_path, os_reason

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
EXT_LIST = "jpg/jpeg/png/bmp/webp/tif/tiff"

# (sort key, path, (st_dev, st_ino), reached through a symlink)
Found = tuple[tuple[bytes, ...], Path, tuple[int, int], bool]
SkipFn = Callable[[Path, str], None]


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _sort_key(rel: Path) -> tuple[bytes, ...]:
    # Byte-wise per component: independent of locale, works for non-UTF-8 names.
    return tuple(os.fsencode(p) for p in rel.parts)


def summarise_skipped(skipped: Sequence[Mapping[str, str]], top: int = 3) -> str:
    """``"5 truncated file, 4 hidden file, 2 other"``: counts per reason kind (text before ':' / '(')."""
    kinds = Counter(d["reason"].split(":")[0].split(" (")[0].strip() for d in skipped)
    parts = [f"{n} {k}" for k, n in kinds.most_common(top)]
    rest = sum(kinds.values()) - sum(n for _, n in kinds.most_common(top))
    if rest:
        parts.append(f"{rest} other")
    return ", ".join(parts)


def check_root(root: str | bytes | os.PathLike) -> Path:
    """``root`` as a Path; ImageError unless it is an existing, readable folder."""
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
        raise ImageError(f"cannot open image folder {shown}: {os_reason(exc)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{shown} is a file, not a folder", "pass the folder that contains the images (searched recursively)")
    return root


def discover_images(root: str | bytes | os.PathLike) -> tuple[list[Path], list[dict[str, str]]]:
    """Image files under ``root`` (recursively), and what was skipped on the way.

    Returns ``(paths, skipped)``. ``paths`` are ``root``-joined :class:`Path` objects (openable,
    also with non-UTF-8 names), sorted byte-wise by their path components relative to ``root``.
    Files count as images by extension (``jpg jpeg png bmp webp tif tiff``, any case); contents are
    checked later by ``decoding.decode_image``. ``skipped`` is a list of ``{"path": str, "reason": str}``
    (``path`` made printable with :func:`display_path`), one entry per item, for: hidden files with
    an image extension and hidden folders (leading ``.``; not searched), folders named like images
    (their contents *are* searched), broken symlinks, symlink loops, symlinked folders already
    searched (cycles, duplicates), unreadable files or folders, non-regular files (FIFOs, devices)
    with an image extension, and second links (symlink/hardlink) to a file already found.
    Other non-image files are ignored silently.

    Raises :class:`ImageError` when ``root`` is missing, not a folder, or holds no images.
    """
    root = check_root(root)
    skipped: list[dict[str, str]] = []

    def skip(path: Path, reason: str) -> None:
        skipped.append({"path": display_path(path), "reason": reason})

    paths = _one_path_per_file(root, _walk(root, skip), skip)
    skipped.sort(key=lambda d: os.fsencode(d["path"]))
    if not paths:
        msg = f"no images ({EXT_LIST}) found in {display_path(root)}"
        if skipped:
            msg += f" ({len(skipped)} skipped: {summarise_skipped(skipped)})"
        raise ImageError(msg, "edgeprune adapts to the images the robot sees; point --images at that folder")
    return paths, skipped


def _walk(root: Path, skip: SkipFn) -> list[Found]:
    """Every usable image file under ``root``, depth first in byte order of the names."""
    root_st = os.stat(root)
    visited_dirs = {(root_st.st_dev, root_st.st_ino)}
    found: list[Found] = []
    stack: list[Path] = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            skip(folder, f"unreadable folder: {os_reason(exc)}")
            continue
        subdirs: list[Path] = []
        for entry in entries:
            kind, item = _examine(entry, root, visited_dirs, skip)
            if kind == "folder":
                subdirs.append(item)
            elif kind == "file":
                found.append(item)
        stack.extend(reversed(subdirs))
    return found


def _examine(entry: os.DirEntry, root: Path, visited_dirs: set, skip: SkipFn):
    """One folder entry: ("folder", path) to search, ("file", Found) to use, or (None, None)."""
    path = Path(entry.path)
    imagey = _is_image_name(entry.name)
    is_link = False
    try:
        is_link = entry.is_symlink()
        st = os.stat(path)  # follows symlinks
    except FileNotFoundError:
        if is_link:
            skip(path, "broken symlink")
        return None, None  # or vanished while listing
    except OSError as exc:
        skip(path, "symlink loop" if exc.errno == errno.ELOOP else f"unreadable: {os_reason(exc)}")
        return None, None
    if stat.S_ISDIR(st.st_mode):
        return ("folder", path) if _searchable_folder(path, entry.name, st, imagey, visited_dirs, skip) else (None, None)
    if not imagey:
        return None, None
    problem = _file_problem(path, entry.name, st)
    if problem:
        skip(path, problem)
        return None, None
    return "file", (_sort_key(path.relative_to(root)), path, (st.st_dev, st.st_ino), is_link)


def _searchable_folder(path: Path, name: str, st: os.stat_result, imagey: bool, visited_dirs: set, skip: SkipFn) -> bool:
    if name.startswith("."):
        skip(path, "hidden folder (not searched)")
        return False
    key = (st.st_dev, st.st_ino)
    if key in visited_dirs:
        skip(path, "folder already searched (symlink cycle or second link)")
        return False
    visited_dirs.add(key)
    if imagey:
        skip(path, "a folder named like an image, not an image file (its contents are searched)")
    return True


def _file_problem(path: Path, name: str, st: os.stat_result) -> str | None:
    """Why a file named like an image cannot be used, or None."""
    if name.startswith("."):
        return "hidden file"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (FIFO, socket or device)"
    try:
        os.close(files.open_for_reading(path))
    except OSError as exc:
        return f"unreadable: {os_reason(exc)}"
    return None


def _one_path_per_file(root: Path, found: list[Found], skip: SkipFn) -> list[Path]:
    """Several links to one file (symlinks, hardlinks): keep one, preferring a non-symlink, then
    the first in path order; the others are skipped as duplicates."""
    found.sort(key=lambda t: t[0])
    keep: dict[tuple[int, int], Found] = {}
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
    return paths


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
