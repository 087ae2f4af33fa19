"""Real tools for the deployment checks: kubectl (kustomize), promtool/prometheus, node + CRD schemas."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..conftest import ROOT

DEPLOY = ROOT / "deploy"
OVERLAYS = ["base", "overlays/cpu", "overlays/gpu"]
CRD_PACKAGE = "@kubernetes-models/prometheus-operator@6.0.0"


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed here (.ci/run installs it)")
    return path


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every kustomization rendered by the real `kubectl kustomize`, as a list of objects."""
    kubectl = require("kubectl")
    output = {}
    for overlay in OVERLAYS:
        result = subprocess.run(
            [kubectl, "kustomize", str(DEPLOY / "k8s" / overlay)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        output[overlay] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
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
