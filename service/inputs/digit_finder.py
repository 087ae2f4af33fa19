"""Find the digit in a photo or scan of any size, and apply the MNIST recipe to it.

Each step lives in service.inputs.digit_search, in the order taken here: the paper under the
writing is estimated locally and each pixel's contrast taken against it (paper); the digit's ink is
what stands out, less ruled lines, specks and the page's own structures (ink); it is found again
against the paper under everything a few strokes wide, and bands along shadows' edges that passed
for ink are taken away against the paper right next to the digit (near_paper);
the middles of strokes too bold for the paper's estimate are given back (bold_strokes); then the
recipe MNIST was made with: crop, longest side to 20 px, centre of mass in a 28x28 frame, white on
black, strokes thinner than MNIST's thickened (mnist_frame). Light writing on a dark board is found
the same way, the other way up; where the test of which way up is in doubt and finds a blob (a bold
light digit's loops taken for dark ink), the other way up is tried too.
"""

from __future__ import annotations

import numpy as np

from service.errors import Unprocessable
from service.inputs.digit_search.bold_strokes import fill_ink_holes, fill_wide_strokes
from service.inputs.digit_search.ink import found_ink
from service.inputs.digit_search.mnist_frame import SIDE, mnist_frame
from service.inputs.digit_search.near_paper import at_stroke_scale, without_paper_edges, without_shadow_bands
from service.inputs.digit_search.paper import ink_polarity, working_copy
from service.inputs.digit_search.shapes import boldness, box, stroke_width

__all__ = ["SIDE", "find_digit"]

BLOB = 0.4  # strokes this wide against the digit's size: a blob, perhaps found the wrong way up


def find_digit(gray: np.ndarray) -> np.ndarray:
    """The digit in a grayscale image (any size, either polarity) as MNIST has it: uint8 [28, 28],
    white on black. Unprocessable when there is no ink at all."""
    work = working_copy(gray)
    light_ink, sure = ink_polarity(work)
    ink = found_ink(work, light_ink)
    if ink.mask is not None and not sure and boldness(ink.mask) > BLOB:
        # A bold light digit's loops, found as dark ink, make a blob; the other way up, its strokes
        # are found instead, thinner against their size.
        other = found_ink(work, not light_ink)
        if other.mask is not None and boldness(other.mask) < boldness(ink.mask):
            light_ink, ink = not light_ink, other
    if ink.mask is None:
        raise Unprocessable("image contains no digit: it is blank after background removal")
    contrast, smooth, mask = at_stroke_scale(ink.contrast, ink.smooth, ink.mask, work, light_ink)
    strokes = stroke_width(mask[box(mask)])
    mask = without_paper_edges(mask, work, smooth, light_ink, strokes)
    mask = without_shadow_bands(mask, work, contrast, smooth, light_ink)
    fill_wide_strokes(mask, contrast, work, light_ink, strokes)
    fill_ink_holes(mask, contrast, work, light_ink)
    return mnist_frame(contrast, mask)
