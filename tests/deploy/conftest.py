"""Real tools for the deployment checks: kubectl (kustomize), promtool/prometheus, node + CRD schemas."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..conftest import ROOT
from .kserve_schema import KServeSchemas

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# Kustomizations an operator applies (deploy/k8s/<name>).
SERVING = ["base", "overlays/cpu", "overlays/gpu"]
SCORING = ["scoring/cpu", "scoring/gpu"]
# Each component rendered on top of what it patches, as an overlay of the operator's would.
COMPONENTS = {
    "components/monitoring": ["base"],
    "components/custom-metrics-hpa": ["base"],
    "components/gpu": ["base", "scoring/base"],
}
KUSTOMIZATIONS = [*SERVING, *SCORING, *COMPONENTS]
CRD_PACKAGE = "@kubernetes-models/prometheus-operator@6.0.0"
# KServe's API types come from its Python SDK (see kserve_schema.py): the release the manifests target.
KSERVE_VERSION = "0.21.0"


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed here (.ci/run installs it)")
    return path


def _kustomize(kubectl: str, folder: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True, timeout=120
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _component_overlay(folder: Path, component: str, resources: list[str]) -> Path:
    """A kustomization of the resources plus the one component (kustomize wants relative paths)."""
    folder.mkdir(parents=True)
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / resource, folder) for resource in resources],
        "components": [os.path.relpath(K8S / component, folder)],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    return folder


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Every kustomization rendered by the real `kubectl kustomize`, as a list of objects."""
    kubectl = require("kubectl")
    output = {name: _kustomize(kubectl, K8S / name) for name in SERVING + SCORING}
    scratch = tmp_path_factory.mktemp("component-overlays")
    for component, resources in COMPONENTS.items():
        folder = _component_overlay(scratch / component.replace("/", "-"), component, resources)
        output[component] = _kustomize(kubectl, folder)
    return output


@pytest.fixture(scope="session")
def crd_validator() -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Validates Prometheus Operator objects with the schemas generated from its CRDs (npm package)."""
    node = require("node")
    npm = require("npm")
    cache = ROOT / ".cache" / "crd-schemas"
    if not (cache / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(cache), CRD_PACKAGE],
            check=True,
            timeout=300,
            capture_output=True,
        )
    script = cache / "validate_crds.mjs"
    script.write_text((Path(__file__).parent / "validate_crds.mjs").read_text())

    def validate(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        result = subprocess.run(
            [node, str(script)],
            input=json.dumps(objects),
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
            cwd=cache,
        )
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    return validate


@pytest.fixture(scope="session")
def kserve_objects() -> list[dict[str, Any]]:
    """deploy/kserve rendered by the real `kubectl kustomize`."""
    return _kustomize(require("kubectl"), DEPLOY / "kserve")


@pytest.fixture(scope="session")
def kserve_schemas() -> KServeSchemas:
    """KServe's API types from its SDK wheel on PyPI, downloaded once into .cache/ (never installed:
    only its generated model files are read)."""
    cache = ROOT / ".cache" / "kserve-sdk" / KSERVE_VERSION
    models = cache / "kserve" / "models"
    if not models.is_dir():
        download = cache / "wheel"
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:"]
        subprocess.run(
            [*pip, "--dest", str(download), f"kserve=={KSERVE_VERSION}"],
            check=True,
            timeout=300,
            capture_output=True,
        )
        (wheel,) = download.glob(f"kserve-{KSERVE_VERSION}-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(
                cache, [name for name in archive.namelist() if name.startswith("kserve/models/")]
            )
    return KServeSchemas(models)
