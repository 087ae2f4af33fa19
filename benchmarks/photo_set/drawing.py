"""The ink on the page before it is photographed: a digit (or a letter, a scribble) enlarged, redrawn
with a pen of some width, turned, perhaps seen at an angle, placed anywhere on a page of some size."""

from __future__ import annotations

import cv2
import numpy as np

from benchmarks.photo_set.conditions import Conditions

LETTERS = "ABCDEFHKMNPRUVWXYZabdefhkmnrtwxy#&?%@*+="
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)


def page_size(rng: np.random.Generator) -> tuple[int, int]:
    """200 to 1,200 px each way, at most 2:1."""
    width, height = (int(v) for v in rng.integers(200, 1201, size=2))
    return min(width, 2 * height), min(height, 2 * width)


def letter(rng: np.random.Generator) -> np.ndarray:
    """A letter or sign, white on black in 28x28 like an MNIST digit."""
    canvas = np.zeros((112, 112), np.uint8)
    font = int(rng.choice(FONTS))
    text = str(rng.choice(list(LETTERS)))
    (w, h), _ = cv2.getTextSize(text, font, 3.0, 8)
    cv2.putText(canvas, text, ((112 - w) // 2, (112 + h) // 2), font, 3.0, 255, 8, cv2.LINE_AA)
    return cv2.resize(canvas, (28, 28), interpolation=cv2.INTER_AREA)


def scribble(rng: np.random.Generator) -> np.ndarray:
    """A few random strokes, white on black in 28x28."""
    canvas = np.zeros((112, 112), np.uint8)
    points = rng.integers(10, 102, size=(int(rng.integers(3, 9)), 2)).astype(np.int32)
    cv2.polylines(canvas, [points], bool(rng.random() < 0.5), 255, 9, cv2.LINE_AA)
    return cv2.resize(canvas, (28, 28), interpolation=cv2.INTER_AREA)


def draw(
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
    # level thickens them), or a thinner pen along the strokes' middle; or no pen of ours at all.
    if conditions.mnist_strokes:
        big = np.clip(big, 0, 1)
    elif rng.random() < conditions.thin_pen:
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
