"""Find a model version in the repository and verify it before anything is loaded.

Layout (as written by ``training``): ``<repository>/<name>/<version>/{model.onnx, model.pt,
metadata.json}``. A version is usable only if its metadata declares the contract this service
speaks and every artifact matches the SHA-256 recorded for it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import StartupError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
BACKEND_ARTIFACTS = {"onnx": "model.onnx", "torchscript": "model.pt"}
EXPECTED_INPUT = {"datatype": "UINT8", "shape": [-1, 1, 28, 28]}
EXPECTED_OUTPUT = {"datatype": "FP32", "shape": [-1, 10]}


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    folder: Path
    metadata: dict[str, Any]

    @functools.cached_property  # read for every request
    def input_name(self) -> str:
        return str(self.metadata["inputs"][0]["name"])

    @functools.cached_property
    def output_name(self) -> str:
        return str(self.metadata["outputs"][0]["name"])

    def artifact(self, backend: str) -> Path:
        return self.folder / BACKEND_ARTIFACTS[backend]


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def available_versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and (p / "metadata.json").is_file()
    )


def _check_contract(metadata: dict[str, Any], where: str) -> None:
    try:
        (model_input,) = metadata["inputs"]
        (model_output,) = metadata["outputs"]
        declared_in = {k: model_input[k] for k in EXPECTED_INPUT}
        declared_out = {k: model_output[k] for k in EXPECTED_OUTPUT}
        model_input["name"], model_output["name"], metadata["artifacts"]
    except (KeyError, TypeError, ValueError) as error:
        raise StartupError(f"{where}: metadata.json lacks the input/output contract ({error!r})") from error
    if declared_in != EXPECTED_INPUT or declared_out != EXPECTED_OUTPUT:
        raise StartupError(
            f"{where}: contract mismatch: model takes {declared_in} and returns {declared_out}, "
            f"this server needs {EXPECTED_INPUT} -> {EXPECTED_OUTPUT}"
        )


def resolve(repository: Path, name: str, version: str, backend: str) -> ModelVersion:
    """Pick and verify one version; raise StartupError with a one-line reason otherwise."""
    if not NAME_PATTERN.match(name):
        raise StartupError(f"invalid model name {name!r}: letters, digits, '.', '_' and '-' only")
    if version != "latest" and not version.isdigit():
        raise StartupError(f"invalid model version {version!r}: a number or 'latest'")
    if backend not in BACKEND_ARTIFACTS:
        raise StartupError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_ARTIFACTS)}")
    model_dir = Path(repository) / name
    versions = available_versions(model_dir)
    if not versions:
        raise StartupError(
            f"no versions of model {name!r} in {repository} (expected {model_dir}/<n>/metadata.json)"
        )
    chosen = str(versions[-1]) if version == "latest" else str(int(version))
    if int(chosen) not in versions:
        raise StartupError(f"model {name!r} has no version {version} in {repository} (have {versions})")
    folder = model_dir / chosen
    where = f"{name} version {chosen}"
    try:
        metadata = json.loads((folder / "metadata.json").read_text())
    except (OSError, ValueError) as error:
        raise StartupError(f"{where}: unreadable metadata.json ({error})") from error
    _check_contract(metadata, where)
    artifact = BACKEND_ARTIFACTS[backend]
    if artifact not in metadata["artifacts"]:
        raise StartupError(f"{where}: no {artifact} for the {backend} backend")
    for file_name, record in metadata["artifacts"].items():
        path = folder / file_name
        if not path.is_file():
            raise StartupError(f"{where}: artifact {file_name} is missing")
        if _sha256(path) != record.get("sha256"):
            raise StartupError(f"{where}: checksum mismatch for {file_name}; refusing to load it")
    return ModelVersion(name=name, version=chosen, folder=folder, metadata=metadata)
