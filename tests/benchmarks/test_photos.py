"""benchmarks/photo_set/ renders test digits as photos reproducibly; benchmarks/photos.py scores them
through the real server and through mnist-score; benchmarks/preprocess_cost.py times their
preprocessing against a git revision's."""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

from benchmarks.photo_set import (
    EVERYDAY,
    HARSH,
    KINDS,
    MNIST_STROKES,
    NON_DIGITS,
    Conditions,
    non_digit_set,
    photo_set,
    render,
)
from training.data import MnistArrays

from .scripts import run_benchmark


def test_the_set_is_reproducible_from_its_seed_and_records_each_sample_s_damage(mnist: MnistArrays) -> None:
    images, labels = mnist.test_images.numpy(), mnist.test_labels.numpy()
    first = photo_set(images, labels, 40, seed=3)
    again = photo_set(images, labels, 40, seed=3)
    assert [p.data for p in first] == [p.data for p in again]
    assert [p.index for p in photo_set(images, labels, 40, seed=4)] != [p.index for p in first]
    assert len({p.index for p in first}) == 40  # distinct test digits
    for photo in first:
        assert photo.label == labels[photo.index]
        assert set(photo.kinds) <= set(KINDS)
        assert ("photo" in photo.kinds) != ("scan" in photo.kinds)
        assert ("jpeg" in photo.kinds) == (photo.extension == "jpg") != ("png" in photo.kinds)
        with Image.open(io.BytesIO(photo.data)) as image:
            assert image.size == (photo.width, photo.height)
            assert min(image.size) >= 200 and max(image.size) <= 1200
    # A sample does not depend on how many were asked for.
    assert render(images[first[0].index], first[0].label, first[0].index, 3).data == first[0].data


def test_the_undamaged_drawing_is_black_on_white_and_nothing_else(mnist: MnistArrays) -> None:
    digit = mnist.test_images[0].numpy()
    plain = render(digit, 7, 0, seed=0, damaged=False)
    with Image.open(io.BytesIO(plain.data)) as image:
        pixels = np.asarray(image.convert("L"))
    assert plain.extension == "png" and pixels.min() < 30 and np.median(pixels) == 255


def test_a_set_drawn_without_damage_holds_the_same_drawings(mnist: MnistArrays) -> None:
    images, labels = mnist.test_images.numpy(), mnist.test_labels.numpy()
    damaged = photo_set(images, labels, 20, seed=2, conditions=EVERYDAY)
    plain = photo_set(images, labels, 20, seed=2, conditions=EVERYDAY, damaged=False)
    assert [p.index for p in plain] == [p.index for p in damaged]
    drawing = {"photo", "scan", "rotated", "thin_pen", "thick_marker", "png"}  # what is not damage
    for photo, original in zip(plain, damaged, strict=True):
        assert set(photo.kinds) <= drawing and photo.extension == "png"
        assert set(photo.kinds) - {"png"} == set(original.kinds) & drawing - {"png"}
        assert (photo.width, photo.height) == (original.width, original.height)


def test_everyday_conditions_spare_the_digits_what_only_harsh_ones_do(mnist: MnistArrays) -> None:
    images, labels = mnist.test_images.numpy(), mnist.test_labels.numpy()
    harsh_only = {"small", "perspective", "low_contrast", "ruled", "specks", "edge", "binary"}
    everyday = photo_set(images, labels, 60, seed=1, conditions=EVERYDAY)
    assert not harsh_only & {kind for photo in everyday for kind in photo.kinds}
    harsh = photo_set(images, labels, 60, seed=1, conditions=HARSH)
    assert harsh_only & {kind for photo in harsh for kind in photo.kinds}
    assert [p.index for p in everyday] == [p.index for p in harsh]  # the same digits, drawn otherwise


def test_mnist_strokes_keep_the_digits_own_soft_edges_and_take_no_pen_or_shadow(mnist: MnistArrays) -> None:
    images, labels = mnist.test_images.numpy(), mnist.test_labels.numpy()
    own = photo_set(images, labels, 60, seed=1, conditions=MNIST_STROKES)
    assert not {"thin_pen", "thick_marker", "shadow"} & {kind for photo in own for kind in photo.kinds}

    def soft_share(conditions: Conditions) -> float:  # of the inked pixels, those between paper and ink
        shares = []
        for index in range(10):
            drawing = render(images[index], int(labels[index]), index, 0, conditions, damaged=False)
            with Image.open(io.BytesIO(drawing.data)) as image:
                inked = np.asarray(image.convert("L"))
            inked = inked[inked < 250]
            shares.append(float(((inked > 30) & (inked < 225)).mean()))
        return float(np.median(shares))

    assert soft_share(MNIST_STROKES) > 2 * soft_share(EVERYDAY)


def test_non_digits_are_blank_pages_letters_and_scribbles() -> None:
    others = non_digit_set(6, seed=0)
    assert [p.kinds[0] for p in others] == [*NON_DIGITS, *NON_DIGITS]
    assert all(p.label == -1 for p in others)


def test_the_script_scores_the_same_files_through_http_and_mnist_score() -> None:
    output = run_benchmark("photos.py", "--count", "12", "--non-digits", "3", timeout=600)
    summary = re.search(
        r"12 photo-like MNIST test digits \(everyday, seed 0\): "
        r"POST /predict ([\d.]+)%, mnist-score ([\d.]+)%; "
        r"MNIST test \(10,000, mnist-score\) ([\d.]+)%",
        output,
    )
    assert summary is not None, output
    assert summary.group(1) == summary.group(2)  # one preprocessing, one model: the same answers
    assert float(summary.group(3)) > 99
    undamaged = re.search(
        r"the same drawings without damage \(mnist-score\) ([\d.]+)%; "
        r"these digits as MNIST has them ([\d.]+)%",
        output,
    )
    assert undamaged is not None, output
    assert all(0 <= float(share) <= 100 for share in undamaged.groups())
    assert float(undamaged.group(2)) >= 100 * 11 / 12  # the model misreads far fewer MNIST digits
    assert re.search(r"^all\s+12\s+[\d.]+%\s+[\d.]+%\s+\d+$", output, re.MULTILINE), output
    assert re.search(r"preprocessing \(decode \+ to_mnist\) per photo: median [\d.]+ ms", output), output
    assert re.search(
        r"mnist_low_confidence_predictions_total grew by (\d+) \(answers below 0.5: \1\)", output
    )


def test_the_preprocessing_cost_is_compared_with_a_git_revision() -> None:
    output = run_benchmark(
        "preprocess_cost.py", "--baseline", "HEAD", "--count", "8", "--rounds", "1", timeout=300
    )
    for label in ("file -> 28x28", "to_mnist alone"):
        assert re.search(rf"^{label}\s+[\d.]+ ms\s+[\d.]+ ms\s+[\d.]+x$", output, re.MULTILINE), output
