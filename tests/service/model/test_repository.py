from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.errors import StartupError
from service.model.repository import available_versions, resolve

from ...conftest import ROOT


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for version in ("1", "3"):
        shutil.copytree(ROOT / "models" / "mnist" / "1", tmp_path / "mnist" / version)
    (tmp_path / "mnist" / "7").mkdir()  # no metadata.json: not a version (e.g. a publish in progress)
    (tmp_path / "mnist" / ".staging-abc").mkdir()
    return tmp_path


def test_latest_is_the_highest_complete_version(repo: Path) -> None:
    assert available_versions(repo / "mnist") == [1, 3]
    assert resolve(repo, "mnist", "latest", "onnx").version == "3"
    assert resolve(repo, "mnist", "1", "torchscript").version == "1"


@pytest.mark.parametrize(
    ("name", "version", "fragment"),
    [
        ("../mnist", "1", "invalid model name"),
        ("mnist/../../etc", "1", "invalid model name"),
        ("mnist", "../1", "invalid model version"),
        ("mnist", "2", "has no version 2"),
        ("digits", "latest", "no versions of model 'digits'"),
    ],
)
def test_bad_names_and_versions_are_refused(repo: Path, name: str, version: str, fragment: str) -> None:
    with pytest.raises(StartupError, match=fragment):
        resolve(repo, name, version, "onnx")


def test_tampered_or_missing_artifacts_are_refused(repo: Path) -> None:
    (repo / "mnist" / "3" / "model.pt").write_bytes(b"not the model")
    with pytest.raises(StartupError, match=r"checksum mismatch for model\.pt"):
        resolve(repo, "mnist", "3", "onnx")  # every artifact is checked, not only the backend's
    (repo / "mnist" / "1" / "model.onnx").unlink()
    with pytest.raises(StartupError, match=r"model\.onnx is missing"):
        resolve(repo, "mnist", "1", "onnx")


def test_contract_is_checked(repo: Path) -> None:
    path = repo / "mnist" / "3" / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["outputs"][0]["shape"] = [-1, 100]
    path.write_text(json.dumps(metadata))
    with pytest.raises(StartupError, match="contract mismatch"):
        resolve(repo, "mnist", "3", "onnx")
    path.write_text("{broken")
    with pytest.raises(StartupError, match=r"unreadable metadata\.json"):
        resolve(repo, "mnist", "3", "onnx")
