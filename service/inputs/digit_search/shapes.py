"""Measures of a mask's shape that several steps of the digit search share: its box, its holes, the
width of its strokes."""

from __future__ import annotations

import cv2
import numpy as np


def box(mask: np.ndarray) -> tuple[slice, slice]:
    """The bounding box of a non-empty mask, as slices."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def around(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """The bounding box of a non-empty mask grown by ``margin`` px each way, within the image."""
    rows, cols = box(mask)
    height, width = mask.shape
    return (
        slice(max(0, rows.start - margin), min(height, rows.stop + margin)),
        slice(max(0, cols.start - margin), min(width, cols.stop + margin)),
    )


def holes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The components of what ``mask`` leaves free (4-connected, labelled) and the labels of those it
    encloses: the ones that do not reach the border."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    height, width = labels.shape
    left, top, w, h = (stats[1:, i] for i in range(4))
    enclosed = np.flatnonzero((left > 0) & (top > 0) & (left + w < width) & (top + h < height)) + 1
    return labels, enclosed


def stroke_width(mask: np.ndarray) -> float:
    """The strokes' typical width in pixels: twice the distance from their middle (the ridge of the
    distance to the paper) to their edge."""
    depth = distances(mask.astype(np.uint8), cv2.DIST_MASK_PRECISE)
    ridge = (depth > 0) & (depth >= cv2.dilate(depth, np.ones((3, 3), np.uint8)))
    return 2 * float(np.median(depth[ridge])) - 1 if ridge.any() else 0.0


def boldness(mask: np.ndarray) -> float:
    """The strokes' width against the longest side of a non-empty mask's box: about 0.1 to 0.2 for a
    digit, 0.3 for a marker's, near 1 for a blob."""
    rows, cols = box(mask)
    return stroke_width(mask[rows, cols]) / max(rows.stop - rows.start, cols.stop - cols.start)


def distances(mask: np.ndarray, mask_size: int) -> np.ndarray:
    """Euclidean distance from each nonzero pixel to the nearest zero, without Intel IPP. OpenCV turns
    IPP on per thread, and IPP's exact transform gives other distances than OpenCV's own: the same
    photo became another 28x28 in an API server's decode thread than on its event loop or in
    mnist-score."""
    with_ipp = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)  # for this thread only
    try:
        return cv2.distanceTransform(mask, cv2.DIST_L2, mask_size)
    finally:
        cv2.ipp.setUseIPP(with_ipp)
