"""Bold digits: the middles of strokes wider than the paper's closing, given back to the digit.

The paper's estimate (service.inputs.digit_search.paper) fills in everything dark narrower than its
closing, so a stroke wider than that (a thick marker, a blob where strokes meet, a bold digit filling
the image) stands out only along its rim: its middle is taken for paper, a hole in the mask.
"""

from __future__ import annotations

import cv2
import numpy as np

from service.inputs.digit_search.ink import ink_level
from service.inputs.digit_search.paper import CLOSING, ink_contrast
from service.inputs.digit_search.shapes import box, holes

WIDE_STROKE = 0.3  # strokes this wide against CLOSING's width may have lost their middles...
WIDE_CLOSING = 0.5  # ... which are found again against a closing this wide...
WIDE_INK = 0.8  # ... where they are nearly as dark as the rest of the digit
HOLE_INK = 0.3  # a hole is ink only where it stands out against its paper this much of the ink's level


def fill_wide_strokes(
    mask: np.ndarray, contrast: np.ndarray, work: np.ndarray, light_ink: bool, stroke_width: float
) -> None:
    """Where the strokes are wide against the closing, give back, in place, their middles: what is
    as dark as the digit's ink against a closing WIDE_CLOSING wide, joined to the digit, within its
    box. A shadow, much lighter than ink, stays out."""
    if stroke_width < WIDE_STROKE * CLOSING * max(work.shape):
        return
    wide = ink_contrast(work, light_ink, WIDE_CLOSING)
    level = ink_level(contrast, mask)
    digit = box(mask)
    inky = ((wide[digit] >= WIDE_INK * level) & ~mask[digit]).astype(np.uint8)
    if not inky.any():
        return
    _, labels = cv2.connectedComponents(inky | mask[digit].astype(np.uint8), connectivity=8)
    joined = np.isin(labels, np.unique(labels[mask[digit]]))
    added = joined & ~mask[digit]
    mask[digit] |= added
    contrast[digit][added] = wide[digit][added]


def fill_ink_holes(mask: np.ndarray, contrast: np.ndarray, work: np.ndarray, light_ink: bool) -> None:
    """Fill, in place, the holes in the digit that are as dark as its ink. A loop's inside is paper,
    even where a shadow darkens it nearly as much (it stands out little against the paper's
    estimate)."""
    darkness = 255 - work if light_ink else work
    digit = box(mask)
    labels, enclosed = holes(mask[digit])
    if not len(enclosed):
        return
    ink = float(np.median(darkness[digit][mask[digit]]))
    around = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~mask
    paper = float(np.median(darkness[around]))
    level = ink_level(contrast, mask)
    for i in enclosed:
        hole = labels == i
        if float(np.median(contrast[digit][hole])) < HOLE_INK * level:
            continue  # paper: darkened, perhaps, by a shadow falling on it
        dark = float(np.median(darkness[digit][hole]))
        if abs(dark - ink) < abs(dark - paper):
            mask[digit][hole] = True
            contrast[digit][hole] = np.maximum(contrast[digit][hole], level)
