"""MNIST *test* digits rendered as photos and scans of handwriting, reproducibly from a seed.

Each digit is drawn large with a pen of some width and colour onto paper, placed off-centre and
slightly rotated, then damaged the way phones and scanners damage pages. A sample takes each kind of
damage with its own probability and records the kinds it took, so accuracy can be broken down by
kind. The ranges are wider than users produce (a 40 px digit in a 1,200 px photo, shadows that halve
the light, JPEG quality 30), so that a preprocessing tuned on this set is not merely tuned to it.

Only the 10,000 test digits are used: the model never saw them, nor anything drawn from them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

# Every kind a sample can record, in the order the per-kind tables list them.
KINDS = (
    "photo",  # lit unevenly by the room, saved by a phone
    "scan",  # flat lighting, high contrast
    "gradient",  # lighting falls off across the page (a ramp or a vignette)
    "shadow",  # a soft-edged shadow (hand, phone) darkens part of the page
    "edge",  # the page ends and a dark table shows along one side
    "noise",  # strong sensor noise
    "blur",  # out of focus or shaken
    "tint",  # coloured paper, light or ink
    "perspective",  # the page photographed at an angle
    "rotated",  # the digit written more than 10 degrees off upright
    "small",  # the digit under a quarter of the image's shorter side
    "thin_pen",  # strokes thinner than MNIST's
    "thick_marker",  # strokes thicker than MNIST's
    "low_contrast",  # pencil, or a faded print
    "ruled",  # ruled or squared notebook paper
    "specks",  # dust, dots and crumbs
    "binary",  # a 1-bit scan
    "light_on_dark",  # chalk on a board, a negative
    "jpeg",
    "png",
)


@dataclass(frozen=True)
class Conditions:
    """How often each kind of damage happens (a chance per sample) and how far the drawing may go.

    Both sets reach further than users do; ``HARSH`` adds what some users produce on a bad day
    (notebook lines, dust, the table showing, faded pencil, 1-bit scans, tiny and strongly turned
    digits, pages at an angle)."""

    name: str
    smallest: float  # the digit's height, as a fraction of the page's shorter side, from this to 0.8
    turn_sd: float  # degrees, normal...
    max_turn: float  # ... clipped at this
    thin_pen: float
    thick_marker: float
    perspective: float
    light_on_dark: float
    low_contrast: float
    ruled: float
    specks: float
    gradient: float
    shadow: float
    edge: float
    binary: float  # of scans


# Photos and scans as people take them, wider than they take them: the light falling off to a third
# across the page, shadows taking 60 % of it, noise up to sd 22, JPEG quality 30, blur up to 1.2 %
# of the page, any paper and pen colour, pens from a fine liner to a marker, digits from a quarter of
# the page, turned up to 15 degrees.
EVERYDAY = Conditions(
    "everyday", smallest=0.25, turn_sd=5.0, max_turn=15.0, thin_pen=0.3, thick_marker=0.1, perspective=0.0,
    light_on_dark=0.08, low_contrast=0.0, ruled=0.0, specks=0.0, gradient=0.6, shadow=0.3, edge=0.0,
    binary=0.0,
)  # fmt: skip
HARSH = Conditions(
    "harsh", smallest=0.15, turn_sd=7.0, max_turn=22.0, thin_pen=0.3, thick_marker=0.1, perspective=0.3,
    light_on_dark=0.08, low_contrast=0.1, ruled=0.25, specks=0.3, gradient=0.6, shadow=0.3, edge=0.15,
    binary=0.25,
)  # fmt: skip
CONDITIONS = {c.name: c for c in (EVERYDAY, HARSH)}


@dataclass(frozen=True)
class Photo:
    """One rendered sample: the file's bytes and what it shows."""

    index: int  # its MNIST test index
    label: int
    data: bytes
    extension: str  # "jpg" or "png"
    kinds: tuple[str, ...]
    width: int
    height: int

    @property
    def name(self) -> str:
        return f"{self.index:05d}.{self.extension}"


def photo_set(
    images: np.ndarray,
    labels: np.ndarray,
    count: int,
    seed: int,
    conditions: Conditions = HARSH,
    damaged: bool = True,
) -> list[Photo]:
    """``count`` distinct test digits chosen by ``seed``, each rendered from its own seeded stream
    (so a sample does not change with ``count``); ``damaged`` as in render."""
    chosen = np.random.default_rng(seed).choice(len(images), size=count, replace=False)
    return [render(images[i], int(labels[i]), int(i), seed, conditions, damaged) for i in chosen]


def render(
    digit: np.ndarray,
    label: int,
    index: int,
    seed: int,
    conditions: Conditions = HARSH,
    damaged: bool = True,
) -> Photo:
    """Render one MNIST digit (uint8 28x28, white on black) as a photo or scan; with ``damaged``
    False, the same drawing (pen, size, place, angle) in black on white paper and nothing else, to
    tell what the damage costs from what the drawing does."""
    rng = np.random.default_rng([seed, index])
    kinds: set[str] = set()
    scan = rng.random() < 0.3
    kinds.add("scan" if scan else "photo")
    width, height = _page_size(rng)
    ink = _ink(digit, rng, width, height, kinds, conditions, scan)
    if damaged:
        data, extension = _photograph(ink, rng, kinds, conditions, scan)
    else:
        buffer = io.BytesIO()
        Image.fromarray(np.rint(255 * (1 - ink)).astype(np.uint8)).save(buffer, format="PNG")
        data, extension = buffer.getvalue(), "png"
    ordered = tuple(kind for kind in KINDS if kind in kinds)
    return Photo(index, label, data, extension, ordered, width, height)


NON_DIGITS = ("blank", "letter", "scribble")
LETTERS = "ABCDEFHKMNPRUVWXYZabdefhkmnrtwxy#&?%@*+="
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)


def non_digit_set(count: int, seed: int, conditions: Conditions = HARSH) -> list[Photo]:
    """``count`` photos and scans of what is not a digit (blank pages, letters and signs, scribbles),
    with the same damage as the digits; label -1, their kind first among their kinds."""
    photos = []
    for index in range(count):
        rng = np.random.default_rng([seed, 1_000_000 + index])
        what = NON_DIGITS[index % len(NON_DIGITS)]
        kinds: set[str] = set()
        scan = rng.random() < 0.3
        kinds.add("scan" if scan else "photo")
        width, height = _page_size(rng)
        if what == "blank":
            ink = np.zeros((height, width), np.float32)
        else:
            shape = _letter(rng) if what == "letter" else _scribble(rng)
            ink = _ink(shape, rng, width, height, kinds, conditions, scan)
        data, extension = _photograph(ink, rng, kinds, conditions, scan)
        ordered = (what, *(kind for kind in KINDS if kind in kinds))
        photos.append(Photo(index, -1, data, extension, ordered, width, height))
    return photos


def _letter(rng: np.random.Generator) -> np.ndarray:
    """A letter or sign, white on black in 28x28 like an MNIST digit."""
    canvas = np.zeros((112, 112), np.uint8)
    font = int(rng.choice(FONTS))
    text = str(rng.choice(list(LETTERS)))
    (w, h), _ = cv2.getTextSize(text, font, 3.0, 8)
    cv2.putText(canvas, text, ((112 - w) // 2, (112 + h) // 2), font, 3.0, 255, 8, cv2.LINE_AA)
    return cv2.resize(canvas, (28, 28), interpolation=cv2.INTER_AREA)


def _scribble(rng: np.random.Generator) -> np.ndarray:
    """A few random strokes, white on black in 28x28."""
    canvas = np.zeros((112, 112), np.uint8)
    points = rng.integers(10, 102, size=(int(rng.integers(3, 9)), 2)).astype(np.int32)
    cv2.polylines(canvas, [points], bool(rng.random() < 0.5), 255, 9, cv2.LINE_AA)
    return cv2.resize(canvas, (28, 28), interpolation=cv2.INTER_AREA)


def _page_size(rng: np.random.Generator) -> tuple[int, int]:
    """200 to 1,200 px each way, at most 2:1."""
    width, height = (int(v) for v in rng.integers(200, 1201, size=2))
    return min(width, 2 * height), min(height, 2 * width)


def _photograph(
    ink: np.ndarray, rng: np.random.Generator, kinds: set[str], conditions: Conditions, scan: bool
) -> tuple[bytes, str]:
    """Paper, ruling, the pen's ink, specks, light, optics, file: the encoded file and its extension."""
    height, width = ink.shape
    light_on_dark = rng.random() < conditions.light_on_dark
    paper, pen = _colours(rng, kinds, conditions, light_on_dark, scan)
    page = np.empty((height, width, 3), np.float32)
    page[:] = paper
    if rng.random() < conditions.ruled:
        _rule(page, rng, kinds, paper, light_on_dark)
    alpha = ink[..., None]
    page = page * (1 - alpha) + np.asarray(pen, np.float32) * alpha
    if rng.random() < conditions.specks:
        _specks(page, rng, kinds, pen, min(width, height))
    if not scan:
        _light(page, rng, kinds, conditions)
    _optics(page, rng, kinds, scan, min(width, height))
    return _encode(page, rng, kinds, conditions, scan)


def _ink(
    digit: np.ndarray,
    rng: np.random.Generator,
    width: int,
    height: int,
    kinds: set[str],
    conditions: Conditions,
    scan: bool,
) -> np.ndarray:
    """The pen's coverage, float32 [height, width] in [0, 1]: the digit enlarged, redrawn with a pen
    of some width, rotated, perhaps seen at an angle, placed anywhere it fits."""
    rows = np.flatnonzero(digit.max(1) > 0)
    cols = np.flatnonzero(digit.max(0) > 0)
    crop = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32) / 255
    shorter = min(width, height)
    fraction = float(rng.uniform(conditions.smallest, 0.8))
    if fraction < 0.25:
        kinds.add("small")
    digit_height = max(40.0, fraction * shorter)
    scale = digit_height / crop.shape[0]
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    pad = round(0.3 * digit_height)  # room for thick strokes and for turning
    big = cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC)
    big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    big = cv2.GaussianBlur(big, (0, 0), 0.6 * scale)  # round off the enlarged 28x28 grid
    # The pen: where the smooth digit passes a level (MNIST's own strokes sit near 0.35; a lower
    # level thickens them), or a thinner pen along the strokes' middle.
    if rng.random() < conditions.thin_pen:
        kinds.add("thin_pen")
        half_width = float(rng.uniform(0.3, 0.9)) * scale  # MNIST's strokes: about 1.3 * scale
        big = _thin_pen(crop, big.shape, scale, pad, max(1.0, half_width))
    else:
        big = np.clip((big - float(rng.uniform(0.2, 0.5))) / 0.08 + 0.5, 0, 1)
    if rng.random() < conditions.thick_marker:
        kinds.add("thick_marker")
        radius = max(1, round(float(rng.uniform(0.3, 0.8)) * scale))
        big = cv2.dilate(big, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2))

    angle = float(np.clip(rng.normal(0, conditions.turn_sd), -conditions.max_turn, conditions.max_turn))
    if abs(angle) > 10:
        kinds.add("rotated")
    h, w = big.shape
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    turned = cv2.transform(corners[None], turn)[0]
    if not scan and rng.random() < conditions.perspective:
        kinds.add("perspective")
        turned = turned + rng.uniform(-0.12, 0.12, size=(4, 2)).astype(np.float32) * max(w, h)
    # Shrink the whole drawing if it does not fit the page, then place it anywhere it fits.
    span = turned.max(0) - turned.min(0)
    fit = min(1.0, 0.95 * width / span[0], 0.95 * height / span[1])
    turned = (turned - turned.min(0)) * fit
    span = span * fit
    offset = np.array([rng.uniform(0, width - span[0]), rng.uniform(0, height - span[1])], dtype=np.float32)
    warp = cv2.getPerspectiveTransform(corners, (turned + offset).astype(np.float32))
    return cv2.warpPerspective(big, warp, (width, height), flags=cv2.INTER_LINEAR)


def _thin_pen(
    crop: np.ndarray, shape: tuple[int, int], scale: float, pad: int, half_width: float
) -> np.ndarray:
    """The digit redrawn along the middle of its strokes with a pen ``half_width`` px either side:
    the strokes' skeleton, found at 4x MNIST's size, drawn at full size, inked to a distance."""
    fine = cv2.resize(crop, (crop.shape[1] * 4, crop.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    skeleton = _skeleton(fine > 0.35)
    ys, xs = np.nonzero(skeleton)
    canvas = np.full(shape, 255, np.uint8)

    def place(v: np.ndarray) -> np.ndarray:  # a 4x pixel's centre, in the enlarged image
        return np.rint(((v + 0.5) / 4) * scale - 0.5 + pad).astype(int)

    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):  # each pair of touching skeleton pixels once
        y2, x2 = ys + dy, xs + dx
        inside = (y2 < skeleton.shape[0]) & (x2 >= 0) & (x2 < skeleton.shape[1])
        joined = inside.copy()
        joined[inside] = skeleton[y2[inside], x2[inside]]
        for a, b, c, d in zip(
            place(xs[joined]), place(ys[joined]), place(x2[joined]), place(y2[joined]), strict=True
        ):
            cv2.line(canvas, (int(a), int(b)), (int(c), int(d)), 0, 1)
    for a, b in zip(place(xs), place(ys), strict=True):  # lone points too
        canvas[min(max(b, 0), shape[0] - 1), min(max(a, 0), shape[1] - 1)] = 0
    distance = cv2.distanceTransform(canvas, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.clip(half_width - distance + 0.5, 0, 1).astype(np.float32)


def _skeleton(shape: np.ndarray) -> np.ndarray:
    """Zhang and Suen's thinning of a bool image to 1 px wide, connected lines."""
    image = np.pad(shape, 1).astype(np.uint8)
    while True:
        changed = False
        for step in (0, 1):
            centre = image[1:-1, 1:-1]
            p2, p3, p4 = image[:-2, 1:-1], image[:-2, 2:], image[1:-1, 2:]
            p5, p6, p7 = image[2:, 2:], image[2:, 1:-1], image[2:, :-2]
            p8, p9 = image[1:-1, :-2], image[:-2, :-2]
            ring = [p2, p3, p4, p5, p6, p7, p8, p9, p2]
            neighbours = sum(v.astype(int) for v in ring[:8])
            rises = sum(((ring[k] == 0) & (ring[k + 1] == 1)).astype(int) for k in range(8))
            if step == 0:
                sides = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                sides = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            remove = (centre == 1) & (neighbours >= 2) & (neighbours <= 6) & (rises == 1) & sides
            if remove.any():
                centre[remove] = 0
                changed = True
        if not changed:
            return image[1:-1, 1:-1].astype(bool)


PENS = {  # RGB: what ballpoints, fineliners and pencils leave on paper
    "black": (25, 25, 30),
    "blue": (35, 45, 140),
    "dark blue": (20, 30, 90),
    "red": (160, 25, 30),
    "green": (20, 100, 50),
}


def _colours(
    rng: np.random.Generator, kinds: set[str], conditions: Conditions, light_on_dark: bool, scan: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Paper and pen colours (RGB floats); the pen may be any colour dark enough to read."""
    tinted = not scan and rng.random() < 0.4
    if light_on_dark:
        kinds.add("light_on_dark")
        board = float(rng.uniform(5, 90))
        chalk = float(rng.uniform(max(board + 70, 160), 255))
        paper, pen = np.full(3, board), np.full(3, chalk)
        if tinted:
            paper = paper * rng.uniform(0.6, 1.3, size=3)  # green and blue boards
    else:
        paper = np.full(3, float(rng.uniform(175, 250)))
        pen = np.asarray(PENS[str(rng.choice(list(PENS)))], float) if tinted else np.full(3, 25.0)
        pen = pen + float(rng.uniform(0, 60))  # lighter pens, grey prints
        if tinted:
            paper = paper * rng.uniform(0.82, 1.0, size=3)  # cream, blue-grey, pink paper
    if rng.random() < conditions.low_contrast:
        kinds.add("low_contrast")
        pen = paper + (pen - paper) * float(rng.uniform(0.3, 0.5))
    if tinted:
        kinds.add("tint")
    return np.clip(paper, 0, 255).astype(np.float32), np.clip(pen, 0, 255).astype(np.float32)


def _rule(
    page: np.ndarray, rng: np.random.Generator, kinds: set[str], paper: np.ndarray, light_on_dark: bool
) -> None:
    """Ruled or squared notebook lines under the ink, perhaps with a margin line."""
    kinds.add("ruled")
    height, width = page.shape[:2]
    spacing = float(rng.uniform(0.05, 0.15)) * min(width, height)
    thickness = int(rng.integers(1, 5))
    colour = (
        paper + np.array([70, 70, 70]) if light_on_dark else paper * np.array([0.6, 0.72, 0.95])
    )  # light blue lines on paper, lighter lines on a board
    mask = np.zeros((height, width), np.uint8)
    tilt = float(rng.uniform(-0.03, 0.03)) * width
    start = float(rng.uniform(0, spacing))
    for y in np.arange(start, height + abs(tilt), spacing):
        cv2.line(mask, (0, round(y)), (width, round(y + tilt)), 255, thickness)
    if rng.random() < 0.3:  # squared paper
        for x in np.arange(float(rng.uniform(0, spacing)), width, spacing):
            cv2.line(mask, (round(x), 0), (round(x - tilt), height), 255, thickness)
    alpha = mask.astype(np.float32)[..., None] / 255 * float(rng.uniform(0.5, 1.0))
    page[:] = page * (1 - alpha) + np.clip(colour, 0, 255).astype(np.float32) * alpha
    if rng.random() < 0.3:  # the red margin line
        x = round(float(rng.uniform(0.05, 0.3)) * width)
        cv2.line(page, (x, 0), (x, height), (200.0, 80.0, 80.0), thickness + 1)


def _specks(page: np.ndarray, rng: np.random.Generator, kinds: set[str], pen: np.ndarray, side: int) -> None:
    """Dust, dots and crumbs in the pen's colour, anywhere on the page."""
    kinds.add("specks")
    height, width = page.shape[:2]
    colour = tuple(float(v) for v in pen)
    for _ in range(int(rng.integers(3, 40))):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = max(1, round(float(rng.uniform(0.002, 0.015)) * side))
        cv2.circle(page, centre, radius, colour, -1, lineType=cv2.LINE_AA)


def _light(page: np.ndarray, rng: np.random.Generator, kinds: set[str], conditions: Conditions) -> None:
    """Uneven light: a ramp or vignette, a soft shadow, the dark table beyond the page's edge."""
    height, width = page.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys /= height
    xs /= width
    light = np.ones((height, width), np.float32)
    if rng.random() < conditions.gradient:
        kinds.add("gradient")
        depth = float(rng.uniform(0.2, 0.65))
        if rng.random() < 0.7:  # a ramp in any direction
            angle = float(rng.uniform(0, 2 * np.pi))
            ramp = np.cos(angle) * xs + np.sin(angle) * ys
            ramp = (ramp - ramp.min()) / max(1e-6, float(ramp.max() - ramp.min()))
            light *= 1 - depth * ramp
        else:  # a vignette around an off-centre spot
            cx, cy = rng.uniform(0.2, 0.8, size=2)
            light *= 1 - depth * np.clip(((xs - cx) ** 2 + (ys - cy) ** 2) / 0.5, 0, 1)
    if rng.random() < conditions.shadow:
        kinds.add("shadow")
        light *= 1 - float(rng.uniform(0.3, 0.6)) * _shadow_mask(rng, xs, ys, min(width, height))
    if rng.random() < conditions.edge:
        kinds.add("edge")
        beyond = _edge_mask(rng, xs, ys)
        table = np.asarray(rng.uniform(10, 90, size=3), np.float32)
        page[:] = page * (1 - beyond[..., None]) + table * beyond[..., None]
    page *= light[..., None]


def _shadow_mask(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, side: int) -> np.ndarray:
    """1 in the shadow, 0 in the light, a soft edge between: a hand's or phone's shadow seen as a
    half-plane or an ellipse entering from outside."""
    if rng.random() < 0.5:
        angle = float(rng.uniform(0, 2 * np.pi))
        distance = np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5) - float(rng.uniform(-0.3, 0.3))
    else:
        cx, cy = rng.uniform(-0.2, 1.2, size=2)
        rx, ry = rng.uniform(0.2, 0.6, size=2)
        distance = 1 - np.sqrt(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)
    softness = float(rng.uniform(0.005, 0.08))
    return np.asarray(np.clip(distance / softness + 0.5, 0, 1), np.float32)


def _edge_mask(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """1 beyond the page's edge, slightly skewed, along one side, 3 to 15 % deep."""
    side = int(rng.integers(0, 4))
    along, across = (ys, xs) if side in (0, 1) else (xs, ys)
    if side in (1, 3):
        across = 1 - across
    depth = float(rng.uniform(0.03, 0.15)) + float(rng.uniform(-0.03, 0.03)) * (along - 0.5)
    return np.asarray(np.clip((depth - across) * 200, 0, 1), np.float32)


def _optics(page: np.ndarray, rng: np.random.Generator, kinds: set[str], scan: bool, side: int) -> None:
    """Lens blur (always a little, sometimes a lot) and sensor noise (always some)."""
    sigma = 0.5 + (float(rng.uniform(0.003, 0.012)) * side if not scan and rng.random() < 0.4 else 0.0)
    if sigma > 0.5:
        kinds.add("blur")
    cv2.GaussianBlur(page, (0, 0), sigma, dst=page)
    strong = not scan and rng.random() < 0.5
    if strong:
        kinds.add("noise")
    noise_sigma = float(rng.uniform(6, 22) if strong else rng.uniform(0.5, 3))
    page += rng.standard_normal(page.shape, dtype=np.float32) * np.float32(noise_sigma)
    np.clip(page, 0, 255, out=page)


def _encode(
    page: np.ndarray, rng: np.random.Generator, kinds: set[str], conditions: Conditions, scan: bool
) -> tuple[bytes, str]:
    """JPEG (quality 30-95) for most photos, PNG for most scans; some scans are 1-bit."""
    pixels = np.rint(page).astype(np.uint8)
    buffer = io.BytesIO()
    if scan and rng.random() < conditions.binary:
        kinds.update(("binary", "png"))
        gray = np.asarray(Image.fromarray(pixels).convert("L"))
        _, binary = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)  # the scanner's own
        Image.fromarray(binary).convert("1").save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue(), "png"
    image = Image.fromarray(pixels)
    if scan:
        image = image.convert("L")
    if rng.random() < (0.3 if scan else 0.7):
        kinds.add("jpeg")
        image.save(buffer, format="JPEG", quality=int(rng.integers(30, 96)))
        return buffer.getvalue(), "jpg"
    kinds.add("png")
    image.save(buffer, format="PNG", compress_level=1)  # level 6 took most of the rendering time
    return buffer.getvalue(), "png"
