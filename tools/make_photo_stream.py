"""Build an unlabeled "field stream" of real photographs from scikit-image's bundled images.

There are no ImageNet images on the benchmark machines. scikit-image ships a handful of real
photos (astronaut, cat, coffee, rocket, Hubble deep field, retina, a motorcycle stereo pair, ...)
plus grey photos and textures; this tool turns them into N JPEGs with random crops (15-100% of
the area, aspect 3:4-4:3), horizontal flips and scales, so a model sees many different views.
The images are NOT independent (about 19 source photos): held-out agreement measured on them is
correlated across images; say so when reporting it.

    python tools/make_photo_stream.py OUT_DIR [--n 1300] [--seed 0] [--size 256]

Deterministic for a given seed. Files: OUT_DIR/photo_00000.jpg ... (flat folder: unlabeled).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image

COLOUR = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina"]
GREY = ["camera", "coins", "clock", "moon", "page", "text", "brick", "grass", "gravel", "cell"]


def source_photos() -> dict[str, np.ndarray]:
    """name -> uint8 H x W x 3 array, for every bundled photo that loads without a download."""
    import skimage.data as data

    out: dict[str, np.ndarray] = {}
    for name in COLOUR + GREY:
        try:
            a = np.asarray(getattr(data, name)())
        except Exception:  # a build without the file: skip it
            continue
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        out[name] = np.ascontiguousarray(a[..., :3]).astype(np.uint8)
    try:
        left, right, _ = data.stereo_motorcycle()
        out["motorcycle_left"], out["motorcycle_right"] = left.astype(np.uint8), right.astype(np.uint8)
    except Exception:
        pass
    if not out:
        raise SystemExit("scikit-image has no bundled photos here (pip install scikit-image)")
    return out


def random_view(img: np.ndarray, rng: np.random.Generator, size: int) -> Image.Image:
    h, w = img.shape[:2]
    for _ in range(20):
        area = rng.uniform(0.15, 1.0) * h * w
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
        if 16 <= cw <= w and 16 <= ch <= h:
            break
    else:
        cw, ch = min(w, h), min(w, h)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    view = Image.fromarray(img[y0 : y0 + ch, x0 : x0 + cw])
    if rng.random() < 0.5:
        view = view.transpose(Image.FLIP_LEFT_RIGHT)
    scale = size * rng.uniform(0.9, 1.3) / min(cw, ch)  # shorter side ~ size, some scale jitter
    return view.resize((max(16, round(cw * scale)), max(16, round(ch * scale))), Image.BILINEAR)


def make_stream(out: str | Path, n: int = 1300, seed: int = 0, size: int = 256, quality: int = 90,
                mix: tuple[str, ...] = ("clean",), severity: int = 2) -> list[Path]:
    """``mix``: conditions applied round robin (image i gets mix[i % len(mix)]): "clean" or an
    ImageNet-C corruption name (edgeprune.research.corruptions) at ``severity``."""
    from edgeprune.research.corruptions import corrupt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    photos = source_photos()
    names = sorted(photos)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        name = names[int(rng.integers(len(names)))]
        view = random_view(photos[name], rng, size)
        cond = mix[i % len(mix)]
        if cond != "clean":
            view = Image.fromarray(corrupt(np.asarray(view.convert("RGB"))[None], cond, severity, seed=i)[0])
        path = out / (f"photo_{i:05d}.jpg" if mix == ("clean",) else f"photo_{i:05d}_{cond}.jpg")
        view.save(path, quality=quality)
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=1300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256, help="approximate shorter side of each image")
    ap.add_argument("--mix", default="clean", help="conditions round robin, e.g. clean,fog,gaussian_noise")
    ap.add_argument("--severity", type=int, default=2, help="severity of the corruptions in --mix (1-5)")
    a = ap.parse_args()
    paths = make_stream(a.out, a.n, a.seed, a.size, mix=tuple(a.mix.split(",")), severity=a.severity)
    print(f"wrote {len(paths)} images from {len(source_photos())} photos to {a.out}")


if __name__ == "__main__":
    main()
