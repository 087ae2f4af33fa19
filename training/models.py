"""The architectures, and the serving wrapper that puts normalisation inside the exported graph.

Every network takes normalised float images ``[N, 1, 28, 28]`` and returns logits ``[N, 10]``.
``ServingModel`` is what gets exported: raw uint8 pixels in, probabilities out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

# The dataset statistics every MNIST tutorial uses; stored in metadata.json and baked into the graph.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
NUM_CLASSES = 10
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Fully connected layers with no activation after the last one (it feeds softmax / the loss)."""

    def __init__(self, hidden: Sequence[int] = (128,), activation: str = "relu") -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = 28 * 28
        for size in hidden:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
            width = size
        layers.append(nn.Linear(width, NUM_CLASSES))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _conv_block(c_in: int, c_out: int, activation: str) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, bias=False), nn.BatchNorm2d(c_out), ACTIVATIONS[activation]()]


class CNN(nn.Module):
    """Two pairs of 3x3 convolutions with batch norm, each pair pooled, then a small classifier head."""

    def __init__(
        self, channels: Sequence[int] = (32, 64), hidden: int = 128, activation: str = "relu"
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            *_conv_block(1, c1, activation),  # 26x26
            *_conv_block(c1, c1, activation),  # 24x24
            nn.MaxPool2d(2),  # 12x12
            nn.Dropout(0.1),
            *_conv_block(c1, c2, activation),  # 10x10
            *_conv_block(c2, c2, activation),  # 8x8
            nn.MaxPool2d(2),  # 4x4
            nn.Dropout(0.1),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 4 * 4, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            ACTIVATIONS[activation](),
            nn.Dropout(0.3),
            nn.Linear(hidden, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class RowLSTM(nn.Module):
    """Reads the image as a sequence of 28 rows of 28 pixels and classifies from the last hidden state."""

    def __init__(self, hidden: int = 128, layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=28, hidden_size=hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.flatten(1, 2)  # [N, 1, 28, 28] -> [N, 28, 28]: 28 steps of 28 features
        outputs, _ = self.lstm(rows)
        return self.head(outputs[:, -1])


ARCHITECTURES = ("mlp", "mlp-deep", "cnn", "cnn-small", "lstm")


def build_network(arch: str, hidden: Sequence[int] | None = None, activation: str = "relu") -> nn.Module:
    """Build an architecture by name; ``hidden`` overrides the hidden sizes where that makes sense."""
    if arch == "mlp":
        return MLP(hidden or (128,), activation)
    if arch == "mlp-deep":
        return MLP(hidden or (512, 512), activation)
    if arch == "cnn":
        return CNN(activation=activation, hidden=hidden[0] if hidden else 128)
    if arch == "cnn-small":
        # Half the channels of `cnn`: a quarter of the multiply-adds, so a 2-core CPU keeps up with decoding.
        return CNN(channels=(16, 32), activation=activation, hidden=hidden[0] if hidden else 64)
    if arch == "lstm":
        return RowLSTM(hidden=hidden[0] if hidden else 128)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")


class Normalize(nn.Module):
    """Map pixels scaled to [0, 1] to the zero-mean, unit-variance input the networks train on."""

    def __init__(self, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> None:
        super().__init__()
        self.mean = mean
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ServingModel(nn.Module):
    """The exported contract: uint8 pixels [N, 1, 28, 28] (white on black) -> probabilities [N, 10]."""

    def __init__(self, network: nn.Module, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.network = network

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        unit = pixels.to(torch.float32) / 255.0
        return torch.softmax(self.network(self.normalize(unit)), dim=1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(arch: str, network: nn.Module, **options: Any) -> dict[str, Any]:
    """The architecture record written into checkpoints and metadata.json."""
    return {"arch": arch, "parameters": count_parameters(network), **options}
