"""The training loop: train, evaluate, early-stop, and report metrics a reader can trust."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from training.augment import photo_like
from training.config import TrainConfig
from training.data import MnistArrays, split_train_val
from training.models import NUM_CLASSES, Normalize


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    per_class_accuracy: list[float]
    confusion: list[list[int]]  # rows: true digit, columns: predicted digit

    def summary(self) -> dict[str, Any]:
        return {"loss": self.loss, "accuracy": self.accuracy, "per_class_accuracy": self.per_class_accuracy}


@dataclass
class TrainResult:
    network: nn.Module
    history: list[dict[str, float]]
    test: Evaluation
    validation: Evaluation
    best_epoch: int
    stopped_early: bool
    seconds: float
    device: str
    extras: dict[str, Any] = field(default_factory=dict)


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 28, 28] in [0, 1] (the export wrapper does the same)."""
    return pixels.unsqueeze(1).to(torch.float32) / 255.0


def loss_fn(name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if name == "cross-entropy":
        return F.cross_entropy(logits, labels)
    if name == "mse":
        return F.mse_loss(torch.softmax(logits, dim=1), F.one_hot(labels, NUM_CLASSES).to(logits.dtype))
    raise ValueError(f"unknown loss {name!r}")


def make_optimizer(config: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr)  # no momentum: exactly w = w - lr * grad
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def batches(count: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
    return list(order.split(batch_size))


@torch.no_grad()
def evaluate(
    network: nn.Module, normalize: Normalize, images: torch.Tensor, labels: torch.Tensor, loss: str
) -> Evaluation:
    network.eval()
    confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    total_loss = 0.0
    for index in batches(len(labels), 1000, None):
        x, y = to_unit(images[index]), labels[index]
        logits = network(normalize(x))
        total_loss += loss_fn(loss, logits, y).item() * len(index)
        predicted = logits.argmax(1)
        confusion += torch.bincount(y.cpu() * NUM_CLASSES + predicted.cpu(), minlength=NUM_CLASSES**2).view(
            NUM_CLASSES, NUM_CLASSES
        )
    per_class = (confusion.diag() / confusion.sum(1).clamp(min=1)).tolist()
    return Evaluation(
        loss=total_loss / len(labels),
        accuracy=confusion.diag().sum().item() / len(labels),
        per_class_accuracy=[round(v, 6) for v in per_class],
        confusion=confusion.tolist(),
    )


class EarlyStopping:
    """Remember the epoch with the lowest validation loss; say when ``patience`` epochs brought nothing."""

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.best_loss = math.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] = {}
        self.stale = 0

    def should_stop(self, epoch: int, val_loss: float, network: nn.Module) -> bool:
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.stale = val_loss, epoch, 0
            if self.patience is not None:  # copying weights is only worth it when we may roll back
                self.best_state = copy.deepcopy(network.state_dict())
        else:
            self.stale += 1
        return self.patience is not None and self.stale >= self.patience


def validation_split(config: TrainConfig, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training and validation indices among ``count`` training digits: chosen by ``split_seed``
    when set, so that runs with other seeds are judged on the same held-out digits."""
    return split_train_val(
        count, config.val_size, config.seed if config.split_seed is None else config.split_seed
    )


def fit(config: TrainConfig, network: nn.Module, data: MnistArrays, device: torch.device) -> TrainResult:
    """Train ``network`` per ``config``; return it (best validation epoch) with its metrics."""
    torch.manual_seed(config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)  # on the CPU so the order ignores the device
    augment = torch.Generator().manual_seed(config.seed + 1)
    train_index, val_index = validation_split(config, len(data.train_labels))
    limit = 512 if config.dry_run else None
    train_x, train_y = data.train_images[train_index].to(device), data.train_labels[train_index].to(device)
    val_x, val_y = (
        data.train_images[val_index][:limit].to(device),
        data.train_labels[val_index][:limit].to(device),
    )
    test_x, test_y = data.test_images[:limit].to(device), data.test_labels[:limit].to(device)

    network.to(device)
    normalize = Normalize()
    optimizer = make_optimizer(config, network.parameters())
    steps_per_epoch = math.ceil(len(train_y) / config.batch_size)
    if config.dry_run:
        steps_per_epoch = min(steps_per_epoch, config.dry_run_batches)
    scheduler = (
        torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.epochs * steps_per_epoch)
        if config.lr_schedule == "onecycle"
        else None
    )

    history: list[dict[str, float]] = []
    stopper = EarlyStopping(config.patience)
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        network.train()
        epoch_start, seen, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
        order = batches(len(train_y), config.batch_size, shuffle)[:steps_per_epoch]
        bar = tqdm(order, desc=f"epoch {epoch}/{config.epochs}", disable=not config.progress, leave=False)
        for index in bar:
            x, y = to_unit(train_x[index.to(device)]), train_y[index.to(device)]
            if config.augment:
                x = photo_like(x, augment)
            logits = network(normalize(x))
            loss = loss_fn(config.loss, logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        validation = evaluate(network, normalize, val_x, val_y, config.loss)
        history.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "val_loss": validation.loss,
                "val_accuracy": validation.accuracy,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - epoch_start,
            }
        )
        print(
            f"epoch {epoch}/{config.epochs}: train loss {loss_sum / seen:.4f} acc {correct / seen:.4f} | "
            f"val loss {validation.loss:.4f} acc {validation.accuracy:.4f} | {history[-1]['seconds']:.1f}s",
            flush=True,
        )
        if stopper.should_stop(epoch, validation.loss, network):
            print(f"early stopping: validation loss has not improved for {stopper.stale} epochs", flush=True)
            break

    stopped_early = len(history) < config.epochs
    best_epoch = len(history)
    if config.patience is not None:
        network.load_state_dict(stopper.best_state)  # with early stopping, the best epoch is the result
        best_epoch = stopper.best_epoch
    network.eval()
    network.cpu()
    cpu_norm = Normalize()
    return TrainResult(
        network=network,
        history=history,
        test=evaluate(network, cpu_norm, test_x.cpu(), test_y.cpu(), config.loss),
        validation=evaluate(network, cpu_norm, val_x.cpu(), val_y.cpu(), config.loss),
        best_epoch=best_epoch,
        stopped_early=stopped_early,
        seconds=time.perf_counter() - started,
        device=str(device),
    )
