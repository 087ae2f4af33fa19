"""Find the digit in a photo or scan of any size, and apply the MNIST recipe to it.

Each step lives in service.inputs.digit_search, in the order taken here: the paper under the
writing is estimated locally and each pixel's contrast taken against it (paper); the digit's ink is
what stands out, less ruled lines, specks and the page's own structures (ink); bands along shadows'
edges that passed for ink are taken away against the paper right next to the digit (near_paper);
the middles of strokes too bold for the paper's estimate are given back (bold_strokes); then the
recipe MNIST was made with: crop, longest side to 20 px, centre of mass in a 28x28 frame, white on
black, strokes thinner than MNIST's thickened (mnist_frame). Light writing on a dark board is found
the same way, the other way up.
"""

from __future__ import annotations

import numpy as np

from service.errors import Unprocessable
from service.inputs.digit_search.bold_strokes import fill_ink_holes, fill_wide_strokes
from service.inputs.digit_search.ink import digit_mask
from service.inputs.digit_search.mnist_frame import SIDE, mnist_frame
from service.inputs.digit_search.near_paper import without_paper_edges, without_shadow_bands
from service.inputs.digit_search.paper import ink_contrast, is_light_ink, smoothed, working_copy
from service.inputs.digit_search.shapes import box, stroke_width

__all__ = ["SIDE", "find_digit"]


def find_digit(gray: np.ndarray) -> np.ndarray:
    """The digit in a grayscale image (any size, either polarity) as MNIST has it: uint8 [28, 28],
    white on black. Unprocessable when there is no ink at all."""
    work = working_copy(gray)
    light_ink = is_light_ink(work)
    contrast = ink_contrast(work, light_ink)
    smooth = smoothed(contrast)
    mask = digit_mask(smooth)
    if mask is None:
        raise Unprocessable("image contains no digit: it is blank after background removal")
    strokes = stroke_width(mask[box(mask)])
    mask = without_paper_edges(mask, work, smooth, light_ink, strokes)
    mask = without_shadow_bands(mask, work, contrast, smooth, light_ink)
    fill_wide_strokes(mask, contrast, work, light_ink, strokes)
    fill_ink_holes(mask, contrast, work, light_ink)
    return mnist_frame(contrast, mask)
