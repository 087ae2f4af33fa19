"""The page photographed or scanned: paper and pen colours, notebook ruling, specks, uneven light and
shadows, the table beyond the page, lens blur, sensor noise, and the file it is saved as."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from benchmarks.photo_set.conditions import Conditions


def photograph(
    ink: np.ndarray, rng: np.random.Generator, kinds: set[str], conditions: Conditions, scan: bool
) -> tuple[bytes, str]:
    """Paper, ruling, the pen's ink, specks, light, optics, file: the encoded file and its extension."""
    height, width = ink.shape
    light_on_dark = rng.random() < conditions.light_on_dark
    paper, pen = _colours(rng, kinds, conditions, light_on_dark, scan)
    page = np.empty((height, width, 3), np.float32)
    page[:] = paper
    if rng.random() < conditions.ruled:
        _rule(page, rng, kinds, paper, light_on_dark)
    alpha = ink[..., None]
    page = page * (1 - alpha) + np.asarray(pen, np.float32) * alpha
    if rng.random() < conditions.specks:
        _specks(page, rng, kinds, pen, min(width, height))
    if not scan:
        _light(page, rng, kinds, conditions)
    _optics(page, rng, kinds, scan, min(width, height))
    return _encode(page, rng, kinds, conditions, scan)


PENS = {  # RGB: what ballpoints, fineliners and pencils leave on paper
    "black": (25, 25, 30),
    "blue": (35, 45, 140),
    "dark blue": (20, 30, 90),
    "red": (160, 25, 30),
    "green": (20, 100, 50),
}


def _colours(
    rng: np.random.Generator, kinds: set[str], conditions: Conditions, light_on_dark: bool, scan: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Paper and pen colours (RGB floats); the pen may be any colour dark enough to read."""
    tinted = not scan and rng.random() < 0.4
    if light_on_dark:
        kinds.add("light_on_dark")
        board = float(rng.uniform(5, 90))
        chalk = float(rng.uniform(max(board + 70, 160), 255))
        paper, pen = np.full(3, board), np.full(3, chalk)
        if tinted:
            paper = paper * rng.uniform(0.6, 1.3, size=3)  # green and blue boards
    else:
        paper = np.full(3, float(rng.uniform(175, 250)))
        pen = np.asarray(PENS[str(rng.choice(list(PENS)))], float) if tinted else np.full(3, 25.0)
        pen = pen + float(rng.uniform(0, 60))  # lighter pens, grey prints
        if tinted:
            paper = paper * rng.uniform(0.82, 1.0, size=3)  # cream, blue-grey, pink paper
    if rng.random() < conditions.low_contrast:
        kinds.add("low_contrast")
        pen = paper + (pen - paper) * float(rng.uniform(0.3, 0.5))
    if tinted:
        kinds.add("tint")
    return np.clip(paper, 0, 255).astype(np.float32), np.clip(pen, 0, 255).astype(np.float32)


def _rule(
    page: np.ndarray, rng: np.random.Generator, kinds: set[str], paper: np.ndarray, light_on_dark: bool
) -> None:
    """Ruled or squared notebook lines under the ink, perhaps with a margin line."""
    kinds.add("ruled")
    height, width = page.shape[:2]
    spacing = float(rng.uniform(0.05, 0.15)) * min(width, height)
    thickness = int(rng.integers(1, 5))
    colour = (
        paper + np.array([70, 70, 70]) if light_on_dark else paper * np.array([0.6, 0.72, 0.95])
    )  # light blue lines on paper, lighter lines on a board
    mask = np.zeros((height, width), np.uint8)
    tilt = float(rng.uniform(-0.03, 0.03)) * width
    start = float(rng.uniform(0, spacing))
    for y in np.arange(start, height + abs(tilt), spacing):
        cv2.line(mask, (0, round(y)), (width, round(y + tilt)), 255, thickness)
    if rng.random() < 0.3:  # squared paper
        for x in np.arange(float(rng.uniform(0, spacing)), width, spacing):
            cv2.line(mask, (round(x), 0), (round(x - tilt), height), 255, thickness)
    alpha = mask.astype(np.float32)[..., None] / 255 * float(rng.uniform(0.5, 1.0))
    page[:] = page * (1 - alpha) + np.clip(colour, 0, 255).astype(np.float32) * alpha
    if rng.random() < 0.3:  # the red margin line
        x = round(float(rng.uniform(0.05, 0.3)) * width)
        cv2.line(page, (x, 0), (x, height), (200.0, 80.0, 80.0), thickness + 1)


def _specks(page: np.ndarray, rng: np.random.Generator, kinds: set[str], pen: np.ndarray, side: int) -> None:
    """Dust, dots and crumbs in the pen's colour, anywhere on the page."""
    kinds.add("specks")
    height, width = page.shape[:2]
    colour = tuple(float(v) for v in pen)
    for _ in range(int(rng.integers(3, 40))):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = max(1, round(float(rng.uniform(0.002, 0.015)) * side))
        cv2.circle(page, centre, radius, colour, -1, lineType=cv2.LINE_AA)


def _light(page: np.ndarray, rng: np.random.Generator, kinds: set[str], conditions: Conditions) -> None:
    """Uneven light: a ramp or vignette, a soft shadow, the dark table beyond the page's edge."""
    height, width = page.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys /= height
    xs /= width
    light = np.ones((height, width), np.float32)
    if rng.random() < conditions.gradient:
        kinds.add("gradient")
        depth = float(rng.uniform(0.2, 0.65))
        if rng.random() < 0.7:  # a ramp in any direction
            angle = float(rng.uniform(0, 2 * np.pi))
            ramp = np.cos(angle) * xs + np.sin(angle) * ys
            ramp = (ramp - ramp.min()) / max(1e-6, float(ramp.max() - ramp.min()))
            light *= 1 - depth * ramp
        else:  # a vignette around an off-centre spot
            cx, cy = rng.uniform(0.2, 0.8, size=2)
            light *= 1 - depth * np.clip(((xs - cx) ** 2 + (ys - cy) ** 2) / 0.5, 0, 1)
    if rng.random() < conditions.shadow:
        kinds.add("shadow")
        light *= 1 - float(rng.uniform(0.3, 0.6)) * _shadow_mask(rng, xs, ys, min(width, height))
    if rng.random() < conditions.edge:
        kinds.add("edge")
        beyond = _edge_mask(rng, xs, ys)
        table = np.asarray(rng.uniform(10, 90, size=3), np.float32)
        page[:] = page * (1 - beyond[..., None]) + table * beyond[..., None]
    page *= light[..., None]


def _shadow_mask(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, side: int) -> np.ndarray:
    """1 in the shadow, 0 in the light, a soft edge between: a hand's or phone's shadow seen as a
    half-plane or an ellipse entering from outside."""
    if rng.random() < 0.5:
        angle = float(rng.uniform(0, 2 * np.pi))
        distance = np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5) - float(rng.uniform(-0.3, 0.3))
    else:
        cx, cy = rng.uniform(-0.2, 1.2, size=2)
        rx, ry = rng.uniform(0.2, 0.6, size=2)
        distance = 1 - np.sqrt(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)
    softness = float(rng.uniform(0.005, 0.08))
    return np.asarray(np.clip(distance / softness + 0.5, 0, 1), np.float32)


def _edge_mask(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """1 beyond the page's edge, slightly skewed, along one side, 3 to 15 % deep."""
    side = int(rng.integers(0, 4))
    along, across = (ys, xs) if side in (0, 1) else (xs, ys)
    if side in (1, 3):
        across = 1 - across
    depth = float(rng.uniform(0.03, 0.15)) + float(rng.uniform(-0.03, 0.03)) * (along - 0.5)
    return np.asarray(np.clip((depth - across) * 200, 0, 1), np.float32)


def _optics(page: np.ndarray, rng: np.random.Generator, kinds: set[str], scan: bool, side: int) -> None:
    """Lens blur (always a little, sometimes a lot) and sensor noise (always some)."""
    sigma = 0.5 + (float(rng.uniform(0.003, 0.012)) * side if not scan and rng.random() < 0.4 else 0.0)
    if sigma > 0.5:
        kinds.add("blur")
    cv2.GaussianBlur(page, (0, 0), sigma, dst=page)
    strong = not scan and rng.random() < 0.5
    if strong:
        kinds.add("noise")
    noise_sigma = float(rng.uniform(6, 22) if strong else rng.uniform(0.5, 3))
    page += rng.standard_normal(page.shape, dtype=np.float32) * np.float32(noise_sigma)
    np.clip(page, 0, 255, out=page)


def _encode(
    page: np.ndarray, rng: np.random.Generator, kinds: set[str], conditions: Conditions, scan: bool
) -> tuple[bytes, str]:
    """JPEG (quality 30-95) for most photos, PNG for most scans; some scans are 1-bit."""
    pixels = np.rint(page).astype(np.uint8)
    buffer = io.BytesIO()
    if scan and rng.random() < conditions.binary:
        kinds.update(("binary", "png"))
        gray = np.asarray(Image.fromarray(pixels).convert("L"))
        _, binary = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)  # the scanner's own
        Image.fromarray(binary).convert("1").save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue(), "png"
    image = Image.fromarray(pixels)
    if scan:
        image = image.convert("L")
    if rng.random() < (0.3 if scan else 0.7):
        kinds.add("jpeg")
        image.save(buffer, format="JPEG", quality=int(rng.integers(30, 96)))
        return buffer.getvalue(), "jpg"
    kinds.add("png")
    image.save(buffer, format="PNG", compress_level=1)  # level 6 took most of the rendering time
    return buffer.getvalue(), "png"
