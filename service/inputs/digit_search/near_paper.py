"""The digit's ink checked against nearer estimates of the paper.

The paper's coarse estimate (service.inputs.digit_search.paper) smooths a shadow's edge over a few
pixels and fills in part of a shadow narrower than its window, so a band along the edge can pass
for faint ink and join the digit where they touch. Three nearer estimates take such bands away
again: the paper under everything narrower than a few strokes, on the same coarse grid (the ink is
found again against it); the paper at full resolution in a window a few strokes wide around the
digit; and the paper right beside the strokes flooded into them.
"""

from __future__ import annotations

import cv2
import numpy as np

from service.inputs.digit_search.ink import MIN_CONTRAST, found_ink, ink_level
from service.inputs.digit_search.paper import CLOSING, contrast_against, paper_under, smoothed
from service.inputs.digit_search.shapes import around, box, holes, stroke_width

STROKE_SCALE = 6.0  # the paper is estimated again under everything narrower than this many strokes...
SMALLEST_CLOSING = 0.08  # ... or this fraction of the image, whichever is wider...
FAINTEST_INK = 0.3  # ... where the ink stands out at least this much (fainter strokes would fade)...
KEPT_WITHIN = 0.5  # ... and the digit found again lies at least this share within the first
NEAR_PAPER_STROKES = 3.0  # the paper by the digit is estimated again in a window this many strokes wide...
NEAR_PAPER_BOX = 0.4  # ... or this fraction of the digit's longest side, whichever is wider...
NEAR_PAPER_SHARE = 0.5  # ... and ink keeps at least this share of its contrast against it
BESIDE_MARGIN = 2  # px: the paper right beside the digit starts past its strokes' soft edges...
BESIDE_STEPS = 8  # ... and reaches this far into it...
BESIDE_SHARE = 0.25  # ... and ink keeps at least this share of its contrast against it
SPECK_SHARE = 0.05  # what either leaves of the mask in pieces under this share of the largest one's area goes


def at_stroke_scale(
    contrast: np.ndarray, smooth: np.ndarray, mask: np.ndarray, work: np.ndarray, light_ink: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ink (its contrast, smoothed contrast and the digit's mask) found again against the paper
    under everything narrower than a few strokes, not a fifth of the image.

    The wide closing fills in part of a shadow narrower than itself, so the shadow stands out as
    faint ink, and its tip may outweigh faint writing when the digit is chosen. A closing
    STROKE_SCALE strokes wide still fills in every stroke and leaves such a shadow as paper. Not
    for faint ink: on the coarse grid such a closing takes in part of the strokes around it, and
    the paper it finds under a faint stroke is dark enough to lose it. And the digit found again
    must lie mostly within the first: a ruled line or a speck that now stands out more is not it."""
    closing = max(STROKE_SCALE * stroke_width(mask[box(mask)]) / max(work.shape), SMALLEST_CLOSING)
    if closing >= CLOSING or ink_level(contrast, mask) < FAINTEST_INK:
        return contrast, smooth, mask
    again = found_ink(work, light_ink, closing)
    if again.mask is None or (again.mask & mask).sum() < KEPT_WITHIN * again.mask.sum():
        return contrast, smooth, mask
    return again.contrast, again.smooth, again.mask


def without_paper_edges(
    mask: np.ndarray, work: np.ndarray, smooth: np.ndarray, light_ink: bool, stroke_width: float
) -> np.ndarray:
    """The digit's mask less what stood out only against the coarse estimate of the paper.

    That estimate smooths a shadow's edge over a few pixels, and a narrow shadow may be filled in
    altogether, so a band along the edge passes for faint ink and joins the digit where they touch.
    Against the paper estimated again at full resolution, in a window a few strokes wide, the band
    is paper while the strokes keep their contrast. What is left of the band in specks goes too."""
    rows, cols = box(mask)
    longest = max(rows.stop - rows.start, cols.stop - cols.start)
    window = min(max(NEAR_PAPER_STROKES * stroke_width, NEAR_PAPER_BOX * longest), max(mask.shape))
    kernel = max(3, round(window) | 1)  # a mask without paper in its box has no finite stroke width
    region = around(mask, kernel)
    pixels = work[region]
    pad = kernel // 2 + 1
    extended = cv2.copyMakeBorder(pixels, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    element = cv2.getStructuringElement(cv2.MORPH_RECT, (kernel, kernel))  # separable: fast when wide
    near = contrast_against(pixels, paper_under(extended, light_ink, element)[pad:-pad, pad:-pad], light_ink)
    kept = mask[region] & (smoothed(near) >= NEAR_PAPER_SHARE * smooth[region])
    return _keeping(mask, kept, region)


def without_shadow_bands(
    mask: np.ndarray, work: np.ndarray, contrast: np.ndarray, smooth: np.ndarray, light_ink: bool
) -> np.ndarray:
    """The digit's mask less what is no darker than the paper right beside it.

    Where a shadow's edge curves, or the light also falls off across the shadow, its darkest part is
    a band narrower than any window that fits the digit, so both paper estimates fill it in and it
    passes for ink. Ink is darker than the paper on every side it touches; such a band is no darker
    than the shadow it belongs to. The paper beside the digit is what lies past its strokes' soft
    edges and outside its loops and does not stand out itself (lines and specks do); it is flooded
    into the digit, each pixel taking the darkest paper it reaches within BESIDE_STEPS px without
    crossing anything brighter (a morphological reconstruction, cut short so that the paper across a
    stroke counts, not a shadow further along it)."""
    region = around(mask, BESIDE_MARGIN + BESIDE_STEPS)
    inside = mask[region]
    pixels = np.clip(work[region], 0, 255).astype(np.uint8)
    darkness = 255 - pixels if light_ink else pixels
    margin = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * BESIDE_MARGIN + 1,) * 2)
    grown = cv2.dilate(inside.astype(np.uint8), margin).astype(bool)
    labels, loops = holes(grown)
    flooded = grown | np.isin(labels, loops) | (contrast[region] >= MIN_CONTRAST)
    beside = np.where(flooded, np.uint8(255), darkness)
    step = np.ones((3, 3), np.uint8)
    for _ in range(BESIDE_STEPS):  # on the paper itself, the max with its own darkness keeps it as it is
        beside = cv2.max(cv2.erode(beside, step), darkness)
    paper = (255 - beside if light_ink else beside).astype(np.float32)
    against_beside = smoothed(contrast_against(pixels.astype(np.float32), paper, light_ink))
    return _keeping(mask, inside & (against_beside >= BESIDE_SHARE * smooth[region]), region)


def _keeping(mask: np.ndarray, kept: np.ndarray, region: tuple[slice, slice]) -> np.ndarray:
    """``mask`` with only ``kept`` of it in ``region`` (the whole digit lies in it), less the specks
    that taking the rest away left. As found when nothing was taken away (most photos), or
    everything: no band to tell from the digit."""
    if np.array_equal(kept, mask[region]) or not kept.any():
        return mask
    _, labels, stats, _ = cv2.connectedComponentsWithStats(kept.astype(np.uint8), connectivity=8)
    area = stats[1:, cv2.CC_STAT_AREA]
    big = np.concatenate(([False], area >= SPECK_SHARE * area.max()))
    cleaned = np.zeros_like(mask)
    cleaned[region] = big[labels]
    return cleaned
