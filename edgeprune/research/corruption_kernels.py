"""The image kernels behind ``corruptions.py``: blurs, zoom, disk and motion kernels, the plasma
fractal, the procedural frost texture, and the affine/elastic helpers (numpy, scipy.ndimage)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def gauss(img: np.ndarray, sigma: float) -> np.ndarray:
    """skimage.filters.gaussian on an H x W x C float image (mode 'nearest', truncate 4)."""
    return ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0)


def clipped_zoom(img: np.ndarray, z: float) -> np.ndarray:
    """Zoom the centre of an H x W x C image by ``z`` and crop back to H x W (ImageNet-C)."""
    h, w = img.shape[:2]
    ch, cw = int(np.ceil(h / z)), int(np.ceil(w / z))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = img[top : top + ch, left : left + cw]
    out = ndimage.zoom(crop, (z, z, 1), order=1, mode="nearest", grid_mode=False)
    if out.shape[0] < h or out.shape[1] < w:  # rounding guard
        out = np.pad(out, ((0, max(0, h - out.shape[0])), (0, max(0, w - out.shape[1])), (0, 0)), mode="edge")
    th, tw = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
    return out[th : th + h, tw : tw + w]


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """Anti-aliased disk kernel (8x8 supersampling), then ImageNet-C's alias Gaussian."""
    half = max(int(np.ceil(radius)), 1) + 1
    sub = 8
    coords = (np.arange(-half * sub, (half + 1) * sub) + 0.5) / sub - 0.5
    xx, yy = np.meshgrid(coords, coords)
    fine = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    n = 2 * half + 1
    k = fine.reshape(n, sub, n, sub).mean(axis=(1, 3))
    if k.sum() == 0:
        k[half, half] = 1.0
    k /= k.sum()
    k = ndimage.gaussian_filter(k, alias_blur, mode="constant", truncate=3.0)
    return k / k.sum()


def motion_kernel(radius: int, sigma: float, angle_deg: float) -> np.ndarray:
    """ImageMagick-style motion blur: one-sided Gaussian of ``2r+1`` taps along a line."""
    width = 2 * radius + 1
    taps = np.exp(-(np.arange(width, dtype=np.float64) ** 2) / (2.0 * max(sigma, 1e-3) ** 2))
    taps /= taps.sum()
    a = np.deg2rad(angle_deg)
    k = np.zeros((2 * width + 1, 2 * width + 1))
    c = width
    for i in range(width):
        dy = -int(np.ceil(i * np.sin(a) - 0.5))
        dx = -int(np.ceil(i * np.cos(a) - 0.5))
        k[c + dy, c + dx] += taps[i]
    return k


def convolve_rgb(img: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    return np.stack([ndimage.convolve(img[..., ch], kernel, mode=mode) for ch in range(img.shape[-1])], axis=-1)


def plasma(mapsize: int, wibbledecay: float, rng: np.random.Generator) -> np.ndarray:
    """ImageNet-C's diamond-square plasma fractal in [0, 1] (mapsize a power of two)."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=0)
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / max(maparray.max(), 1e-12)


def pow2_at_least(n: int) -> int:
    return 1 << max(1, int(np.ceil(np.log2(max(n, 2)))))


def frost_texture(h: int, w: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """Procedural stand-in for ImageNet-C's frost photos: H x W x 3 float in [0, 1]."""
    m = pow2_at_least(max(h, w))
    haze = plasma(m, 1.6, rng)[:h, :w]
    length = max(3, int(round(12 * s)))
    crystals = np.zeros((h, w))
    for _ in range(4):
        seeds = (rng.random((h, w)) < 0.03).astype(np.float64)
        k = motion_kernel(length, length, rng.uniform(0, 360))
        k = (k > 0).astype(np.float64)
        crystals = np.maximum(crystals, ndimage.convolve(seeds, k, mode="wrap"))
    crystals = np.clip(crystals, 0, 1)
    crystals = ndimage.gaussian_filter(crystals, max(0.4, 0.8 * s), mode="wrap")
    crystals /= max(crystals.max(), 1e-12)
    tex = np.clip(0.45 * haze + 0.65 * crystals, 0, 1)
    return tex[..., None] * np.array([0.82, 0.91, 1.0])


def affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2 x 3 matrix mapping three (x, y) points src -> dst (cv2.getAffineTransform)."""
    a = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(a, dst).T


def smoothed_noise_std(sigma: float) -> float:
    """Std of U(-1, 1) white noise after a 2-D Gaussian filter (truncate 3), ignoring borders."""
    r = int(3 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    taps /= taps.sum()
    return float(np.sqrt(1.0 / 3.0) * (taps**2).sum())
