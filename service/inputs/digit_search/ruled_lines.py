"""Ruled and squared paper: the lines' pixels, and the strokes that cross them kept whole.

Works on ink masks and contrast maps of the digit search (a working image of a few hundred
pixels). A line is a row (or column) mostly inked over a long stretch, joined into something that
runs off the image at one end at least and reaches most of the way across it, and thin; a thick one
counts only along the image's border, where it is the table or the next page beyond the page's edge.
"""

from __future__ import annotations

import cv2
import numpy as np

LINE_RUN = 0.2  # of the image's width: rows inked over at least LINE_FILL of a stretch this long...
LINE_FILL = 0.6
LINE_LENGTH = 0.7  # ... joined into something reaching this far across the image from a border...
LINE_THICKNESS = 0.04  # ... and mostly no thicker than this (a long stroke of a large digit is)
LINE_BRIDGE = 9  # px: strokes are joined again across a line this thick


def ruled_lines(ink: np.ndarray, contrast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ruled or squared paper's lines and margin lines, horizontal and vertical: each line's own
    contrast over its pixels, 0 elsewhere. A line's pixels are those of rows (columns) mostly
    inked over a long stretch, joined into something reaching most of the way across the image
    and thin, unless it lies along the image's border (the table beyond the page's edge)."""
    found = []
    for across in (False, True):  # rows, then columns (the transposed image)
        mask = (ink.T if across else ink).astype(np.uint8)
        values = contrast.T if across else contrast
        height, width = mask.shape
        lines = np.zeros(mask.shape, dtype=np.float32)
        window = round(LINE_RUN * width)
        if window >= 8 and height >= 3:
            thick = np.asarray(cv2.dilate(mask, np.ones((3, 1), np.uint8)), np.uint8)  # tilted lines too
            filled = cv2.blur(thick.astype(np.float32), (window, 1)) >= LINE_FILL
            # A line reaches LINE_LENGTH across, so at least that many columns hold filled pixels; the
            # usual photo has none, and is spared the labelling below.
            if np.count_nonzero(filled.any(axis=0)) < LINE_LENGTH * width:
                found.append(lines.T if across else lines)
                continue
            _, labels, stats, _ = cv2.connectedComponentsWithStats(filled.astype(np.uint8) & thick)
            left_end, span = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_WIDTH]
            # Long, and running off the image at one end at least: a 7's long bar does not.
            long = (span >= LINE_LENGTH * width) & ((left_end == 0) | (left_end + span == width))
            for i in np.flatnonzero(long) + 1:
                left, top, w, h = stats[i, :4]
                box = (slice(top, top + h), slice(left, left + w))
                line = labels[box] == i
                depth = np.count_nonzero(line, axis=0)  # pixels per column: the line's thickness
                if np.median(depth[depth > 0]) > LINE_THICKNESS * width and top > 0 and top + h < height:
                    continue  # thick and long: a large digit's stroke
                # Its contrast: the typical peak across it, which strokes crossing it barely move.
                peaks = np.where(line, values[box], -1.0).max(axis=0)
                level = float(np.median(peaks[depth > 0]))
                lines[box][line] = np.maximum(lines[box][line], level)
        found.append(lines.T if across else lines)
    return found[0], found[1]


def bridged(ink: np.ndarray, before: np.ndarray, lines: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``ink`` (uint8), found once the lines' contrast was taken away, and the line pixels that were
    ink ``before`` with ink on both sides across the line: a stroke crossing a line as dark as itself
    stays whole."""
    kept = ink.astype(np.uint8)
    for line, kernel in ((lines[0], (LINE_BRIDGE, 1)), (lines[1], (1, LINE_BRIDGE))):
        if line.any():  # a closing across the line, in the line's pixels only
            closed = cv2.morphologyEx(ink.astype(np.uint8), cv2.MORPH_CLOSE, np.ones(kernel, np.uint8))
            across = np.asarray(closed, np.uint8)
            kept |= across & (before & (line > 0))
    return kept
