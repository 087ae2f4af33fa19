"""Which pixels are the digit's ink.

Ink is what stands out above a threshold that adapts to the image (Otsu's, never within the noise),
and fainter ink next to it. Ruled lines are taken out first (ruled_lines); the digit is the
strongest structure left that does not span the image, with the pieces close to it, while specks
and the page's own structures (a shadow, the table beyond the page's edge) are dropped.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from service.inputs.digit_search.paper import CLOSING, ink_contrast, smoothed
from service.inputs.digit_search.ruled_lines import bridged, ruled_lines
from service.inputs.digit_search.shapes import distances

MIN_CONTRAST = 0.08  # ink is at least this much darker than its paper (fraction of the paper's level)
NOISE_MARGIN = 4.0  # and this many noise deviations above the paper
HYSTERESIS = 0.5  # fainter ink (down to this fraction of the threshold) counts where it joins ink...
GROWTH = 6  # px: ... up to this far from it
BORDER_PENALTY = 0.3  # what touches the image's border is less likely the digit
PAGE_PENALTY = 0.01  # and what touches two of its sides or spans it, much less
NEAR = 0.3  # pieces within this fraction of the digit's size belong to it
PIECE = 0.25  # ... if they are at least this fraction of its size (a dot is not)
SPANNING = 0.9  # what reaches this fraction across the image from a border is the page, not the digit
PEAK_PERCENTILE = 90  # of the digit's contrast: its ink's level, not counting the strokes' soft edges


class Ink(NamedTuple):
    contrast: np.ndarray  # paper.ink_contrast
    smooth: np.ndarray  # the same, smoothed
    mask: np.ndarray | None  # the digit's pixels, None where there is no ink


def found_ink(work: np.ndarray, light_ink: bool, closing: float = CLOSING) -> Ink:
    """The contrast against the paper under everything narrower than ``closing`` (of the image),
    and the digit's pixels in it."""
    contrast = ink_contrast(work, light_ink, closing)
    smooth = smoothed(contrast)
    return Ink(contrast, smooth, digit_mask(smooth))


def ink_level(contrast: np.ndarray, mask: np.ndarray) -> float:
    """How far the digit's ink stands out (``mask``: the digit's pixels): what the 28x28 frame
    scales to white, and what strokes given back to the digit take."""
    return float(np.percentile(contrast[mask], PEAK_PERCENTILE))


def digit_mask(smooth: np.ndarray) -> np.ndarray | None:
    """The digit's pixels, or None when there is no ink (``smooth``: the contrast, blurred a little).

    Ruled lines' own contrast is taken away first. Ink is then above a threshold that adapts to the
    image (Otsu's, between the paper and the writing, not counting the page's own structures; never
    within the noise), and fainter ink where it joins such ink. The digit is the strongest structure
    that does not span the image, with the pieces close to it.
    """
    floor = max(MIN_CONTRAST, NOISE_MARGIN * _noise(smooth))
    lines = ruled_lines(smooth > floor, smooth)
    digit = _strongest_structure(smooth, floor, lines)
    if digit is None and _lone_stroke(lines):
        digit = _strongest_structure(smooth, floor, (np.zeros_like(smooth), np.zeros_like(smooth)))
    return digit


def _lone_stroke(lines: tuple[np.ndarray, np.ndarray]) -> bool:
    """One "line" away from the borders it runs along, and nothing else: a "1" written with a fine
    pen and cropped tightly, not a blank ruled page (several lines) or the page's edge."""
    found = ((lines[0] > 0) | (lines[1] > 0)).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(found)
    if count != 2:
        return False
    left, top, w, h = stats[1, :4]
    height, width = found.shape
    if w >= h:
        return bool(top > 0 and top + h < height)
    return bool(left > 0 and left + w < width)


def _strongest_structure(
    smooth: np.ndarray, floor: float, lines: tuple[np.ndarray, np.ndarray]
) -> np.ndarray | None:
    """digit_mask once the lines are known."""
    cleaned = smooth - np.maximum(*lines)  # where a stroke crosses a lighter line, the stroke stays
    levels = np.clip(cleaned * 255, 0, 255).astype(np.uint8)
    high = max(_otsu(levels), floor)
    strong = bridged(cleaned > high, smooth > high, lines)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(strong, connectivity=8)
    page_like = _page_structures(stats[1:], smooth.shape)
    if page_like.any():  # Otsu's threshold again without them: they are often darker than the writing
        on_page_structure = np.concatenate(([False], page_like))[labels]  # by label; 0 is no ink
        high = max(_otsu(levels[~on_page_structure]), floor)
        strong = bridged(cleaned > high, smooth > high, lines)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(strong, connectivity=8)
        page_like = _page_structures(stats[1:], smooth.shape)
    if count <= 1:
        return None
    mass = np.bincount(labels.ravel(), weights=smooth.ravel(), minlength=count)[1:]
    at_border = _sides_touched(stats[1:], smooth.shape) > 0
    score = mass * np.where(page_like, PAGE_PENALTY, np.where(at_border, BORDER_PENALTY, 1.0))
    main = int(np.argmax(score))
    pieces = np.flatnonzero(~page_like)
    kept = np.zeros(count, dtype=np.uint8)  # by label: 1 for the digit's components
    kept[np.asarray(_pieces_near(labels, stats[1:], main, pieces[pieces != main])) + 1] = 1
    digit = kept[labels]
    # Fainter ink next to it belongs to it too (a stroke fading, or in a shadow), but only nearby:
    # a shadow's edge that touches the digit must not come along in full.
    low = max(HYSTERESIS * high, floor)
    weak = bridged(cleaned > low, smooth > low, lines)
    for _ in range(GROWTH):
        digit = cv2.dilate(digit, np.ones((3, 3), np.uint8)) & weak | digit
    return digit.astype(bool)


def _otsu(levels: np.ndarray) -> float:
    """Otsu's threshold between the paper and the writing, as a contrast (0 to 1)."""
    if not levels.size:
        return 1.0
    threshold, _ = cv2.threshold(levels.reshape(1, -1), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return float(threshold) / 255


def _noise(smooth: np.ndarray) -> float:
    """How far the paper's contrast strays from its typical value: a robust spread (median absolute
    deviation) over every other pixel of every other row, which the writing, a minority of the
    pixels, barely moves. Where ruled lines or shading cover much of the page it grows with them,
    and keeps their faint parts out of the ink."""
    sample = smooth[::2, ::2]
    return 1.4826 * float(np.median(np.abs(sample - np.median(sample))))


def _sides_touched(stats: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """How many of the image's four sides each component (a row of stats) touches."""
    height, width = shape
    left, top, w, h = (stats[:, i] for i in range(4))
    return (left == 0).astype(int) + (top == 0) + (left + w == width) + (top + h == height)


def _page_structures(stats: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Components that touch two of the image's sides, or span it from one: most likely the page
    (a shadow, the table beyond its edge), the digit only when nothing else comes close (a tight
    crop)."""
    height, width = shape
    sides = _sides_touched(stats, shape)
    spans = (stats[:, cv2.CC_STAT_WIDTH] >= SPANNING * width) | (
        stats[:, cv2.CC_STAT_HEIGHT] >= SPANNING * height
    )
    return np.asarray((sides >= 2) | (spans & (sides > 0)))


def _pieces_near(labels: np.ndarray, stats: np.ndarray, main: int, candidates: np.ndarray) -> list[int]:
    """``main`` and the components among ``candidates`` that are no more than NEAR of its size away from
    it (or from another such piece) and at least PIECE of its size: a digit broken by a thin or
    faint stroke, not the specks and dots around it. Labels are offset by one (0 is no ink)."""
    left, top, w, h = (stats[:, i] for i in range(4))
    right, bottom = left + w, top + h
    size = max(w[main], h[main])
    reach = NEAR * size
    others = [int(i) for i in candidates[np.maximum(w, h)[candidates] >= PIECE * size]]
    keep = [main]
    while others:
        x0, y0, x1, y1 = min(left[keep]), min(top[keep]), max(right[keep]), max(bottom[keep])
        close = [i for i in others if max(x0 - right[i], left[i] - x1, y0 - bottom[i], top[i] - y1) <= reach]
        if not close:
            break
        distance = distances((~np.isin(labels, np.asarray(keep) + 1)).astype(np.uint8), 3)
        added = []
        for i in close:
            window = (slice(top[i], bottom[i]), slice(left[i], right[i]))
            if float(distance[window][labels[window] == i + 1].min()) <= reach:
                added.append(i)
        if not added:
            break
        keep += added
        others = [i for i in others if i not in added]
    return keep
