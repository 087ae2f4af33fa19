from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=600, check=False)


TRAIN_FLAGS = (
    "--arch",
    "--epochs",
    "--batch-size",
    "--lr",
    "--optimizer",
    "--activation",
    "--loss",
    "--seed",
    "--split-seed",
    "--device",
    "--data-dir",
    "--output",
    "--dry-run",
    "--patience",
    "--augment",
    "cnn",
    "lstm",
    "mlp-deep",
)
SCORE_FLAGS = (
    "--output",
    "--resume",
    "--num-shards",
    "--shard-index",
    "JOB_COMPLETION_INDEX",
    "--labels",
    "--probabilities",
    "--workers",
    "--batch-size",
    "--quiet",
    "--backend",
    "--device",
)


@pytest.mark.parametrize(("command", "flags"), [("mnist-train", TRAIN_FLAGS), ("mnist-score", SCORE_FLAGS)])
def test_help_explains_every_flag(command: str, flags: tuple[str, ...]) -> None:
    result = _run(str(BIN / command), "--help")
    assert result.returncode == 0
    for flag in flags:
        assert flag in result.stdout


def _dry_run(mnist_dir: Path, *extra: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    flags = ["--arch", "mlp", "--dry-run", "--no-progress", "--data-dir", str(mnist_dir), *extra]
    return _run(str(BIN / "mnist-train"), *flags, cwd=cwd)


def test_dry_run_publishes_into_an_explicit_repository(tmp_path: Path, mnist_dir: Path) -> None:
    result = _dry_run(mnist_dir, "--output", str(tmp_path / "repo"))
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and "per class" in result.stdout
    assert (tmp_path / "repo" / "mnist" / "1" / "metadata.json").is_file()
    assert "FutureWarning" not in result.stderr and "deprecated" not in result.stderr.lower()


def test_dry_run_without_output_publishes_nothing(tmp_path: Path, mnist_dir: Path) -> None:
    result = _dry_run(mnist_dir, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "not published" in result.stdout
    assert not (tmp_path / "models").exists()


def test_missing_data_is_a_clear_error_with_its_own_exit_code(tmp_path: Path) -> None:
    # An empty PATH hides npm, and a data dir with a wrong file fails verification: no source works.
    (tmp_path / "data").mkdir()
    result = subprocess.run(
        [str(BIN / "mnist-train"), "--dry-run", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={
            "PATH": "",
            "HOME": str(tmp_path),
            "http_proxy": "http://127.0.0.1:9",
            "https_proxy": "http://127.0.0.1:9",
        },
    )
    assert result.returncode == 2
    assert "could not get verified MNIST files" in result.stderr
    assert "npm is not installed" in result.stderr and "torchvision download" in result.stderr
    assert list((tmp_path / "data").iterdir()) == []
