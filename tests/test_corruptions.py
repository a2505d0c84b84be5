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


def reflect_101(p: int, n: int) -> int:
    """OpenCV's BORDER_REFLECT_101 index."""
    while not 0 <= p < n:
        p = -p if p < 0 else 2 * n - 2 - p
    return p


def opencv_gaussian_blur_3x3(a: np.ndarray, sigma: float) -> np.ndarray:
    """cv2.GaussianBlur(a, (3, 3), sigma) of a float32 image, written out: getGaussianKernel rounds
    exp() to float32 and divides by the double sum; the symmetric row then column passes compute
    centre·k1 + (left + right)·k0 in float32 with a reflect-101 border."""
    t = [float(np.float32(np.exp(-0.5 / (sigma * sigma) * x * x))) for x in (-1.0, 0.0, 1.0)]
    k0, k1 = (np.float32(v * (1.0 / (t[0] + t[1] + t[2]))) for v in t[:2])
    n = a.shape[0]
    out = a.copy()
    for axis in (1, 0):
        src = out.copy()
        for i in range(n):
            for j in range(n):
                at = lambda d: src[i, reflect_101(j + d, n)] if axis == 1 else src[reflect_101(i + d, n), j]
                out[i, j] = at(0) * k1 + (at(-1) + at(1)) * k0
    return out


@pytest.mark.parametrize("severity", C.SEVERITIES)
def test_defocus_kernel_has_opencv_rounding(severity):
    radius, alias_blur = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    span = np.arange(-8, 9)
    xx, yy = np.meshgrid(span, span)
    disk = np.array(xx ** 2 + yy ** 2 <= radius ** 2, dtype=np.float32)
    disk /= np.sum(disk)
    reference = opencv_gaussian_blur_3x3(disk, alias_blur)
    kernel = C._disk(radius, alias_blur)
    r = kernel.shape[0] // 2
    outside = reference.copy()
    outside[8 - r:9 + r, 8 - r:9 + r] = 0
    assert kernel.dtype == np.float32 and not outside.any()
    np.testing.assert_array_equal(kernel, reference[8 - r:9 + r, 8 - r:9 + r])


def test_defocus_keeps_flat_grey_levels_as_opencv_does():
    """OpenCV's kernels sum to 1 + 1e-9 ... 1 + 5e-8: a flat image keeps every level (kernels
    normalised in float32 sum below 1 at severities 1-3 and truncated flat regions one level down)."""
    flat = (np.arange(256, dtype=np.uint8)[:, None, None, None] * np.ones((1, 32, 32, 3), np.uint8))
    for severity in C.SEVERITIES:
        np.testing.assert_array_equal(C.corrupt("defocus_blur", flat, severity), flat)


def test_zoom_blur_matches_scipy_zoom_like_the_reference():
    """make_cifar_c.py's clipped_zoom with scipy's zoom (float32 in, each zoom rounded to float32)."""
    from scipy.ndimage import zoom

    def clipped_zoom(img, factor):
        h = img.shape[0]
        ch = int(np.ceil(h / factor))
        top = (h - ch) // 2
        img = zoom(img[top:top + ch, top:top + ch], (factor, factor, 1), order=1)
        trim = (img.shape[0] - h) // 2
        return img[trim:trim + h, trim:trim + h]

    noisy = np.clip(X.astype(int) + np.random.default_rng(1).integers(-30, 31, X.shape), 0, 255).astype(np.uint8)
    for severity in (1, 5):
        factors = np.arange(1, [1.06, 1.11, 1.16, 1.21, 1.26][severity - 1], 0.01)
        x = (noisy / 255.).astype(np.float32)
        out = np.zeros_like(x)
        for i in range(len(x)):
            for f in factors:
                out[i] += clipped_zoom(x[i], f)
        reference = (np.clip((x + out) / (len(factors) + 1), 0, 1) * 255).astype(np.uint8)
        np.testing.assert_array_equal(C.corrupt("zoom_blur", noisy, severity), reference)


# ---- elastic_transform: OpenCV's warpAffine and scipy < 1.6's map_coordinates, written out per pixel

def opencv_warp_affine(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """cv2.warpAffine(img, m, (32, 32), INTER_LINEAR, BORDER_REFLECT_101) of one float32 HWC image, as
    imgwarp.cpp computes it: invert m, positions in 1/1024 then 1/32 pixel, float32 table weights."""
    (a, b, c), (d, e, f) = m.tolist()
    det = a * e - b * d
    det = 1.0 / det if det != 0 else 0.0
    a, b, d, e = e * det, b * -det, d * -det, a * det
    c, f = -a * c - b * f, -d * c - e * f
    h, w, _ = img.shape
    out = np.empty_like(img)
    one, tab = np.float32(1), np.float32(32)
    for y in range(h):
        x0 = round((b * y + c) * 1024) + 16
        y0 = round((e * y + f) * 1024) + 16
        for x in range(w):
            sx = (x0 + round(a * x * 1024)) >> 5
            sy = (y0 + round(d * x * 1024)) >> 5
            ax, ay = np.float32(sx & 31) / tab, np.float32(sy & 31) / tab
            weights = [(one - ay) * (one - ax), (one - ay) * ax, ay * (one - ax), ay * ax]
            c0, c1 = reflect_101(sx >> 5, w), reflect_101((sx >> 5) + 1, w)
            r0, r1 = reflect_101(sy >> 5, h), reflect_101((sy >> 5) + 1, h)
            taps = [img[r0, c0], img[r0, c1], img[r1, c0], img[r1, c1]]
            out[y, x] = ((taps[0] * weights[0] + taps[1] * weights[1]) + taps[2] * weights[2]) + taps[3] * weights[3]
    return out


def old_scipy_reflect(coordinate: float, n: int) -> float:
    """map_coordinate(mode='reflect') of scipy 1.0–1.5 (ni_interpolation.c)."""
    if coordinate < 0:
        if coordinate < -2 * n:
            coordinate = 2 * n * int(-coordinate / (2 * n)) + coordinate
        return coordinate + 2 * n if coordinate < -n else -coordinate - 1
    if coordinate > n - 1:
        coordinate -= 2 * n * int(coordinate / (2 * n))
        return 2 * n - coordinate - 1 if coordinate >= n else coordinate
    return coordinate


def old_scipy_mirror(i: int, n: int) -> int:
    s2 = 2 * n - 2
    if i < 0:
        i = s2 * int(-i / s2) + i
        return i + s2 if i <= 1 - n else -i
    if i >= n:
        i -= s2 * int(i / s2)
        return s2 - i if i >= n else i
    return i


def old_scipy_linear(img: np.ndarray, row: float, col: float, channel: int) -> np.float32:
    """map_coordinates(img, [[row], [col], [channel]], order=1, mode='reflect')[0] under scipy < 1.6."""
    taps = []
    for coordinate, n in ((row, img.shape[0]), (col, img.shape[1])):
        cc = old_scipy_reflect(coordinate, n)
        start = int(np.floor(cc))
        w0 = 1.0 - (cc - np.floor(cc))
        taps.append([(old_scipy_mirror(start, n), w0), (old_scipy_mirror(start + 1, n), 1.0 - w0)])
    total = 0.0
    for r, wr in taps[0]:
        for c, wc in taps[1]:
            total += float(img[r, c, channel]) * wr * wc
    return np.float32(total)


def reference_elastic(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """make_cifar_c.py's elastic_transform of one image with the tools of 2018, from `rng`."""
    from scipy.ndimage import gaussian_filter

    alpha, sigma, affine = (32 * v for v in [(0, 0, .08), (.05, .2, .07), (.08, .06, .06), (.1, .04, .05),
                                             (.1, .03, .03)][severity - 1])
    img = np.array(image, dtype=np.float32) / 255.
    pts1 = np.float32([[26, 26], [26, 6], [6, 6]])
    pts2 = pts1 + rng.uniform(-affine, affine, size=(3, 2)).astype(np.float32)
    system = np.zeros((6, 6))  # cv2.getAffineTransform's system: rows (x, y, 1, 0, 0, 0) and (0, 0, 0, x, y, 1)
    for i, (px, py) in enumerate(pts1.astype(np.float64)):
        system[2 * i, :3] = system[2 * i + 1, 3:] = (px, py, 1)
    m = np.linalg.solve(system, pts2.astype(np.float64).ravel()).reshape(2, 3)
    img = opencv_warp_affine(img, m)
    dx, dy = ((gaussian_filter(rng.uniform(-1, 1, size=(32, 32)), sigma, mode="reflect", truncate=3) * alpha)
              .astype(np.float32) for _ in range(2))
    out = np.empty_like(img)
    for r in range(32):
        for c in range(32):
            for ch in range(3):
                out[r, c, ch] = old_scipy_linear(img, r + float(dy[r, c]), c + float(dx[r, c]), ch)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("severity", C.SEVERITIES)
def test_elastic_transform_reproduces_opencv_and_old_scipy(severity):
    for i in (0, 7):
        ours = C.corrupt("elastic_transform", X[i:i + 1], severity, seed=i)
        rng = np.random.default_rng([i, C.ALL.index("elastic_transform"), severity])
        np.testing.assert_array_equal(ours[0], reference_elastic(X[i], severity, rng))


def test_old_scipy_reflect_reads_the_whole_pixel_mirror():
    """Row coordinate −0.3 → −0.7 → rows 1 and 0 weighted 0.7 and 0.3 (scipy ≥ 1.6 would read row 0);
    31.3 stays and mirrors to row 30 beyond the edge (scipy ≥ 1.6: row 31)."""
    img = np.zeros((1, 32, 32, 3), np.float32)
    img[0, :, :, :] = np.arange(32, dtype=np.float32)[:, None, None]  # value = row
    rows = np.array([[[-0.3, 31.3, 32.25, 10.5]]])
    cols = np.full_like(rows, 4.0)
    got = C._map_coordinates_old_scipy(img, rows, cols)[0, 0, :, 0]
    np.testing.assert_allclose(got, [0.7, 31 * 0.7 + 30 * 0.3, 30.75, 10.5], rtol=1e-6)


def test_old_scipy_map_coordinates_agrees_with_scipy_inside():
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(0)
    img = rng.random((2, 32, 32, 3)).astype(np.float32)
    rows = rng.uniform(0, 31, (2, 32, 32))
    cols = rng.uniform(0, 31, (2, 32, 32))
    got = C._map_coordinates_old_scipy(img, rows, cols)
    for i in range(2):
        for ch in range(3):
            expected = map_coordinates(img[i], [rows[i].ravel(), cols[i].ravel(), np.full(1024, ch)], order=1)
            np.testing.assert_array_equal(got[i, :, :, ch].ravel(), expected)


# ---- spatter (mud) and frost

def reference_mud(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """make_cifar_c.py's spatter, mud branch, with skimage's gaussian written as scipy's gaussian_filter
    of float64 (mode nearest, truncate 4)."""
    from scipy.ndimage import gaussian_filter

    loc, scale, sigma, threshold, mud_sigma = {4: (0.65, 0.1, 0.7, 0.69, 0.6), 5: (0.65, 0.1, 0.5, 0.68, 0.6)}[severity]
    x = np.array(image, dtype=np.float32) / 255.
    liquid = gaussian_filter(rng.normal(size=(32, 32), loc=loc, scale=scale), sigma, mode="nearest", truncate=4)
    liquid[liquid < threshold] = 0
    m = np.where(liquid > threshold, 1, 0).astype(np.float32)
    m = gaussian_filter(m.astype(np.float64), mud_sigma, mode="nearest", truncate=4)
    m[m < 0.8] = 0
    color = np.concatenate([v / 255. * np.ones_like(x[..., :1]) for v in (63, 42, 20)], axis=2)
    color *= m[..., None]
    x *= (1 - m[..., None])
    return (np.clip(x + color, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("severity", [4, 5])
def test_spatter_mud_reproduces_the_reference(severity):
    for i in range(4):
        ours = C.corrupt("spatter", X[i:i + 1], severity, seed=i)
        rng = np.random.default_rng([i, C.ALL.index("spatter"), severity])
        np.testing.assert_array_equal(ours[0], reference_mud(X[i], severity, rng))
    assert C.generable_severities("spatter") == (4, 5)


def test_spatter_water_severities_name_what_opencv_does():
    for severity in (1, 2, 3):
        with pytest.raises(ValueError, match="Canny.*distanceTransform.*equalizeHist"):
            C.corrupt("spatter", X, severity)


@pytest.fixture
def frost_dir(tmp_path):
    """Stand-in frost photographs (the reference's are not shipped): odd sizes, PNG with alpha and JPEG."""
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(600, 900), (315, 560), (203, 341), (350, 527), (495, 660)]
    for name, (h, w) in zip(C.FROST_DRAWN, sizes):
        yy, xx = np.mgrid[0:h, 0:w]
        rgb = np.stack([(xx * 7 + yy) % 256, (yy * 3) % 256, rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
        if name.endswith(".png"):
            Image.fromarray(np.dstack([rgb, np.full((h, w), 200, np.uint8)])).save(tmp_path / name)
        else:
            Image.fromarray(rgb).save(tmp_path / name, quality=90)
    return tmp_path


def opencv_resize_linear(img: np.ndarray, scale: float) -> np.ndarray:
    """cv2.resize(img, (0, 0), fx=scale, fy=scale) with INTER_LINEAR: output i samples (i + 0.5)/scale − 0.5."""
    def taps(n_in):
        pos = (np.arange(round(n_in * scale)) + 0.5) / scale - 0.5
        lo = np.floor(pos).astype(int)
        return np.clip(lo, 0, n_in - 1), np.clip(lo + 1, 0, n_in - 1), pos - lo

    r0, r1, fr = taps(img.shape[0])
    c0, c1, fc = taps(img.shape[1])
    img = img.astype(np.float64)
    rows = img[r0] * (1 - fr)[:, None, None] + img[r1] * fr[:, None, None]
    out = rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]
    return np.round(out).astype(np.uint8)


def reference_frost(image: np.ndarray, severity: int, rng: np.random.Generator, folder) -> np.ndarray:
    """make_cifar_c.py's frost, with Pillow standing in for cv2.imread (RGB already: no BGR flip)."""
    from PIL import Image

    c = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][severity - 1]
    idx = rng.integers(5)
    filename = ['frost1.png', 'frost2.png', 'frost3.png', 'frost4.jpg', 'frost5.jpg', 'frost6.jpg'][idx]
    frost = opencv_resize_linear(np.asarray(Image.open(folder / filename).convert("RGB")), 0.2)
    x_start, y_start = rng.integers(0, frost.shape[0] - 32), rng.integers(0, frost.shape[1] - 32)
    frost = frost[x_start:x_start + 32, y_start:y_start + 32]
    return np.clip(c[0] * np.array(image) + c[1] * frost, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("severity", C.SEVERITIES)
def test_frost_reproduces_the_reference(severity, frost_dir):
    photos = C.read_frost_photos(frost_dir)
    for i in range(6):
        ours = C.corrupt("frost", X[i:i + 1], severity, seed=i, frost_photos=photos)
        rng = np.random.default_rng([i, C.ALL.index("frost"), severity])
        np.testing.assert_array_equal(ours[0], reference_frost(X[i], severity, rng, frost_dir))
    batch = C.corrupt("frost", X, severity, seed=1, frost_photos=photos)
    assert batch.shape == X.shape and not np.array_equal(batch, X)


def test_frost_needs_the_photographs(tmp_path):
    with pytest.raises(ValueError, match="--frost-dir"):
        C.corrupt("frost", X, 1)
    with pytest.raises(FileNotFoundError, match="frost1.png, frost2.png, frost3.png, frost4.jpg, frost5.jpg"):
        C.read_frost_photos(tmp_path)
    from PIL import Image

    for name in C.FROST_DRAWN:
        Image.fromarray(np.zeros((160, 400, 3), np.uint8)).save(tmp_path / name)
    with pytest.raises(ValueError, match=r"frost1.png \(80x32 shrunk\).* too small"):
        C.read_frost_photos(tmp_path)


def test_every_generated_corruption_states_its_fidelity():
    for name in [*C.AVAILABLE, "frost", "spatter"]:
        fidelity, random, reason = C.FIDELITY[name]
        assert fidelity in C.FIDELITY_LEVELS and isinstance(random, bool) and reason
