"""What can happen to a sample: the kinds of damage it records, and how often each happens under the
everyday and the harsh conditions (and under MNIST's own strokes, photographed)."""

from __future__ import annotations

from dataclasses import dataclass, replace

# Every kind a sample can record, in the order the per-kind tables list them.
KINDS = (
    "photo",  # lit unevenly by the room, saved by a phone
    "scan",  # flat lighting, high contrast
    "gradient",  # lighting falls off across the page (a ramp or a vignette)
    "shadow",  # a soft-edged shadow (hand, phone) darkens part of the page
    "edge",  # the page ends and a dark table shows along one side
    "noise",  # strong sensor noise
    "blur",  # out of focus or shaken
    "tint",  # coloured paper, light or ink
    "perspective",  # the page photographed at an angle
    "rotated",  # the digit written more than 10 degrees off upright
    "small",  # the digit under a quarter of the image's shorter side
    "thin_pen",  # strokes thinner than MNIST's
    "thick_marker",  # strokes thicker than MNIST's
    "low_contrast",  # pencil, or a faded print
    "ruled",  # ruled or squared notebook paper
    "specks",  # dust, dots and crumbs
    "binary",  # a 1-bit scan
    "light_on_dark",  # chalk on a board, a negative
    "jpeg",
    "png",
)


@dataclass(frozen=True)
class Conditions:
    """How often each kind of damage happens (a chance per sample) and how far the drawing may go.

    Both sets reach further than users do; ``HARSH`` adds what some users produce on a bad day
    (notebook lines, dust, the table showing, faded pencil, 1-bit scans, tiny and strongly turned
    digits, pages at an angle)."""

    name: str
    smallest: float  # the digit's height, as a fraction of the page's shorter side, from this to 0.8
    turn_sd: float  # degrees, normal...
    max_turn: float  # ... clipped at this
    thin_pen: float
    thick_marker: float
    perspective: float
    light_on_dark: float
    low_contrast: float
    ruled: float
    specks: float
    gradient: float
    shadow: float
    edge: float
    binary: float  # of scans
    mnist_strokes: bool = False  # the digit's own anti-aliased strokes as the ink, no pen of ours


# Photos and scans as people take them, wider than they take them: the light falling off to a third
# across the page, shadows taking 60 % of it, noise up to sd 22, JPEG quality 30, blur up to 1.2 %
# of the page, any paper and pen colour, pens from a fine liner to a marker, digits from a quarter of
# the page, turned up to 15 degrees.
EVERYDAY = Conditions(
    "everyday", smallest=0.25, turn_sd=5.0, max_turn=15.0, thin_pen=0.3, thick_marker=0.1, perspective=0.0,
    light_on_dark=0.08, low_contrast=0.0, ruled=0.0, specks=0.0, gradient=0.6, shadow=0.3, edge=0.0,
    binary=0.0,
)  # fmt: skip
HARSH = Conditions(
    "harsh", smallest=0.15, turn_sd=7.0, max_turn=22.0, thin_pen=0.3, thick_marker=0.1, perspective=0.3,
    light_on_dark=0.08, low_contrast=0.1, ruled=0.25, specks=0.3, gradient=0.6, shadow=0.3, edge=0.15,
    binary=0.25,
)  # fmt: skip
# MNIST's own strokes under the everyday light, noise, blur, tints and files, without shadows: MNIST
# digits written dark on light paper and photographed. Not a target to tune for: it tells what our
# pens and shadows cost from what the rest of the photograph does.
MNIST_STROKES = replace(
    EVERYDAY, name="mnist-strokes", thin_pen=0.0, thick_marker=0.0, shadow=0.0, mnist_strokes=True
)
CONDITIONS = {c.name: c for c in (EVERYDAY, HARSH, MNIST_STROKES)}
