"""The paper under the writing, and how far each pixel stands out from it towards the ink.

The paper's brightness is estimated locally (a morphological closing on a coarse grid), so lighting
gradients, shadows and the table beyond the page's edge are not taken for ink; each pixel's contrast
is taken as a fraction of its paper's brightness, which the light falling on both cancels out of.
Light writing on a dark board is handled the same way, the other way up.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

# Sizes are fractions of the working image's longest side unless named otherwise, so that a 200 px
# photo and a 1,000 px one are treated alike.
WORKING_SIDE = 256  # the digit search runs at most at this size: a 20 px digit needs no more
SMALLEST_SIDE = 112  # and at least at this one
COARSE_SIDE = 64  # the paper's brightness is estimated on this coarse grid
POLARITY_SIDE = 160  # and whether the ink is dark or light on this one...
LIGHT_INK_ODDS = 2.0  # ... light when the evidence for it outweighs that for dark this much (the usual)
CLOSING = 0.2  # dark things narrower than this are not paper: strokes, lines, specks
LIGHT_INK_SPAN = 64.0  # light ink's contrast is taken against at least its board's level + this


def working_copy(gray: np.ndarray) -> np.ndarray:
    """float32, longest side at most WORKING_SIDE (box average, in the decoded type: 8-bit is faster)
    and at least SMALLEST_SIDE (smoothly enlarged: the search's few-pixel steps suit no smaller)."""
    height, width = gray.shape
    factor = max(height, width) / WORKING_SIDE
    if factor <= 1:
        factor = min(1.0, max(height, width) / SMALLEST_SIDE)
    if factor != 1:
        size = (max(1, round(width / factor)), max(1, round(height / factor)))
        source = gray if gray.dtype in (np.uint8, np.float32) else gray.astype(np.float32)
        gray = cv2.resize(source, size, interpolation=cv2.INTER_AREA if factor > 1 else cv2.INTER_CUBIC)
    return np.clip(np.asarray(gray, np.float32), 0, 255)  # cubic enlarging overshoots at edges


def _coarse(work: np.ndarray, side: int = COARSE_SIDE) -> tuple[np.ndarray, float]:
    """The image on a coarser grid (box average) and the grid's size relative to the working image."""
    height, width = work.shape
    factor = max(1.0, max(height, width) / side)
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    return cv2.resize(work, size, interpolation=cv2.INTER_AREA), factor


class Polarity(NamedTuple):
    light_ink: bool  # the writing is lighter than its surroundings (chalk on a board, a negative)
    sure: bool  # the evidence for one way outweighs that for the other LIGHT_INK_ODDS times over


def ink_polarity(work: np.ndarray) -> Polarity:
    """Is the writing lighter than its surroundings, and how sure is that?

    Each pixel is compared with the median of its surroundings, as a ratio, so that lighting (which
    multiplies) and shadows cancel out: writing then reaches far to one side, noise a little to both.
    A bold digit filling its surroundings leaves little evidence either way: its loops stand out the
    other way as much as its strokes do.
    """
    coarse, _ = _coarse(work, POLARITY_SIDE)
    if min(coarse.shape) < 3:
        return Polarity(light_ink=False, sure=True)
    kernel = min(255, max(3, round(max(coarse.shape) * CLOSING) | 1))
    local = cv2.medianBlur(np.clip(coarse, 0, 255).astype(np.uint8), kernel).astype(np.float32)
    ratio = np.log((coarse + 8.0) / (local + 8.0))
    sample = ratio[::2, ::2]
    spread = 3 * 1.4826 * float(np.median(np.abs(sample - np.median(sample))))
    darker = float(np.square(np.clip(-ratio - spread, 0, None)).sum())
    lighter = float(np.square(np.clip(ratio - spread, 0, None)).sum())
    light_ink = lighter > LIGHT_INK_ODDS * darker
    return Polarity(light_ink, sure=light_ink or darker >= LIGHT_INK_ODDS * lighter)


def ink_contrast(work: np.ndarray, light_ink: bool, closing: float = CLOSING) -> np.ndarray:
    """How far each pixel stands out from its surroundings towards the ink, as a fraction of the
    brighter of the two: about 0 on paper (noise either side), near 1 for black ink on white paper
    or chalk on a black board, whatever the light falling on them (lighting multiplies both).
    Everything darker than the paper and narrower than ``closing`` (of the image) stands out."""
    coarse, factor = _coarse(work)
    kernel = max(3, round(max(coarse.shape) * closing) | 1)
    element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    # Beyond the border the light is taken to go on as it went (an odd reflection): replicated or
    # mirrored, light that falls off towards the border would leave a band of false ink along it.
    pad = kernel // 2 + 1
    extended = np.clip(np.pad(coarse, pad, mode="reflect", reflect_type="odd"), coarse.min(), coarse.max())
    surround = paper_under(extended, light_ink, element)[pad:-pad, pad:-pad]
    if factor > 1:
        surround = cv2.resize(surround, (work.shape[1], work.shape[0]), interpolation=cv2.INTER_LINEAR)
    return contrast_against(work, surround, light_ink)


def smoothed(contrast: np.ndarray) -> np.ndarray:
    """The contrast blurred a little (1 px), as ink is told from paper by it: a pixel of noise or
    a JPEG block's edge does not count, and every comparison of contrasts uses the same blur."""
    return cv2.GaussianBlur(contrast, (0, 0), 1.0)


def paper_under(image: np.ndarray, light_ink: bool, element: np.ndarray) -> np.ndarray:
    """The paper (or board) under everything narrower than ``element``. Closing (a max then a min
    filter) keeps the paper's own edges (shadows, the page's border) where they are and fills in
    every dark thing narrower than the kernel, the writing included; opening does the same for
    light writing on a dark board."""
    return cv2.morphologyEx(image, cv2.MORPH_OPEN if light_ink else cv2.MORPH_CLOSE, element)


def contrast_against(work: np.ndarray, surround: np.ndarray, light_ink: bool) -> np.ndarray:
    """ink_contrast once the paper's brightness (``surround``) is known."""
    if light_ink:
        # As a fraction of the chalk's own brightness nearby (the brightest pixel within a stroke's
        # width), as dark ink's is of its paper's: the light falling on a board scales both.
        chalk = cv2.dilate(work, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
        return np.clip((work - surround) / np.maximum(chalk, surround + LIGHT_INK_SPAN), -1, 1)
    return np.clip((surround - work) / np.maximum(surround, 8.0), -1, 1)
