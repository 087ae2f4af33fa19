"""The recipe MNIST was made with, applied to the digit found in a photo: crop, longest side to
20 px, centre of mass in a 28x28 frame, white on black."""

from __future__ import annotations

import cv2
import numpy as np

from service.inputs.digit_search.ink import ink_level
from service.inputs.digit_search.shapes import stroke_width

SIDE = 28
DIGIT_BOX = 20
EDGE = 0.2  # of the ink's level: the faintest edge of a stroke that still counts in the digit's box
STROKE_WIDTH = 2.5  # MNIST pixels: thinner strokes are thickened to this (MNIST's are 1.5 to 3)


def mnist_frame(contrast: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The MNIST recipe on the digit's ink: crop, longest side to 20 px, centre of mass in 28x28;
    strokes thinner than MNIST's (a fine pen on a large digit) are thickened to STROKE_WIDTH first."""
    peak = ink_level(contrast, mask)
    # The strokes' soft edges belong to the digit and to its box, as in MNIST's anti-aliased digits.
    fringe = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    inked = fringe & (contrast > EDGE * peak)
    rows = np.flatnonzero(inked.any(axis=1))
    cols = np.flatnonzero(inked.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.where(fringe, contrast, 0)[top:bottom, left:right]
    crop = np.clip(crop / max(peak, 1e-6), 0, 1).astype(np.float32) * 255
    scale = DIGIT_BOX / max(crop.shape)
    missing = STROKE_WIDTH - stroke_width(mask[top:bottom, left:right]) * scale  # in MNIST pixels
    radius = round(missing / 2 / scale)
    if radius >= 1:
        crop = cv2.copyMakeBorder(crop, radius, radius, radius, radius, cv2.BORDER_CONSTANT, value=0)
        pen = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        crop = cv2.dilate(crop, pen)
        scale = DIGIT_BOX / max(crop.shape)
    height, width = crop.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    shrinking = scale < 1
    box = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    box = np.clip(box, 0, 255)
    frame = np.zeros((SIDE, SIDE), dtype=np.float32)
    total = float(box.sum())
    ys, xs = np.indices(box.shape)
    # To a thousandth of a pixel: a symmetric digit's centre falls on .5, and float noise must not
    # decide which way it rounds.
    centre_y = round(float((ys * box).sum() / total), 3) if total > 0 else box.shape[0] / 2
    centre_x = round(float((xs * box).sum() / total), 3) if total > 0 else box.shape[1] / 2
    top = int(np.clip(round(SIDE / 2 - centre_y), 0, SIDE - box.shape[0]))
    left = int(np.clip(round(SIDE / 2 - centre_x), 0, SIDE - box.shape[1]))
    frame[top : top + box.shape[0], left : left + box.shape[1]] = box
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8)
