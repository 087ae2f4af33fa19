"""Pictures for the version folder: training curves and the test confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window; must precede pyplot
import matplotlib.pyplot as plt


def plot_curves(history: list[dict[str, float]], path: Path, title: str) -> None:
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "o-"), ("val", "s--")):
        loss_axis.plot(epochs, [row[f"{split}_loss"] for row in history], style, label=split)
        acc_axis.plot(epochs, [row[f"{split}_accuracy"] for row in history], style, label=split)
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_axis.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for axis in (loss_axis, acc_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion(confusion: list[list[int]], path: Path, title: str) -> None:
    figure, axis = plt.subplots(figsize=(6.5, 5.5))
    image = axis.imshow(confusion, cmap="Blues")
    figure.colorbar(image, ax=axis)
    peak = max(max(row) for row in confusion)
    for true, row in enumerate(confusion):
        for predicted, count in enumerate(row):
            colour = "white" if count > peak / 2 else "black"
            axis.text(predicted, true, str(count), ha="center", va="center", fontsize=7, color=colour)
    axis.set(xlabel="predicted digit", ylabel="true digit", title=title, xticks=range(10), yticks=range(10))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
