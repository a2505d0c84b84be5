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


# OpenCV computes warpAffine's sampling positions in fixed point: 10 fractional bits, then rounded
# to 1/32 pixel (INTER_BITS = 5, INTER_TAB_SIZE = 32).
_AB_BITS, _INTER_BITS = 10, 5


def _affine_matrices(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(N, 2, 3) float64 matrices taking the three float32 (x, y) points `src` to each `dst[i]`
    (cv2.getAffineTransform; OpenCV solves the same system by its own LU, which can differ in the
    last bit: it moves a 1/32-pixel sampling position only on an exact rounding tie)."""
    a = np.hstack([src.astype(np.float64), np.ones((3, 1))])
    return np.swapaxes(np.linalg.solve(a, dst.astype(np.float64)), 1, 2)


def _invert_like_warp_affine(m: np.ndarray) -> np.ndarray:
    """The inverse (dst → src) map, in the operation order of cv2.warpAffine (no WARP_INVERSE_MAP)."""
    m0, m1, m2, m3, m4, m5 = (m[:, i // 3, i % 3] for i in range(6))
    d = m0 * m4 - m1 * m3
    d = np.where(d != 0, 1.0 / np.where(d != 0, d, 1.0), 0.0)
    a11, a22, a12, a21 = m4 * d, m0 * d, m1 * -d, m3 * -d
    b1 = -a11 * m2 - a12 * m5
    b2 = -a21 * m2 - a22 * m5
    return np.stack([np.stack([a11, a12, b1], -1), np.stack([a21, a22, b2], -1)], 1)


def _reflect_101(i: np.ndarray, n: int) -> np.ndarray:
    """cv2.BORDER_REFLECT_101 index (… 2 1 | 0 1 2 … n−1 | n−2 …), repeated until inside."""
    while True:
        out = (i < 0) | (i >= n)
        if not out.any():
            return i
        i = np.where(i < 0, -i, np.where(i >= n, 2 * n - 2 - i, i))


def _fixed_point_positions(inv: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """warpAffine's source positions of every output pixel in 1/32 pixel, (N, h, w) int64 each:
    rint((a·col)·1024) + rint((b·row + c)·1024) + 16, shifted right by 5 (floor)."""
    ab = 1 << _AB_BITS
    round_delta = ab >> (_INTER_BITS + 1)
    cols, rows = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    out = []
    for r in range(2):  # x (column) then y (row) source coordinate
        per_col = np.rint(inv[:, r, 0, None] * cols * ab).astype(np.int64)
        per_row = np.rint((inv[:, r, 1, None] * rows + inv[:, r, 2, None]) * ab).astype(np.int64) + round_delta
        out.append((per_row[:, :, None] + per_col[:, None, :]) >> (_AB_BITS - _INTER_BITS))
    return out[0], out[1]


def _warp_affine(img: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """cv2.warpAffine(img, M, (w, h)) with INTER_LINEAR and BORDER_REFLECT_101 for float32 NHWC
    images, one forward matrix M each: positions on OpenCV's 1/32-pixel grid, its bilinear weights
    (products of multiples of 1/32, exact in float32) and its float32 sum order."""
    n, h, w, _ = img.shape
    x, y = _fixed_point_positions(_invert_like_warp_affine(forward), h, w)
    tab = np.float32(1 << _INTER_BITS)
    fx, fy = (x & 31).astype(np.float32) / tab, (y & 31).astype(np.float32) / tab
    x0, y0 = x >> _INTER_BITS, y >> _INTER_BITS
    cols = [_reflect_101(x0, w), _reflect_101(x0 + 1, w)]
    rows = [_reflect_101(y0, h), _reflect_101(y0 + 1, h)]
    wx, wy = [1 - fx, fx], [1 - fy, fy]
    idx = np.arange(n)[:, None, None]
    out = np.zeros_like(img)
    for r, c in ((0, 0), (0, 1), (1, 0), (1, 1)):  # OpenCV's order: top-left, top-right, bottom-left, bottom-right
        out += img[idx, rows[r], cols[c]] * (wy[r] * wx[c])[..., None]
    return out


def _reflect_like_old_scipy(c: np.ndarray, n: int) -> np.ndarray:
    """How scipy < 1.6 maps a coordinate outside [0, n−1] for mode='reflect' (map_coordinate in
    ni_interpolation.c): the whole-pixel reflection −c − 1 (or 2n − c − 1) applied to fractional
    coordinates too, so −0.3 lands on −0.7, not on 0.3 (scipy 1.6 changed this)."""
    s2 = 2 * n
    low = np.where(c < -s2, s2 * np.trunc(-c / s2) + c, c)
    low = np.where(low < -n, low + s2, -low - 1)
    high = c - s2 * np.trunc(c / s2)
    high = np.where(high >= n, s2 - high - 1, high)
    return np.where(c < 0, low, np.where(c > n - 1, high, c))


def _mirror_index(i: np.ndarray, n: int) -> np.ndarray:
    """The index scipy < 1.6 reads outside the array, whatever the mode (s2 = 2n − 2: … 2 1 | 0 1 … n−1 | n−2 …)."""
    s2 = 2 * n - 2
    low = s2 * (-i // s2) + i  # C's (int)(−i / s2) for i < 0 is the floor of a non-negative quotient
    low = np.where(low <= 1 - n, low + s2, -low)
    high = i - s2 * (i // s2)
    high = np.where(high >= n, s2 - high, high)
    return np.where(i < 0, low, np.where(i >= n, high, i))


def _axis_taps(c: np.ndarray, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The two indices and linear weights along one axis (weights 1 − t and 1 − (1 − t), as scipy)."""
    c = _reflect_like_old_scipy(c, n)
    start = np.floor(c)
    w0 = 1.0 - (c - start)
    start = start.astype(np.int64)
    return [_mirror_index(start, n), _mirror_index(start + 1, n)], [w0, 1.0 - w0]


def _map_coordinates_old_scipy(img: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """scipy.ndimage.map_coordinates(img[i], (rows, cols, channel), order=1, mode='reflect') of
    float32 NHWC images as scipy < 1.6 computes it (the published CIFAR-10-C predates 1.6): the
    reflection above, then the four products ((v · w_row) · w_col) summed in double in scipy's
    order (the channel's second tap has weight 0) and rounded once to float32. `rows`, `cols`:
    float64 (N, h, w). Every mapped coordinate stays above −1 here, so the constant fallback never applies."""
    n, h, w, _ = img.shape
    (r_idx, r_w), (c_idx, c_w) = _axis_taps(rows, h), _axis_taps(cols, w)
    idx = np.arange(n)[:, None, None]
    out = np.zeros((*rows.shape, img.shape[-1]), np.float64)
    for r, c in ((0, 0), (0, 1), (1, 0), (1, 1)):
        out += img[idx, r_idx[r], c_idx[c]].astype(np.float64) * r_w[r][..., None] * c_w[c][..., None]
    return out.astype(np.float32)


_ELASTIC = [(0, 0, .08), (.05, .2, .07), (.08, .06, .06), (.1, .04, .05), (.1, .03, .03)]


@corruption
def elastic_transform(x, severity, rng, chunk: int = 1000):
    """The reference's random affine warp (cv2.warpAffine, reflect-101 border), then a smoothed
    random displacement field (scipy's map_coordinates, order 1, mode 'reflect').

    Both steps are reimplemented to the rounding of the tools that made the published set:
    OpenCV's fixed-point warp (sampling positions rounded to 1/32 pixel, float32 bilinear sums in
    its order), which gave the same bits as OpenCV 3.4.18, 4.10 and 4.12 on 15,000 warps each,
    and scipy < 1.6's treatment of coordinates beyond the border (`_reflect_like_old_scipy`; the
    published set predates scipy 1.6, whose 'reflect' differs there: on about half the border
    pixels, ~60 of 1024 per image, at severities 2–5). What remains different: getAffineTransform's
    matrix is solved by LAPACK here, by OpenCV's own solver there (last-bit differences, which
    move a sampling position only on an exact rounding tie: none in those 15,000 warps); the
    old-scipy border rule is transcribed from scipy 1.0–1.5's source, not run against it."""
    size = x.shape[1]
    alpha, sigma, affine = (v * size for v in _ELASTIC[severity - 1])
    centre, third = size // 2, size // 3
    pts1 = np.array([[centre + third, centre + third], [centre + third, centre - third],
                     [centre - third, centre - third]], dtype=np.float32)
    out = np.empty_like(x)
    for start in range(0, len(x), chunk):
        out[start:start + chunk] = _elastic_chunk(x[start:start + chunk], pts1, alpha, sigma, affine, rng)
    return out


def _elastic_chunk(x, pts1, alpha, sigma, affine, rng):
    from scipy import ndimage

    n, h, w, _ = x.shape
    img = x.astype(np.float32) / np.float32(255)  # the reference divides float32 pixels
    pts2 = pts1 + rng.uniform(-affine, affine, size=(n, 3, 2)).astype(np.float32)
    warped = _warp_affine(img, _affine_matrices(pts1, pts2))
    noise = rng.uniform(-1, 1, size=(2, n, h, w))  # dx then dy, as the reference draws them
    if sigma > 0:  # skimage's gaussian(mode='reflect', truncate=3); sigma 0 leaves the (zeroed) field as is
        noise = ndimage.gaussian_filter(noise, sigma=(0, 0, sigma, sigma), mode="reflect", truncate=3)
    dx, dy = (noise * alpha).astype(np.float32)
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    moved = _map_coordinates_old_scipy(warped, rows + dy.astype(np.float64), cols + dx.astype(np.float64))
    return _to_uint8(moved)


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
