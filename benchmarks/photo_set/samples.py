"""The samples: MNIST test digits drawn and photographed, one seeded stream each, and the non-digits
shot the same way."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from benchmarks.photo_set.conditions import HARSH, KINDS, Conditions
from benchmarks.photo_set.drawing import draw, letter, page_size, scribble
from benchmarks.photo_set.photograph import photograph

NON_DIGITS = ("blank", "letter", "scribble")


@dataclass(frozen=True)
class Photo:
    """One rendered sample: the file's bytes and what it shows."""

    index: int  # its MNIST test index
    label: int
    data: bytes
    extension: str  # "jpg" or "png"
    kinds: tuple[str, ...]
    width: int
    height: int

    @property
    def name(self) -> str:
        return f"{self.index:05d}.{self.extension}"


def photo_set(
    images: np.ndarray,
    labels: np.ndarray,
    count: int,
    seed: int,
    conditions: Conditions = HARSH,
    damaged: bool = True,
) -> list[Photo]:
    """``count`` distinct test digits chosen by ``seed``, each rendered from its own seeded stream
    (so a sample does not change with ``count``); ``damaged`` as in render."""
    chosen = np.random.default_rng(seed).choice(len(images), size=count, replace=False)
    return [render(images[i], int(labels[i]), int(i), seed, conditions, damaged) for i in chosen]


def render(
    digit: np.ndarray,
    label: int,
    index: int,
    seed: int,
    conditions: Conditions = HARSH,
    damaged: bool = True,
) -> Photo:
    """Render one MNIST digit (uint8 28x28, white on black) as a photo or scan; with ``damaged``
    False, the same drawing (pen, size, place, angle) in black on white paper and nothing else, to
    tell what the damage costs from what the drawing does."""
    rng = np.random.default_rng([seed, index])
    kinds: set[str] = set()
    scan = rng.random() < 0.3
    kinds.add("scan" if scan else "photo")
    width, height = page_size(rng)
    ink = draw(digit, rng, width, height, kinds, conditions, scan)
    if damaged:
        data, extension = photograph(ink, rng, kinds, conditions, scan)
    else:
        buffer = io.BytesIO()
        Image.fromarray(np.rint(255 * (1 - ink)).astype(np.uint8)).save(buffer, format="PNG")
        data, extension = buffer.getvalue(), "png"
    ordered = tuple(kind for kind in KINDS if kind in kinds)
    return Photo(index, label, data, extension, ordered, width, height)


def non_digit_set(count: int, seed: int, conditions: Conditions = HARSH) -> list[Photo]:
    """``count`` photos and scans of what is not a digit (blank pages, letters and signs, scribbles),
    with the same damage as the digits; label -1, their kind first among their kinds."""
    photos = []
    for index in range(count):
        rng = np.random.default_rng([seed, 1_000_000 + index])
        what = NON_DIGITS[index % len(NON_DIGITS)]
        kinds: set[str] = set()
        scan = rng.random() < 0.3
        kinds.add("scan" if scan else "photo")
        width, height = page_size(rng)
        if what == "blank":
            ink = np.zeros((height, width), np.float32)
        else:
            shape = letter(rng) if what == "letter" else scribble(rng)
            ink = draw(shape, rng, width, height, kinds, conditions, scan)
        data, extension = photograph(ink, rng, kinds, conditions, scan)
        ordered = (what, *(kind for kind in KINDS if kind in kinds))
        photos.append(Photo(index, -1, data, extension, ordered, width, height))
    return photos
