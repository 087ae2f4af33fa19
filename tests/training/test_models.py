from __future__ import annotations

import pytest
import torch

from training.models import ARCHITECTURES, MLP, ServingModel, build_network, count_parameters


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_maps_images_to_ten_logits(arch: str) -> None:
    network = build_network(arch).eval()
    logits = network(torch.randn(3, 1, 28, 28))
    assert logits.shape == (3, 10)
    assert torch.isfinite(logits).all()


def test_tutorial_mlp_is_784_128_10() -> None:
    network = build_network("mlp")
    linear = [m for m in network.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(784, 128), (128, 10)]
    assert count_parameters(network) == 784 * 128 + 128 + 128 * 10 + 10


def test_deep_mlp_has_no_activation_after_its_last_layer() -> None:
    network = build_network("mlp-deep")
    assert isinstance(network, MLP)
    linear = [m for m in network.layers if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(784, 512), (512, 512), (512, 10)]
    assert isinstance(network.layers[-1], torch.nn.Linear)
    # Logits can be negative only if nothing like ReLU clips them.
    assert (network(torch.randn(64, 1, 28, 28)) < 0).any()


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_mlp_activation_and_hidden_sizes_are_configurable(activation: str) -> None:
    network = build_network("mlp", hidden=(64, 32), activation=activation)
    kinds = {type(m).__name__.lower() for m in network.modules()}
    assert activation in kinds
    linear = [m for m in network.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linear] == [64, 32, 10]


def test_lstm_reads_28_rows_of_28_pixels() -> None:
    network = build_network("lstm")
    assert network.lstm.input_size == 28  # type: ignore[union-attr]
    seen: list[tuple[int, ...]] = []
    network.lstm.register_forward_hook(lambda _m, inputs, _o: seen.append(tuple(inputs[0].shape)))  # type: ignore[union-attr,operator]
    network(torch.randn(5, 1, 28, 28))
    assert seen == [(5, 28, 28)]


def test_serving_model_takes_uint8_pixels_and_returns_probabilities() -> None:
    model = ServingModel(build_network("mlp")).eval()
    pixels = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    probabilities = model(pixels)
    assert probabilities.dtype == torch.float32 and probabilities.shape == (4, 10)
    assert torch.allclose(probabilities.sum(1), torch.ones(4), atol=1e-5)
    expected = torch.softmax(model.network((pixels.float() / 255 - 0.1307) / 0.3081), 1)
    assert torch.allclose(probabilities, expected, atol=1e-6)


def test_unknown_architecture_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build_network("resnet")
