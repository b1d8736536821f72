import numpy as np
import pytest
from scipy import ndimage

from edgeprune.errors import UsageError
from edgeprune.research.corruptions import CORRUPTIONS, corrupt

RANDOM = {
    "gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur",
    "snow", "frost", "fog", "elastic_transform",
}


def _images(n, size, seed=0, grey=False):
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random((n, size, size, 1 if grey else 3)), (0, size / 16, size / 16, 0))
    x = (x - x.min()) / (x.max() - x.min())
    x[:, size // 4 : size // 2, size // 4 : size // 2] = 0.9  # an edge
    x = (x * 255).astype(np.uint8)
    return np.repeat(x, 3, axis=-1) if grey else x


@pytest.fixture(scope="module")
def small():
    return _images(3, 32)


@pytest.fixture(scope="module")
def big():
    return _images(1, 64, seed=1)


def _mad(a, b):
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_names():
    assert len(CORRUPTIONS) == 15 and len(set(CORRUPTIONS)) == 15
    assert CORRUPTIONS[0] == "gaussian_noise" and CORRUPTIONS[-1] == "jpeg_compression"


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption(name, small, big):
    out = {}
    for sev in (1, 5):
        o = corrupt(small, name, sev, seed=3)
        assert o.shape == small.shape and o.dtype == np.uint8
        out[sev] = o
        # deterministic for a seed
        assert np.array_equal(o, corrupt(small, name, sev, seed=3))
        # NCHW round trip gives the same pixels in NCHW
        o_chw = corrupt(np.ascontiguousarray(small.transpose(0, 3, 1, 2)), name, sev, seed=3)
        assert o_chw.shape == (3, 3, 32, 32) and o_chw.dtype == np.uint8
        assert np.array_equal(o_chw.transpose(0, 2, 3, 1), o)
        # a single HxWx3 image is image 0 of a batch
        single = corrupt(small[0], name, sev, seed=3)
        assert single.shape == (32, 32, 3) and np.array_equal(single, o[0])
        ob = corrupt(big, name, sev, seed=3)
        assert ob.shape == big.shape and ob.dtype == np.uint8
        if name in RANDOM:
            assert not np.array_equal(o, corrupt(small, name, sev, seed=4))
    d1, d5 = _mad(out[1], small), _mad(out[5], small)
    if name == "elastic_transform":
        # Reference table: severities 1-2 are large affine warps, 3-5 growing elastic warps,
        # so pixel distance is monotone only from severity 3 on (as in ImageNet-C itself).
        d3 = _mad(corrupt(small, name, 3, seed=3), small)
        assert d5 > d3 > 0 and d1 > 0
    else:
        assert d5 > d1 > 0, (name, d1, d5)
    assert _mad(corrupt(big, name, 5, seed=3), big) > 0


def test_grey_inputs_replicated():
    g = _images(2, 32, grey=True)[..., :1]
    out = corrupt(g, "fog", 2)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
    assert np.array_equal(out, corrupt(np.repeat(g, 3, axis=-1), "fog", 2))
    assert corrupt(g[:, None, :, :, 0], "contrast", 1).shape == (2, 3, 32, 32)
    assert corrupt(g[0, :, :, 0], "pixelate", 1).shape == (32, 32, 3)


def test_per_image_streams_independent_of_batch(small):
    full = corrupt(small, "gaussian_noise", 2, seed=7)
    assert np.array_equal(corrupt(small[:1], "gaussian_noise", 2, seed=7)[0], full[0])
    n0 = full[0].astype(int) - small[0]
    n1 = full[1].astype(int) - small[1]
    assert not np.array_equal(n0, n1)  # a different stream per image


@pytest.mark.parametrize(
    "args",
    [("nope", 1), ("fog", 0), ("fog", 6), ("fog", 2.0), ("fog", True), ("Fog", 1)],
)
def test_bad_arguments(small, args):
    with pytest.raises(UsageError):
        corrupt(small, *args)


def test_bad_images(small):
    with pytest.raises(UsageError):
        corrupt(small.astype(np.float32), "fog", 1)
    with pytest.raises(UsageError):
        corrupt(np.zeros((2, 3, 8, 3), np.uint8), "fog", 1)  # ambiguous
    with pytest.raises(UsageError):
        corrupt(np.zeros((2, 4, 4, 3), np.uint8), "fog", 1)  # too small
    with pytest.raises(UsageError):
        corrupt(np.zeros((2, 32, 32, 5), np.uint8), "fog", 1)
