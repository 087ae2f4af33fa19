"""Find the digit in a photo or scan of any size, and apply the MNIST recipe to it.

The paper's brightness is estimated locally (a morphological closing on a coarse grid), so lighting
gradients, shadows and the table beyond the page's edge are not taken for ink; each pixel's contrast
is taken as a fraction of its paper's brightness, which the light falling on both cancels out of.
Ink is what stands out above a threshold that adapts to the image (Otsu's, never within the noise),
and fainter ink next to it. Ruled lines are taken out (service.inputs.ruled_lines); the digit is the
strongest structure left that does not span the image, with the pieces close to it, while specks and
the page's own structures are dropped. Then the recipe MNIST was made with: crop, longest side to
20 px, centre of mass in a 28x28 frame, white on black; strokes thinner than MNIST's are thickened.
Light writing on a dark board is found the same way, the other way up.
"""

from __future__ import annotations

import cv2
import numpy as np

from service.errors import Unprocessable
from service.inputs.ruled_lines import bridged, ruled_lines

SIDE = 28
DIGIT_BOX = 20

# Sizes are fractions of the working image's longest side unless named otherwise, so that a 200 px
# photo and a 1,000 px one are treated alike.
WORKING_SIDE = 256  # the digit search runs at most at this size: a 20 px digit needs no more
SMALLEST_SIDE = 112  # and at least at this one
COARSE_SIDE = 64  # the paper's brightness is estimated on this coarse grid
POLARITY_SIDE = 160  # and whether the ink is dark or light on this one...
LIGHT_INK_ODDS = 2.0  # ... light when the evidence for it outweighs that for dark this much (the usual)
CLOSING = 0.2  # dark things narrower than this are not paper: strokes, lines, specks
WIDE_STROKE = 0.3  # strokes this wide against CLOSING's width may have lost their middles...
WIDE_CLOSING = 0.5  # ... which are found again against a closing this wide...
WIDE_INK = 0.8  # ... where they are nearly as dark as the rest of the digit
HOLE_INK = 0.3  # a hole is ink only where it stands out against its paper this much of the ink's level
MIN_CONTRAST = 0.08  # ink is at least this much darker than its paper (fraction of the paper's level)
NOISE_MARGIN = 4.0  # and this many noise deviations above the paper
HYSTERESIS = 0.5  # fainter ink (down to this fraction of the threshold) counts where it joins ink...
GROWTH = 6  # px: ... up to this far from it
LIGHT_INK_SPAN = 64.0  # light ink's contrast is taken against at least its board's level + this
BORDER_PENALTY = 0.3  # what touches the image's border is less likely the digit
PAGE_PENALTY = 0.01  # and what touches two of its sides or spans it, much less
NEAR = 0.3  # pieces within this fraction of the digit's size belong to it
PIECE = 0.25  # ... if they are at least this fraction of its size (a dot is not)
SPANNING = 0.9  # what reaches this fraction across the image from a border is the page, not the digit
NEAR_PAPER_STROKES = 3.0  # the paper by the digit is estimated again in a window this many strokes wide...
NEAR_PAPER_BOX = 0.4  # ... or this fraction of the digit's longest side, whichever is wider...
NEAR_PAPER_SHARE = 0.5  # ... and ink keeps at least this share of its contrast against it
SPECK_SHARE = 0.05  # what is left of it in pieces under this share of the largest piece's area goes
BESIDE_MARGIN = 2  # px: the paper right beside the digit starts past its strokes' soft edges...
BESIDE_STEPS = 8  # ... and reaches this far into it...
BESIDE_SHARE = 0.25  # ... and ink keeps at least this share of its contrast against it
PEAK_PERCENTILE = 90  # the stroke's ink level, for scaling to 255
EDGE = 0.2  # of that level: the faintest edge of a stroke that still counts in the digit's box
STROKE_WIDTH = 2.5  # MNIST pixels: thinner strokes are thickened to this (MNIST's are 1.5 to 3)


def find_digit(gray: np.ndarray) -> np.ndarray:
    """The digit in a grayscale image (any size, either polarity) as MNIST has it: uint8 [28, 28],
    white on black. Unprocessable when there is no ink at all."""
    work = _working_copy(gray)
    light_ink = _light_ink(work)
    contrast = _ink_contrast(work, light_ink)
    smooth = cv2.GaussianBlur(contrast, (0, 0), 1.0)  # what the ink is told from the paper by
    mask = _digit_mask(smooth)
    if mask is None:
        raise Unprocessable("image contains no digit: it is blank after background removal")
    stroke_width = _stroke_width(mask[_box(mask)])
    mask = _without_paper_edges(mask, work, smooth, light_ink, stroke_width)
    mask = _without_shadow_bands(mask, work, contrast, smooth, light_ink)
    if stroke_width >= WIDE_STROKE * CLOSING * max(work.shape):  # bold, filling it
        _fill_wide_strokes(mask, contrast, _ink_contrast(work, light_ink, WIDE_CLOSING))
    _fill_ink_holes(mask, contrast, 255 - work if light_ink else work)
    return _mnist_frame(contrast, mask)


def _working_copy(gray: np.ndarray) -> np.ndarray:
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


def _light_ink(work: np.ndarray) -> bool:
    """Is the writing lighter than its surroundings (chalk on a board, a negative)?

    Each pixel is compared with the median of its surroundings, as a ratio, so that lighting (which
    multiplies) and shadows cancel out: writing then reaches far to one side, noise a little to both.
    """
    coarse, _ = _coarse(work, POLARITY_SIDE)
    if min(coarse.shape) < 3:
        return False
    kernel = min(255, max(3, round(max(coarse.shape) * CLOSING) | 1))
    local = cv2.medianBlur(np.clip(coarse, 0, 255).astype(np.uint8), kernel).astype(np.float32)
    ratio = np.log((coarse + 8.0) / (local + 8.0))
    sample = ratio[::2, ::2]
    spread = 3 * 1.4826 * float(np.median(np.abs(sample - np.median(sample))))
    darker = float(np.square(np.clip(-ratio - spread, 0, None)).sum())
    lighter = float(np.square(np.clip(ratio - spread, 0, None)).sum())
    return lighter > LIGHT_INK_ODDS * darker


def _ink_contrast(work: np.ndarray, light_ink: bool, closing: float = CLOSING) -> np.ndarray:
    """How far each pixel stands out from its surroundings towards the ink, as a fraction of the
    brighter of the two: about 0 on paper (noise either side), near 1 for black ink on white paper
    or chalk on a black board, whatever the light falling on them (lighting multiplies both)."""
    coarse, factor = _coarse(work)
    kernel = max(3, round(max(coarse.shape) * closing) | 1)
    element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    # Beyond the border the light is taken to go on as it went (an odd reflection): replicated or
    # mirrored, light that falls off towards the border would leave a band of false ink along it.
    pad = kernel // 2 + 1
    extended = np.clip(np.pad(coarse, pad, mode="reflect", reflect_type="odd"), coarse.min(), coarse.max())
    surround = _paper(extended, light_ink, element)[pad:-pad, pad:-pad]
    if factor > 1:
        surround = cv2.resize(surround, (work.shape[1], work.shape[0]), interpolation=cv2.INTER_LINEAR)
    return _contrast(work, surround, light_ink)


def _paper(image: np.ndarray, light_ink: bool, element: np.ndarray) -> np.ndarray:
    """The paper (or board) under everything narrower than ``element``. Closing (a max then a min
    filter) keeps the paper's own edges (shadows, the page's border) where they are and fills in
    every dark thing narrower than the kernel, the writing included; opening does the same for
    light writing on a dark board."""
    return cv2.morphologyEx(image, cv2.MORPH_OPEN if light_ink else cv2.MORPH_CLOSE, element)


def _contrast(work: np.ndarray, surround: np.ndarray, light_ink: bool) -> np.ndarray:
    """_ink_contrast once the paper's brightness (``surround``) is known."""
    if light_ink:
        # As a fraction of the chalk's own brightness nearby (the brightest pixel within a stroke's
        # width), as dark ink's is of its paper's: the light falling on a board scales both.
        chalk = cv2.dilate(work, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
        return np.clip((work - surround) / np.maximum(chalk, surround + LIGHT_INK_SPAN), -1, 1)
    return np.clip((surround - work) / np.maximum(surround, 8.0), -1, 1)


def _digit_mask(smooth: np.ndarray) -> np.ndarray | None:
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
    """_digit_mask once the lines are known."""
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
        distance = _distances((~np.isin(labels, np.asarray(keep) + 1)).astype(np.uint8), 3)
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


def _without_paper_edges(
    mask: np.ndarray, work: np.ndarray, smooth: np.ndarray, light_ink: bool, stroke_width: float
) -> np.ndarray:
    """The digit's mask less what stood out only against the coarse estimate of the paper.

    That estimate smooths a shadow's edge over a few pixels, and a narrow shadow may be filled in
    altogether, so a band along the edge passes for faint ink and joins the digit where they touch.
    Against the paper estimated again at full resolution, in a window a few strokes wide, the band
    is paper while the strokes keep their contrast. What is left of the band in specks goes too."""
    rows, cols = _box(mask)
    longest = max(rows.stop - rows.start, cols.stop - cols.start)
    height, width = mask.shape
    window = min(max(NEAR_PAPER_STROKES * stroke_width, NEAR_PAPER_BOX * longest), max(height, width))
    kernel = max(3, round(window) | 1)  # a mask without paper in its box has no finite stroke width
    top, bottom = max(0, rows.start - kernel), min(height, rows.stop + kernel)
    left, right = max(0, cols.start - kernel), min(width, cols.stop + kernel)
    region = work[top:bottom, left:right]
    pad = kernel // 2 + 1
    extended = cv2.copyMakeBorder(region, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    element = cv2.getStructuringElement(cv2.MORPH_RECT, (kernel, kernel))  # separable: fast when wide
    near = _contrast(region, _paper(extended, light_ink, element)[pad:-pad, pad:-pad], light_ink)
    smooth_near = cv2.GaussianBlur(near, (0, 0), 1.0)
    inside = mask[top:bottom, left:right]
    kept = inside & (smooth_near >= NEAR_PAPER_SHARE * smooth[top:bottom, left:right])
    return _keeping(mask, kept, (slice(top, bottom), slice(left, right)))


def _without_shadow_bands(
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
    rows, cols = _box(mask)
    reach = BESIDE_MARGIN + BESIDE_STEPS
    region = (
        slice(max(0, rows.start - reach), rows.stop + reach),
        slice(max(0, cols.start - reach), cols.stop + reach),
    )
    inside = mask[region]
    pixels = np.clip(work[region], 0, 255).astype(np.uint8)
    darkness = 255 - pixels if light_ink else pixels
    margin = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * BESIDE_MARGIN + 1,) * 2)
    grown = cv2.dilate(inside.astype(np.uint8), margin).astype(bool)
    labels, loops = _holes(grown)
    flooded = grown | np.isin(labels, loops) | (contrast[region] >= MIN_CONTRAST)
    beside = np.where(flooded, np.uint8(255), darkness)
    step = np.ones((3, 3), np.uint8)
    for _ in range(BESIDE_STEPS):  # on the paper itself, the max with its own darkness keeps it as it is
        beside = cv2.max(cv2.erode(beside, step), darkness)
    paper = (255 - beside if light_ink else beside).astype(np.float32)
    against_beside = _contrast(pixels.astype(np.float32), paper, light_ink)
    smooth_beside = cv2.GaussianBlur(against_beside, (0, 0), 1.0)
    return _keeping(mask, inside & (smooth_beside >= BESIDE_SHARE * smooth[region]), region)


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


def _holes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The components of what ``mask`` leaves free (4-connected, labelled) and the labels of those it
    encloses: the ones that do not reach the border."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    height, width = labels.shape
    left, top, w, h = (stats[1:, i] for i in range(4))
    enclosed = np.flatnonzero((left > 0) & (top > 0) & (left + w < width) & (top + h < height)) + 1
    return labels, enclosed


def _box(mask: np.ndarray) -> tuple[slice, slice]:
    """The bounding box of a non-empty mask, as slices."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _fill_wide_strokes(mask: np.ndarray, contrast: np.ndarray, wide: np.ndarray) -> None:
    """Give back, in place, the middles of strokes wider than the closing in _ink_contrast (a bold
    digit filling the image, a blob where strokes meet), which it took for paper: what is as dark as
    the digit's ink against a closing WIDE_CLOSING wide (``wide``), joined to the digit, within its
    box. A shadow, much lighter than ink, stays out."""
    level = float(np.percentile(contrast[mask], PEAK_PERCENTILE))
    box = _box(mask)
    inky = ((wide[box] >= WIDE_INK * level) & ~mask[box]).astype(np.uint8)
    if not inky.any():
        return
    _, labels = cv2.connectedComponents(inky | mask[box].astype(np.uint8), connectivity=8)
    joined = np.isin(labels, np.unique(labels[mask[box]]))
    added = joined & ~mask[box]
    mask[box] |= added
    contrast[box][added] = wide[box][added]


def _fill_ink_holes(mask: np.ndarray, contrast: np.ndarray, darkness: np.ndarray) -> None:
    """Fill, in place, the holes in the digit that are as dark as its ink (``darkness``: the working
    image with the ink dark). Where a stroke is wider than the closing in _ink_contrast (a thick
    marker, a blob where strokes meet) its middle was taken for paper; a loop's inside is paper, even
    where a shadow darkens it nearly as much (it stands out little against the paper's estimate)."""
    box = _box(mask)
    labels, enclosed = _holes(mask[box])
    if not len(enclosed):
        return
    inside = mask[box]
    ink = float(np.median(darkness[box][inside]))
    around = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~mask
    paper = float(np.median(darkness[around]))
    level = float(np.percentile(contrast[mask], PEAK_PERCENTILE))
    for i in enclosed:
        hole = labels == i
        if float(np.median(contrast[box][hole])) < HOLE_INK * level:
            continue  # paper: darkened, perhaps, by a shadow falling on it
        dark = float(np.median(darkness[box][hole]))
        if abs(dark - ink) < abs(dark - paper):
            mask[box][hole] = True
            contrast[box][hole] = np.maximum(contrast[box][hole], level)


def _mnist_frame(contrast: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The MNIST recipe on the digit's ink: crop, longest side to 20 px, centre of mass in 28x28;
    strokes thinner than MNIST's (a fine pen on a large digit) are thickened to STROKE_WIDTH first."""
    peak = float(np.percentile(contrast[mask], PEAK_PERCENTILE))
    # The strokes' soft edges belong to the digit and to its box, as in MNIST's anti-aliased digits.
    fringe = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    inked = fringe & (contrast > EDGE * peak)
    rows = np.flatnonzero(inked.any(axis=1))
    cols = np.flatnonzero(inked.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.where(fringe, contrast, 0)[top:bottom, left:right]
    crop = np.clip(crop / max(peak, 1e-6), 0, 1).astype(np.float32) * 255
    scale = DIGIT_BOX / max(crop.shape)
    missing = STROKE_WIDTH - _stroke_width(mask[top:bottom, left:right]) * scale  # in MNIST pixels
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


def _stroke_width(mask: np.ndarray) -> float:
    """The strokes' typical width in pixels: twice the distance from their middle (the ridge of the
    distance to the paper) to their edge."""
    depth = _distances(mask.astype(np.uint8), cv2.DIST_MASK_PRECISE)
    ridge = (depth > 0) & (depth >= cv2.dilate(depth, np.ones((3, 3), np.uint8)))
    return 2 * float(np.median(depth[ridge])) - 1 if ridge.any() else 0.0


def _distances(mask: np.ndarray, mask_size: int) -> np.ndarray:
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
