"""CIFAR-10-C-format corruptions of uint8 NHWC images, generated here (numpy, scipy, Pillow).

Each corruption takes a batch (N, 32, 32, 3) uint8, a severity 1..5 and a numpy Generator and
returns the same shape in uint8. The severity parameters and formulas are those of the reference
generator (hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py, with the numpy, scipy,
skimage and OpenCV of its time, 2018); the code is our own, vectorised over images where the
corruption allows. As in the reference, the float result is clipped and truncated to uint8.

Random draws come from the Generator passed in, so a seed gives the same arrays on every machine.
The reference drew from numpy's global RandomState, never seeded: no generator can replay its
draws, so a random corruption reproduces the published images in distribution only, however
exact its formula; `FIDELITY` says, per corruption, whether the formula and rounding are the
reference's ("exact": the reference's draws would give the published pixels) and why.

Not generated from the test images alone: motion_blur and snow (ImageMagick's motion blur),
frost (needs the reference's photographs, see `read_frost_photos`) and spatter (severities 1–3
need OpenCV; 4–5 are generated): see `UNAVAILABLE`.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np

STANDARD = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
            "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
            "jpeg_compression")
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL = STANDARD + EXTRA
SEVERITIES = (1, 2, 3, 4, 5)

# Corruptions that cannot be generated at all five severities from the test images alone.
UNAVAILABLE = {
    "motion_blur": "the reference blurs with ImageMagick's MagickMotionBlurImage (through Wand), not reimplemented",
    "snow": "the reference motion-blurs its snow layer with ImageMagick's MagickMotionBlurImage, not reimplemented",
    "frost": "needs the reference's frost photographs (frost1.png ... frost5.jpg of hendrycks/robustness, "
             "ImageNet-C/create_c/): prepare with --frost-dir PATH",
    "spatter": "severities 1-3 (water drops) need OpenCV (Canny, distanceTransform, equalizeHist); "
               "4-5 (mud) are made by corruptions.spatter, but the cache holds a corruption only at all five severities",
}

EXACT, DISTRIBUTION = "exact", "distribution"
# Per corruption: (fidelity, random?, why). "exact": the reference's formula and rounding, so its
# random draws would give its pixels (a value that lands on a truncation boundary may come out one
# level apart where sums run in another order); "distribution": only the distribution is the same.
FIDELITY = {
    "gaussian_noise": (EXACT, True, "x/255 + N(0, c), clipped, x255, truncated, as the reference"),
    "shot_noise": (EXACT, True, "Poisson(c*x/255)/c, as the reference"),
    "impulse_noise": (EXACT, True, "skimage's salt and pepper: the same masks give the same pixels "
                                   "(drawn as uniforms < p here, by np.random.choice there)"),
    "speckle_noise": (EXACT, True, "x + x*N(0, c), as the reference"),
    "gaussian_blur": (EXACT, False, "skimage's gaussian: scipy's gaussian_filter, mode nearest, truncate 4"),
    "defocus_blur": (EXACT, False, "the reference's disk with cv2.GaussianBlur's float32 rounding (kernels "
                                   "bit-identical to OpenCV 3.4-4.12); filter2D's double sums in another order"),
    "glass_blur": (EXACT, True, "the reference's numpy-view 'swap' copies one pixel onto the other: copied "
                                "likewise, in its order"),
    "zoom_blur": (EXACT, False, "scipy's zoom(order=1) as matrix products in double, rounded once to float32 "
                                "per zoom as scipy does"),
    "fog": (EXACT, True, "the reference's diamond-square plasma fractal"),
    "brightness": (EXACT, False, "skimage's rgb2hsv/hsv2rgb formulas"),
    "saturate": (EXACT, False, "skimage's rgb2hsv/hsv2rgb formulas"),
    "contrast": (EXACT, False, "(x - mean)*c + mean, as the reference"),
    "jpeg_compression": (EXACT, False, "Pillow's JPEG at the reference's quality: the same pixels with the "
                                       "same libjpeg"),
    "pixelate": (EXACT, False, "Pillow's BOX resize down and up, as the reference"),
    "elastic_transform": (EXACT, True, "cv2.warpAffine's 1/32-pixel fixed-point bilinear (bit-identical to "
                                       "OpenCV 3.4-4.12) and scipy<1.6's map_coordinates 'reflect' border "
                                       "(transcribed from its source), reimplemented"),
    "frost": (EXACT, True, "the reference's blend with a random crop of frost1-5 shrunk as cv2.resize(fx=0.2) "
                           "does; decoded as OpenCV 3.4-4.12 does (an IJG libjpeg 9 build would upsample "
                           "frost5.jpg's 4:2:0 chroma otherwise)"),
    "spatter": (EXACT, True, "severities 4-5 (mud), the reference's formula and dtypes (skimage<=0.14 "
                             "blurred the mask in float64)"),
}
FOREIGN_FROST = "frost photographs that are not the reference's (their SHA-256 differs)"
FIDELITY_LEVELS = {
    EXACT: "the reference's formula and rounding: with the reference's random draws, the published pixels (a value "
           "on a truncation boundary may land one level apart where sums run in another order). Deterministic "
           "corruptions (random: false) thus reproduce the published arrays; random ones draw from a seeded numpy "
           "Generator, not the reference's unseeded global RandomState, so they reproduce the published "
           "distribution, not its images",
    DISTRIBUTION: "only the published distribution: a formula, a third-party operation or an input differs",
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
    n, channels = len(crop), crop.shape[-1]
    rows = np.matmul(m, crop.reshape(n, ch, ch * channels)).reshape(n, h, ch, channels)  # zoom down the rows
    return np.matmul(m, rows).astype(x.dtype)  # then along each row: (h, ch) @ (ch, channels) per row


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


# (loc, scale, sigma, threshold, mud sigma, mud?) of make_cifar_c.py; severities 1–3 are water drops
_SPATTER = [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
            (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)]
SPATTER_SEVERITIES = (4, 5)
SPATTER_WATER = ("spatter severities 1-3 (water drops) shape the liquid layer with OpenCV (cv2.Canny(50, 150), "
                 "cv2.distanceTransform(DIST_L2, 5), cv2.equalizeHist, a saturating uint8 cv2.filter2D), "
                 "not reimplemented here; severities 4-5 (mud) are generated")
_MUD_BROWN = np.array([63, 42, 20]) / 255.0


@corruption
def spatter(x, severity, rng):
    """Mud (severities 4–5 only): where a thresholded, blurred random layer is dense, the image
    gives way to mud brown. Dtypes as the reference: float32 image and colour, float64 layers; the
    mud mask is blurred in float64, as the skimage of 2018 (≤ 0.14) converted its float32 input
    (later skimage keeps float32: last-bit differences in the mask)."""
    loc, scale, sigma, threshold, mud_sigma, is_mud = _SPATTER[severity - 1]
    if not is_mud:
        raise ValueError(SPATTER_WATER)
    img = x.astype(np.float32) / np.float32(255)
    liquid = _gaussian(rng.normal(loc, scale, size=x.shape[:3])[..., None], sigma)[..., 0]
    liquid[liquid < threshold] = 0
    mud = _gaussian((liquid > threshold).astype(np.float32).astype(np.float64)[..., None], mud_sigma)
    mud[mud < 0.8] = 0
    colour = (_MUD_BROWN.astype(np.float32) * mud).astype(np.float32)  # float32 colour *= float64 mask
    img = (img * (1 - mud)).astype(np.float32)
    return _to_uint8(img + colour)


# (image weight, frost weight) of make_cifar_c.py
_FROST = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)]
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
FROST_DRAWN = FROST_FILES[:5]  # make_cifar_c.py picks np.random.randint(5): frost6.jpg is never drawn
# SHA-256 of the photographs in hendrycks/robustness, ImageNet-C/create_c/ (the generator's folder)
REFERENCE_FROST_SHA256 = {
    "frost1.png": "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755",
    "frost2.png": "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137",
    "frost3.png": "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504",
    "frost4.jpg": "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e",
    "frost5.jpg": "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2",
    "frost6.jpg": "1f92b2f48408748085b68dd81d816ef239f42cef3029c25d041fcb6760fb4f25",
}


def read_frost_photo(path) -> np.ndarray:
    """One photograph as the reference's `cv2.resize(cv2.imread(path), (0, 0), fx=0.2, fy=0.2)`,
    in RGB: 8-bit colour, alpha dropped, EXIF orientation applied (as cv2.imread does), then
    INTER_LINEAR at scale 1/5, whose output pixel i samples source (i + 0.5)·5 − 0.5 = 5i + 2, a
    whole pixel: the resize is the subsampling [2::5, 2::5]."""
    from PIL import Image, ImageOps

    with Image.open(path) as photo:
        rgb = np.asarray(ImageOps.exif_transpose(photo).convert("RGB"))
    return np.ascontiguousarray(rgb[2::5, 2::5])


def read_frost_photos(folder) -> list[np.ndarray]:
    """The photographs the reference draws from (frost1.png … frost5.jpg), shrunk; FileNotFoundError
    names the missing ones."""
    from pathlib import Path

    folder = Path(folder).expanduser()
    missing = [f for f in FROST_DRAWN if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: no {', '.join(missing)} (the frost photographs of "
                                "hendrycks/robustness, ImageNet-C/create_c/)")
    photos = [read_frost_photo(folder / f) for f in FROST_DRAWN]
    small = [f"{f} ({p.shape[1]}x{p.shape[0]} shrunk)" for f, p in zip(FROST_DRAWN, photos) if min(p.shape[:2]) <= 32]
    if small:  # the crop corner is drawn from [0, side − 32) of the shrunk photograph
        raise ValueError(f"{folder}: {', '.join(small)} too small: each side must shrink by 5 to more than 32 pixels")
    return photos


def frost(x, severity, rng, photos):
    """`clip(a·x + b·crop, 0, 255)` with a random 32×32 crop of a random photograph (shrunk by
    `read_frost_photo`), as make_cifar_c.py: draws photograph, crop row in [0, H − 32), crop
    column in [0, W − 32) (batched here: every image's photograph, then rows, then columns)."""
    a, b = _FROST[severity - 1]
    n, h, w = x.shape[:3]
    pick = rng.integers(len(photos), size=n)
    top = rng.integers(0, np.array([photos[k].shape[0] - h for k in pick]))
    left = rng.integers(0, np.array([photos[k].shape[1] - w for k in pick]))
    crops = np.stack([photos[k][t:t + h, l:l + w] for k, t, l in zip(pick, top, left)])
    return np.clip(a * x + b * crops, 0, 255).astype(np.uint8)


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


AVAILABLE = tuple(name for name in ALL if name not in UNAVAILABLE)  # from the test images alone, all severities
assert set(AVAILABLE) <= set(GENERATORS) and set(FIDELITY) == set(GENERATORS) | {"frost"}


def generable_severities(name: str) -> tuple[int, ...]:
    """The severities `corrupt` can make of `name` (frost: given its photographs)."""
    if name == "spatter":
        return SPATTER_SEVERITIES
    return SEVERITIES if name in GENERATORS or name == "frost" else ()


def corrupt(name: str, images: np.ndarray, severity: int, seed: int = 0,
            frost_photos: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """One corruption at one severity of uint8 NHWC images; the same seed gives the same array.
    `frost_photos`: `read_frost_photos(folder)`, needed for frost only."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    if severity not in generable_severities(name) or (name == "frost" and not frost_photos):
        why = SPATTER_WATER if name == "spatter" else UNAVAILABLE.get(name, "unknown corruption")
        raise ValueError(f"{name!r} cannot be generated here: {why}")
    rng = np.random.default_rng([seed, ALL.index(name), severity])
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if name == "frost":
        out = frost(images, severity, rng, frost_photos)
    else:
        out = GENERATORS[name](images, severity, rng)
    assert out.shape == images.shape and out.dtype == np.uint8, (name, out.shape, out.dtype)
    return out
