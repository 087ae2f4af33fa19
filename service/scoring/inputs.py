"""What `mnist-score` reads: image files (directories, globs), IDX files and .npy/.npz arrays.

Every input becomes an ordered list of ``Item``s with a stable id, so that output rows follow input
order, shards partition the list deterministically, and a resumed run can check what it already did.
Arrays are memory-mapped where the format allows; ``np.load`` never unpickles (allow_pickle=False).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.inputs.idx import is_idx, read_idx

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
LABEL_KEYS = ("labels", "y", "targets")
IMAGE_KEYS = ("images", "x", "pixels")


class InputError(ValueError):
    """An input the run cannot start with (missing path, unreadable array, mismatched labels)."""


@dataclass(frozen=True)
class Item:
    id: str
    path: Path
    index: int | None = None  # position inside an array input; None for an image file
    label: int | None = None


@dataclass
class Inputs:
    items: list[Item]
    arrays: dict[Path, np.ndarray]  # array inputs, [N, 28, 28] uint8, by path


def _as_images(array: np.ndarray, where: str) -> np.ndarray:
    if array.ndim == 2 and array.shape[1] == 784:
        array = array.reshape(-1, 28, 28)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array.reshape(-1, 28, 28)
    if array.ndim != 3 or array.shape[1:] != (28, 28):
        raise InputError(f"{where}: expected [N,28,28] or [N,784] images, got shape {list(array.shape)}")
    if array.dtype != np.uint8:
        raise InputError(f"{where}: expected uint8 pixels, got {array.dtype}")
    return array


def _load_array(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        if is_idx(path):
            return _as_images(read_idx(path), str(path)), None
        if path.suffix == ".npy":
            return _as_images(np.load(path, mmap_mode="r", allow_pickle=False), str(path)), None
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            image_key = next((k for k in IMAGE_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
            if image_key is None:
                raise InputError(f"{path}: no image array (looked for {', '.join(IMAGE_KEYS)})")
            label_key = next((k for k in LABEL_KEYS if k in keys), None)
            images = _as_images(archive[image_key], f"{path}[{image_key}]")
            return images, archive[label_key] if label_key else None
    except (OSError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"{path}: cannot read array ({error})") from error


def _expand(argument: str) -> list[Path]:
    path = Path(argument)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if path.is_file():
        return [path]
    if glob.has_magic(argument):
        # glob.glob, not Path.glob: the pattern is the user's and may be absolute
        return sorted(Path(p) for p in glob.glob(argument, recursive=True) if Path(p).is_file())  # noqa: PTH207
    raise InputError(f"{argument}: no such file or directory")


def _read_labels(path: Path, count: int) -> np.ndarray:
    try:
        labels = np.asarray(read_idx(path) if is_idx(path) else np.load(path, allow_pickle=False))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: cannot read labels ({error})") from error
    if labels.ndim != 1 or len(labels) != count:
        raise InputError(f"{path}: {labels.shape} labels for {count} images")
    return labels


def collect(arguments: list[str], labels_path: Path | None = None, label_from_parent: bool = False) -> Inputs:
    """Expand the command-line inputs, in order, into items."""
    items: list[Item] = []
    arrays: dict[Path, np.ndarray] = {}
    for argument in arguments:
        for path in _expand(argument):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                parent = path.parent.name
                label = int(parent) if label_from_parent and parent.isdigit() and len(parent) == 1 else None
                items.append(Item(str(path), path, None, label))
                continue
            images, labels = _load_array(path)
            if labels_path is not None and labels is None:
                labels = _read_labels(labels_path, len(images))
            arrays[path] = images
            items.extend(
                Item(f"{path}:{i}", path, i, int(labels[i]) if labels is not None else None)
                for i in range(len(images))
            )
    return Inputs(items, arrays)


def shard(items: list[Item], num_shards: int, shard_index: int) -> list[Item]:
    """Every ``num_shards``-th item starting at ``shard_index``: disjoint shards whose union is all."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise InputError(f"shard index {shard_index} is not within 0..{num_shards - 1}")
    return items[shard_index::num_shards]
