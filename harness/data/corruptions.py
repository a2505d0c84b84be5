"""CIFAR-10-C-format corruptions of uint8 NHWC images, generated here (numpy, scipy, Pillow).

Each corruption takes a batch (N, 32, 32, 3) uint8, a severity 1..5 and a numpy Generator and
returns the same shape in uint8. The severity parameters are those of the reference generator
(hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py); the code is our own, vectorised over
images where the corruption allows. As in the reference, the float result is clipped to [0, 255]
and truncated to uint8. Random draws come from the Generator passed in, so a seed gives the same
arrays on every machine (the reference draws from numpy's global state: its noise differs from
ours image by image, its distribution does not).

Not generated (need ImageMagick, OpenCV or the frost photographs): see `UNAVAILABLE`.
"""
from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

STANDARD = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
            "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
            "jpeg_compression")
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL = STANDARD + EXTRA
SEVERITIES = (1, 2, 3, 4, 5)

UNAVAILABLE = {
    "motion_blur": "the reference uses ImageMagick's MagickMotionBlurImage",
    "snow": "the reference motion-blurs its snow layer with ImageMagick",
    "frost": "the reference blends in frost photographs that are not distributed with the code",
    "spatter": "the reference shapes its liquid layer with OpenCV (Canny, distance transform, histogram equalisation)",
}

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
GENERATORS: dict[str, Corruption] = {}


def corruption(fn: Corruption) -> Corruption:
    GENERATORS[fn.__name__] = fn
    return fn


def _unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64) / 255.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats → uint8 as the reference does: clip, ×255, truncate."""
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


# ---------------------------------------------------------------- noise

@corruption
def gaussian_noise(x, severity, rng):
    c = [0.04, 0.06, .08, .09, .10][severity - 1]
    x = _unit(x)
    return _to_uint8(x + rng.normal(size=x.shape, scale=c))


@corruption
def shot_noise(x, severity, rng):
    c = [500, 250, 100, 75, 50][severity - 1]
    return _to_uint8(rng.poisson(_unit(x) * c) / c)


@corruption
def impulse_noise(x, severity, rng):
    """Salt and pepper on each value independently with probability c, half of each (as
    skimage.util.random_noise(mode='s&p'))."""
    c = [.01, .02, .03, .05, .07][severity - 1]
    x = _unit(x)
    hit = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    return _to_uint8(np.where(hit, salt.astype(np.float64), x))


@corruption
def speckle_noise(x, severity, rng):
    c = [.06, .1, .12, .16, .2][severity - 1]
    x = _unit(x)
    return _to_uint8(x + x * rng.normal(size=x.shape, scale=c))


# ---------------------------------------------------------------- blur

def _gaussian(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    """skimage.filters.gaussian over the two spatial axes of NHWC floats."""
    from scipy import ndimage

    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode=mode, truncate=truncate)


@corruption
def gaussian_blur(x, severity, rng):
    c = [.4, .6, 0.7, .8, 1][severity - 1]
    return _to_uint8(_gaussian(_unit(x), c))


def _cv_gaussian_taps(size: int, sigma: float) -> np.ndarray:
    """cv2.getGaussianKernel(size, sigma, CV_32F): exp in double rounded to float32, normalised by
    the double sum of those float32 values, rounded again."""
    x = np.arange(size) - (size - 1) * 0.5
    t = np.exp(-0.5 / (sigma * sigma) * x * x).astype(np.float32).astype(np.float64)
    return (t * (1.0 / t.sum())).astype(np.float32)


def _cv_symmetric_pass(a: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """One pass of cv2's separable filter with a symmetric 3-tap float32 kernel, reflect-101 border,
    in the arithmetic of its symmetric small-kernel filter: centre·k1 + (left + right)·k0, float32."""
    n = a.shape[axis]
    padded = np.take(a, np.r_[1, np.arange(n), n - 2], axis=axis)
    left, centre, right = (np.take(padded, np.arange(k, k + n), axis=axis) for k in range(3))
    return centre * taps[1] + (left + right) * taps[0]


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's anti-aliased disk kernel, trimmed to its support, with the float32 rounding
    of cv2.GaussianBlur(disk, (3, 3), alias_blur) on its 17×17 float32 disk (rows, then columns).
    The kernel's sum (1 + 1e-9 … 1 + 5e-8 with OpenCV's rounding, below 1 at severities 1–3 with
    a float32-normalised Gaussian) decides whether flat regions keep their level or truncate one
    below, so its bits are part of the published pixels (bit-identical to OpenCV 3.4.18 and 4.12)."""
    assert radius <= 8, "make_cifar_c.py's radii are at most 1.5 (17×17 disk, 3×3 blur)"
    span = np.arange(-8, 9)
    xx, yy = np.meshgrid(span, span)
    disk = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float32)
    disk /= disk.sum()
    taps = _cv_gaussian_taps(3, alias_blur)
    kernel = _cv_symmetric_pass(_cv_symmetric_pass(disk, taps, axis=1), taps, axis=0)
    rows, cols = np.nonzero(kernel)
    r = max(abs(rows - 8).max(), abs(cols - 8).max())
    return kernel[8 - r:9 + r, 8 - r:9 + r]


@corruption
def defocus_blur(x, severity, rng):
    from scipy import ndimage

    c = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    kernel = _disk(*c)
    return _to_uint8(ndimage.correlate(_unit(x), kernel[None, :, :, None], mode="mirror"))


@corruption
def glass_blur(x, severity, rng):
    """Blur, locally displace pixels, blur again. The reference writes each step as a swap of two
    numpy views, `x[h, w], x[h', w'] = x[h', w'], x[h, w]`, which copies x[h', w'] onto x[h, w] and
    leaves x[h', w'] as it was (the second assignment reads the already-overwritten view); the
    published CIFAR-10-C was made that way, so we copy too (a true swap is visibly harsher). The
    steps are sequential, as there, and done for all images at once."""
    sigma, delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][severity - 1]
    n, h, w = x.shape[:3]
    img = (_gaussian(_unit(x), sigma) * 255).astype(np.uint8)
    idx = np.arange(n)
    for _ in range(iterations):
        for row in range(h - delta, delta, -1):
            for col in range(w - delta, delta, -1):
                d = rng.integers(-delta, delta, size=(n, 2))  # (dx, dy) in [-delta, delta)
                r2, c2 = row + d[:, 1], col + d[:, 0]
                img[idx, row, col] = img[idx, r2, c2]
    return _to_uint8(_gaussian(img / 255.0, sigma))


def _zoom_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation of scipy.ndimage.zoom(order=1): output i samples
    input coordinate i·(n_in − 1)/(n_out − 1)."""
    pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom the centre of NHWC images by `factor` (bilinear, as scipy's zoom) and crop back to
    the same size; separable, so one matrix product per axis for the whole batch."""
    h = x.shape[1]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    n_out = int(round(ch * factor))
    trim = (n_out - h) // 2
    m = _zoom_matrix(ch, n_out)[trim:trim + h]
    # scipy interpolates float32 input in double and rounds each output once to float32; so do we
    # (float32 products here would put ~1 value in 10^5 one level off after truncation)
    crop = x[:, top:top + ch, top:top + ch].astype(np.float64)
    return np.einsum("ai,nijc,bj->nabc", m, crop, m, optimize=True).astype(x.dtype)


@corruption
def zoom_blur(x, severity, rng):
    top = [1.06, 1.11, 1.16, 1.21, 1.26][severity - 1]
    factors = np.arange(1, top, 0.01)
    x = _unit(x).astype(np.float32)
    out = np.zeros_like(x)
    for f in factors:
        out += _clipped_zoom(x, f)
    return _to_uint8((x + out) / (len(factors) + 1))


# ---------------------------------------------------------------- weather, digital

def plasma_fractal(n: int, rng: np.random.Generator, mapsize: int = 32, wibbledecay: float = 3) -> np.ndarray:
    """(n, mapsize, mapsize) diamond-square height maps in [0, 1], one per image."""
    maps = np.zeros((n, mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled(a):
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0::step, 0::step]
        square = corners + np.roll(corners, -1, axis=1)
        square = square + np.roll(square, -1, axis=2)
        maps[:, half::step, half::step] = wibbled(square)
        dr = maps[:, half::step, half::step]
        ul = maps[:, 0::step, 0::step]
        maps[:, 0::step, half::step] = wibbled(dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2))
        maps[:, half::step, 0::step] = wibbled(dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1))
        step //= 2
        wibble /= wibbledecay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


@corruption
def fog(x, severity, rng):
    amount, decay = [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
    x = _unit(x)
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    x = x + amount * plasma_fractal(len(x), rng, 32, decay)[..., None]
    return _to_uint8(x * max_val / (max_val + amount))


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(-1)
    delta = v - rgb.min(-1)
    s = np.where(v > 0, delta / np.where(v > 0, v, 1), 0.0)
    safe = np.where(delta > 0, delta, 1)
    h = np.where(v == r, (g - b) / safe, np.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = np.where(delta > 0, (h / 6) % 1.0, 0.0)
    return np.stack([h, s, v], -1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    i = np.floor(h * 6)
    f = h * 6 - i
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    i = i.astype(np.int64) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.stack([np.select([i == k for k in range(6)], [c[ch] for c in choices]) for ch in range(3)], -1)


@corruption
def brightness(x, severity, rng):
    c = [.05, .1, .15, .2, .3][severity - 1]
    hsv = rgb_to_hsv(_unit(x))
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return _to_uint8(hsv_to_rgb(hsv))


@corruption
def saturate(x, severity, rng):
    scale, shift = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][severity - 1]
    hsv = rgb_to_hsv(_unit(x))
    hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0, 1)
    return _to_uint8(hsv_to_rgb(hsv))


@corruption
def contrast(x, severity, rng):
    c = [.75, .5, .4, .3, 0.15][severity - 1]
    x = _unit(x)
    means = x.mean(axis=(1, 2), keepdims=True)
    return _to_uint8((x - means) * c + means)


@corruption
def jpeg_compression(x, severity, rng):
    from PIL import Image

    quality = [80, 65, 58, 50, 40][severity - 1]
    out = np.empty_like(x)
    for i, img in enumerate(x):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=quality)
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out


@corruption
def pixelate(x, severity, rng):
    from PIL import Image

    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    h, w = x.shape[1:3]
    small = (int(w * c), int(h * c))
    out = np.empty_like(x)
    for i, img in enumerate(x):
        out[i] = np.asarray(Image.fromarray(img).resize(small, Image.BOX).resize((w, h), Image.BOX))
    return out


def _affine_2x3(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 matrix taking three (x, y) points `src` to `dst` (cv2.getAffineTransform)."""
    a = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(a, dst).T


@corruption
def elastic_transform(x, severity, rng, chunk: int = 1000):
    """Random affine (reflect-101 border), then a smoothed random displacement field, bilinear."""
    from scipy import ndimage

    size = x.shape[1]
    alpha, sigma, affine = [(0, 0, .08), (.05, .2, .07), (.08, .06, .06), (.1, .04, .05), (.1, .03, .03)][severity - 1]
    alpha, sigma, affine = alpha * size, sigma * size, affine * size
    centre, half = size // 2, size // 3
    pts1 = np.array([[centre + half, centre + half], [centre + half, centre - half],
                     [centre - half, centre - half]], dtype=np.float64)
    n, h, w, ch = x.shape
    out = np.empty_like(x)
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for start in range(0, n, chunk):
        img = _unit(x[start:start + chunk]).astype(np.float32)
        m = len(img)
        pts2 = pts1 + rng.uniform(-affine, affine, size=(m, 3, 2)).astype(np.float32)
        warped = np.empty_like(img)
        for i in range(m):  # dst(x, y) = src(M⁻¹ (x, y)): scipy's affine_transform wants the inverse, in (row, col)
            inv = _affine_2x3(pts2[i], pts1)  # dst → src in (x, y)
            matrix = np.array([[inv[1, 1], inv[1, 0]], [inv[0, 1], inv[0, 0]]])
            offset = np.array([inv[1, 2], inv[0, 2]])
            for c in range(ch):
                warped[i, :, :, c] = ndimage.affine_transform(img[i, :, :, c], matrix, offset, order=1, mode="mirror")
        noise = rng.uniform(-1, 1, size=(2, m, h, w))
        if sigma > 0:
            noise = ndimage.gaussian_filter(noise, sigma=(0, 0, sigma, sigma), mode="reflect", truncate=3)
        dx, dy = (noise * alpha).astype(np.float32)
        coords = np.stack([
            np.broadcast_to(np.arange(m)[:, None, None, None], (m, h, w, ch)),
            np.broadcast_to((rows + dy)[..., None], (m, h, w, ch)),
            np.broadcast_to((cols + dx)[..., None], (m, h, w, ch)),
            np.broadcast_to(np.arange(ch), (m, h, w, ch)),
        ]).astype(np.float32)
        out[start:start + m] = _to_uint8(ndimage.map_coordinates(warped, coords, order=1, mode="reflect"))
    return out


AVAILABLE = tuple(name for name in ALL if name in GENERATORS)
assert set(AVAILABLE) | set(UNAVAILABLE) == set(ALL)


def corrupt(name: str, images: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    """One corruption at one severity of uint8 NHWC images; the same seed gives the same array."""
    if name not in GENERATORS:
        raise ValueError(f"{name!r} cannot be generated here: {UNAVAILABLE.get(name, 'unknown corruption')}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    rng = np.random.default_rng([seed, ALL.index(name), severity])
    out = GENERATORS[name](np.ascontiguousarray(images, dtype=np.uint8), severity, rng)
    assert out.shape == images.shape and out.dtype == np.uint8, (name, out.shape, out.dtype)
    return out
