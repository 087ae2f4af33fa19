"""MNIST *test* digits rendered as photos and scans of handwriting, reproducibly from a seed.

Each digit is drawn large with a pen of some width and colour onto paper, placed off-centre and
slightly rotated, then damaged the way phones and scanners damage pages. A sample takes each kind of
damage with its own probability and records the kinds it took, so accuracy can be broken down by
kind. The ranges are wider than users produce (a 40 px digit in a 1,200 px photo, shadows that halve
the light, JPEG quality 30), so that a preprocessing tuned on this set is not merely tuned to it.

Only the 10,000 test digits are used: the model never saw them, nor anything drawn from them.

samples renders one sample from its own seeded stream: drawing puts the ink on a page (the digit
enlarged, another pen, turned, placed), photograph shoots it (paper and pen colours, ruling, specks,
light and shadows, optics, the file); conditions says how often each kind of damage happens. One
set of conditions, mnist-strokes, keeps MNIST's own strokes instead of a pen and has no shadows:
MNIST digits as written, photographed, which tells what our pens cost from what the camera does.
"""

from benchmarks.photo_set.conditions import CONDITIONS, EVERYDAY, HARSH, KINDS, MNIST_STROKES, Conditions
from benchmarks.photo_set.samples import NON_DIGITS, Photo, non_digit_set, photo_set, render

__all__ = [
    "CONDITIONS",
    "EVERYDAY",
    "HARSH",
    "KINDS",
    "MNIST_STROKES",
    "NON_DIGITS",
    "Conditions",
    "Photo",
    "non_digit_set",
    "photo_set",
    "render",
]
