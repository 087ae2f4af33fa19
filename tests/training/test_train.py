from __future__ import annotations

import pytest
import torch

from training.augment import photo_like
from training.config import config_for
from training.data import MnistArrays
from training.models import build_network
from training.train import EarlyStopping, fit, loss_fn, make_optimizer, validation_split


@pytest.mark.slow
def test_tutorial_mlp_reaches_95_percent_after_one_epoch_on_real_mnist(mnist: MnistArrays) -> None:
    config = config_for("mlp", epochs=1, progress=False)
    result = fit(config, build_network("mlp"), mnist, torch.device("cpu"))
    assert sum(map(sum, result.test.confusion)) == 10000  # the full test set, not a sample
    assert result.test.accuracy >= 0.95
    assert len(result.history) == 1 and result.history[0]["train_loss"] > result.history[0]["val_loss"] * 0.5


def test_sgd_is_the_plain_update_rule() -> None:
    network = torch.nn.Linear(3, 2)
    config = config_for("mlp", optimizer="sgd", lr=0.5)
    before = [p.detach().clone() for p in network.parameters()]
    optimizer = make_optimizer(config, network.parameters())
    network(torch.ones(1, 3)).sum().backward()
    grads = [p.grad.detach().clone() for p in network.parameters() if p.grad is not None]
    optimizer.step()
    for old, grad, new in zip(before, grads, network.parameters(), strict=True):
        assert torch.allclose(new, old - 0.5 * grad)


def test_mse_loss_compares_softmax_with_one_hot() -> None:
    confident_four = torch.full((1, 10), -30.0)
    confident_four[0, 4] = 30.0
    assert loss_fn("mse", confident_four, torch.tensor([4])).item() < 1e-6
    # All mass on the wrong class: two squared errors of 1 over ten outputs.
    assert loss_fn("mse", confident_four, torch.tensor([7])).item() == pytest.approx(0.2, abs=1e-6)


def test_early_stopping_waits_patience_epochs_and_keeps_the_best_weights() -> None:
    network = torch.nn.Linear(2, 1)
    stopper = EarlyStopping(patience=2)
    losses = [1.0, 0.5, 0.7, 0.4, 0.6, 0.9]
    stops = []
    for epoch, loss in enumerate(losses, start=1):
        with torch.no_grad():
            network.weight.fill_(epoch)  # tag the weights with the epoch they belong to
        stops.append(stopper.should_stop(epoch, loss, network))
    assert stops == [False, False, False, False, False, True]
    assert stopper.best_epoch == 4 and stopper.best_loss == 0.4
    assert stopper.best_state["weight"].eq(4).all()
    assert not EarlyStopping(None).should_stop(1, 1.0, network)  # no patience: never stops


def test_fit_with_patience_returns_the_best_epoch_weights(mnist: MnistArrays) -> None:
    config = config_for("mlp", epochs=3, lr=5.0, optimizer="sgd", patience=1, dry_run=True, progress=False)
    result = fit(config, build_network("mlp"), mnist, torch.device("cpu"))
    best = min(result.history, key=lambda row: row["val_loss"])
    assert result.best_epoch == best["epoch"]
    assert result.stopped_early == (len(result.history) < 3)
    # The returned network is the best epoch's, not the last one's: its validation loss is the best one.
    assert result.validation.loss == pytest.approx(best["val_loss"], rel=1e-5)


def test_augmentation_moves_pixels_but_keeps_the_digit_in_frame(mnist: MnistArrays) -> None:
    images = mnist.train_images[:64].unsqueeze(1).float() / 255
    augmented = photo_like(images, torch.Generator().manual_seed(0))
    assert augmented.shape == images.shape
    assert not torch.allclose(augmented, images)
    assert augmented.min() >= 0 and torch.allclose(augmented.amax((1, 2, 3)), torch.ones(64))
    # The digit stays in the frame: nearly no ink within 2 px of the border, as in MNIST.
    border = augmented.clone()
    border[:, :, 2:-2, 2:-2] = 0
    assert border.sum() < 0.02 * augmented.sum()
    again = photo_like(images, torch.Generator().manual_seed(0))
    assert torch.equal(augmented, again)  # reproducible from the seed alone


def test_augmentation_draws_digits_with_finer_and_bolder_pens(mnist: MnistArrays) -> None:
    images = mnist.train_images[:256].unsqueeze(1).float() / 255
    ink = (photo_like(images, torch.Generator().manual_seed(1)) > 0.5).sum((1, 2, 3)).float()
    before = (images > 0.5).sum((1, 2, 3)).float()
    ratio = ink / before
    assert (ratio < 0.75).sum() >= 10  # fine liners
    assert (ratio > 1.5).sum() >= 10  # markers
    assert 0.8 < ratio.median() < 1.3  # most digits keep about their weight


def test_a_split_seed_holds_out_the_same_digits_whatever_the_seed() -> None:
    _, held_out = validation_split(config_for("cnn-small", seed=0), 60000)
    _, other_seed = validation_split(config_for("cnn-small", seed=1), 60000)
    _, same_split = validation_split(config_for("cnn-small", seed=1, split_seed=0), 60000)
    assert not torch.equal(held_out, other_seed)  # --seed alone moves the split...
    assert torch.equal(held_out, same_split)  # ... --split-seed keeps it
