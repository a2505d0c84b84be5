"""The CIFAR-10-C-format generator: shape, dtype, determinism, severity monotonicity."""
from __future__ import annotations

import numpy as np
import pytest

from harness.data import corruptions as C


def smooth_images(n: int = 24, seed: int = 0) -> np.ndarray:
    """Natural-ish images: smooth colour gradients with a few hard edges, mid-range values."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(-1, 1, (3, 3))
        img = 0.5 + 0.2 * (a[:, None, None] * xx + b[:, None, None] * yy) + 0.1 * c[:, None, None]
        img = img + 0.15 * ((xx > rng.uniform(.3, .7)) ^ (yy > rng.uniform(.3, .7)))[None]
        out.append(np.clip(img.transpose(1, 2, 0), 0, 1))
    return (np.stack(out) * 255).astype(np.uint8)


X = smooth_images()


def high_freq(images: np.ndarray) -> float:
    f = images.astype(np.float64)
    return float(np.mean(np.diff(f, axis=1) ** 2) + np.mean(np.diff(f, axis=2) ** 2))


def test_names_partition_the_19():
    assert len(C.STANDARD) == 15 and len(C.EXTRA) == 4
    assert set(C.AVAILABLE) | set(C.UNAVAILABLE) == set(C.ALL) and not set(C.AVAILABLE) & set(C.UNAVAILABLE)


@pytest.mark.parametrize("name", C.AVAILABLE)
def test_shape_dtype_determinism(name):
    a = C.corrupt(name, X, 3, seed=5)
    b = C.corrupt(name, X.copy(), 3, seed=5)
    assert a.shape == X.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, X)


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "fog", "glass_blur"])
def test_random_corruptions_depend_on_seed(name):
    assert not np.array_equal(C.corrupt(name, X, 3, seed=0), C.corrupt(name, X, 3, seed=1))


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"])
def test_noise_grows_with_severity(name):
    stds = [np.std(C.corrupt(name, X, s).astype(np.float64) - X) for s in C.SEVERITIES]
    assert all(a < b for a, b in zip(stds, stds[1:])), stds


def test_contrast_falls_with_severity():
    spread = [C.corrupt("contrast", X, s).std(axis=(1, 2)).mean() for s in C.SEVERITIES]
    assert spread[0] < X.std(axis=(1, 2)).mean()
    assert all(a > b for a, b in zip(spread, spread[1:])), spread


@pytest.mark.parametrize("name", ["gaussian_blur", "defocus_blur", "zoom_blur"])
def test_blur_removes_high_frequencies(name):
    energy = [high_freq(C.corrupt(name, X, s)) for s in C.SEVERITIES]
    assert max(energy) < high_freq(X) and energy[-1] < energy[0], energy
    if name != "zoom_blur":  # overlaid zoomed edges are not strictly smoother at every step
        assert all(a >= b for a, b in zip(energy, energy[1:])), energy


def test_brightness_rises_and_pixelate_coarsens():
    means = [C.corrupt("brightness", X, s).mean() for s in C.SEVERITIES]
    assert X.mean() < means[0] and all(a < b for a, b in zip(means, means[1:]))
    err = [np.abs(C.corrupt("pixelate", X, s).astype(int) - X).mean() for s in C.SEVERITIES]
    assert all(a <= b for a, b in zip(err, err[1:])), err


def test_hsv_round_trip():
    x = np.random.default_rng(0).random((100, 3))
    np.testing.assert_allclose(C.hsv_to_rgb(C.rgb_to_hsv(x)), x, atol=1e-12)


def test_unavailable_corruption_says_why():
    with pytest.raises(ValueError, match="ImageMagick"):
        C.corrupt("motion_blur", X, 1)


def reference_glass_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """make_cifar_c.py's glass_blur for one HWC image, written out as it is there (the tuple
    assignment of two numpy views included), drawing (dx, dy) from `rng` in the generator's order."""
    from scipy import ndimage

    sigma, delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][severity - 1]
    blur = lambda a: ndimage.gaussian_filter(a, sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0)
    x = np.uint8(blur(image / 255.0) * 255)
    for _ in range(iterations):
        for h in range(32 - delta, delta, -1):
            for w in range(32 - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=(1, 2))[0]
                h_prime, w_prime = h + dy, w + dx
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return (np.clip(blur(x / 255.0), 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("severity", C.SEVERITIES)
def test_glass_blur_reproduces_the_reference_view_assignment(severity):
    ours = C.corrupt("glass_blur", X[:1], severity, seed=3)
    rng = np.random.default_rng([3, C.ALL.index("glass_blur"), severity])
    np.testing.assert_array_equal(ours[0], reference_glass_blur(X[0], severity, rng))


def test_defocus_kernel_is_built_in_float32_like_the_reference():
    kernel = C._disk(0.5, 0.6)
    span = np.arange(-8, 9)
    xx, yy = np.meshgrid(span, span)
    disk = np.array(xx ** 2 + yy ** 2 <= 0.25, dtype=np.float32)
    disk /= np.sum(disk)
    g = np.exp(-np.arange(-1, 2) ** 2 / (2 * 0.6 ** 2)).astype(np.float32)
    g /= g.sum()
    full = np.zeros((19, 19), np.float32)
    full[1:-1, 1:-1] = disk
    reference = sum(g[i] * g[j] * full[i:i + 17, j:j + 17] for i in range(3) for j in range(3))  # centre 3×3 here
    assert kernel.dtype == np.float32
    np.testing.assert_allclose(kernel, reference[7:10, 7:10], rtol=1e-6)
