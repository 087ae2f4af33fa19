"""KServe: the ServingRuntime and InferenceService validate strictly against KServe's API types, their
settings are ones the server accepts, and the server started as the runtime starts it serves the
storage initializer's /mnt/models layout to tritonclient."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import tritonclient.http as triton

from service.settings import Settings, load_settings
from training.data import MnistArrays

from ..conftest import ROOT
from ..integration.harness import start_server
from .kserve_schema import KServeSchemas

KNOWN_SETTINGS = {f"MNIST_{name.upper()}" for name in Settings.__dataclass_fields__}


def _kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (obj,) = [obj for obj in objects if obj["kind"] == kind]
    return obj


def _runtime_settings(runtime: dict[str, Any], service: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The container's args with KServe's {{.Name}} filled in, and its environment."""
    container = runtime["spec"]["containers"][0]
    args = [arg.replace("{{.Name}}", service["metadata"]["name"]) for arg in container["args"]]
    return args, {env["name"]: env["value"] for env in container["env"]}


def test_both_objects_are_valid_against_kserve_schemas(kserve_objects, kserve_schemas: KServeSchemas) -> None:
    assert sorted(obj["kind"] for obj in kserve_objects) == ["InferenceService", "ServingRuntime"]
    for obj in kserve_objects:
        kserve_schemas.validate(obj)  # raises on an unknown field, a wrong type or a missing field


TYPOS: dict[str, Callable[[dict[str, Any]], None]] = {
    "spec.predictr": lambda isvc: isvc["spec"].update(predictr=isvc["spec"]["predictor"]),
    "predictor.model.storageUrl": lambda isvc: isvc["spec"]["predictor"]["model"].update(storageUrl="s3://x"),
    "predictor.minReplica": lambda isvc: isvc["spec"]["predictor"].update(minReplica=1),
    "metadata.lables": lambda isvc: isvc["metadata"].update(lables={}),
}
RUNTIME_TYPOS: dict[str, Callable[[dict[str, Any]], None]] = {
    "spec.protocolVersion": lambda rt: rt["spec"].update(protocolVersion=["v2"]),
    "supportedModelFormats[0].autoselect": lambda rt: rt["spec"]["supportedModelFormats"][0].update(
        autoselect=True
    ),
    "containers[0].envs": lambda rt: rt["spec"]["containers"][0].update(envs=[]),
    "readinessProbe.httpGet.pth": lambda rt: rt["spec"]["containers"][0]["readinessProbe"]["httpGet"].update(
        pth="/"
    ),
}


@pytest.mark.parametrize("typo", list(TYPOS) + list(RUNTIME_TYPOS))
def test_the_kserve_validation_rejects_misspelt_fields(
    kserve_objects, kserve_schemas: KServeSchemas, typo: str
) -> None:
    kind = "InferenceService" if typo in TYPOS else "ServingRuntime"
    bad = copy.deepcopy(_kind(kserve_objects, kind))
    (TYPOS | RUNTIME_TYPOS)[typo](bad)
    with pytest.raises(jsonschema.ValidationError, match="Additional properties are not allowed"):
        kserve_schemas.validate(bad)


def test_the_kserve_validation_rejects_wrong_types_and_missing_fields(kserve_objects, kserve_schemas) -> None:
    isvc = copy.deepcopy(_kind(kserve_objects, "InferenceService"))
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(jsonschema.ValidationError, match="not of type 'integer'"):
        kserve_schemas.validate(isvc)
    isvc = copy.deepcopy(_kind(kserve_objects, "InferenceService"))
    del isvc["spec"]["predictor"]["model"]["modelFormat"]
    with pytest.raises(jsonschema.ValidationError, match="'modelFormat' is a required property"):
        kserve_schemas.validate(isvc)


def test_the_inference_service_runs_on_this_runtime(kserve_objects) -> None:
    runtime, isvc = _kind(kserve_objects, "ServingRuntime"), _kind(kserve_objects, "InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"] == ["v2"]
    assert "storageUri" in model


def test_runtime_settings_are_ones_the_server_accepts(kserve_objects) -> None:
    runtime, isvc = _kind(kserve_objects, "ServingRuntime"), _kind(kserve_objects, "InferenceService")
    args, env = _runtime_settings(runtime, isvc)
    assert set(env) <= KNOWN_SETTINGS, set(env) - KNOWN_SETTINGS
    settings = load_settings(args, env)  # the server's own parser: raises on a bad value
    # The storage initializer's folder is the model repository; the model is named like the service.
    assert (
        settings.model_repository == Path("/mnt/models") and settings.model_name == isvc["metadata"]["name"]
    )
    container = runtime["spec"]["containers"][0]
    assert [p["containerPort"] for p in container["ports"]] == [settings.port] == [8080]  # KServe's port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == settings.port
    annotations = runtime["spec"]["annotations"]
    assert annotations["prometheus.kserve.io/port"] == str(settings.port)


@pytest.mark.starts_server
def test_the_runtime_serves_the_storage_initializer_layout_to_tritonclient(
    kserve_objects, tmp_path: Path, mnist: MnistArrays
) -> None:
    """storageUri holds a model repository (this repository's models/); the storage initializer copies
    it to /mnt/models; the server started with the runtime's settings answers tritonclient there."""
    runtime, isvc = _kind(kserve_objects, "ServingRuntime"), _kind(kserve_objects, "InferenceService")
    mnt_models = tmp_path / "mnt" / "models"
    shutil.copytree(ROOT / "models", mnt_models)
    args, env = _runtime_settings(runtime, isvc)
    args = [arg for arg in args if not arg.startswith("--host")]  # the harness listens on loopback
    env |= {"MNIST_MODEL_REPOSITORY": str(mnt_models), "MNIST_METRICS_DIR": str(tmp_path / "metrics")}
    del env["MNIST_PORT"]  # the harness picks a free port
    server = start_server(tmp_path, *args, "--model-repository", str(mnt_models), env=env)
    try:
        # The call deploy/README.md shows, against the ingress, with the service's host name.
        client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
        headers = {"Host": "mnist.default.example.com"}
        images = mnist.test_images[:8].numpy().reshape(8, 784)
        pixels = triton.InferInput("pixels", [8, 784], "UINT8")
        pixels.set_data_from_numpy(images, binary_data=True)
        result = client.infer(isvc["metadata"]["name"], [pixels], headers=headers)
        digits = result.as_numpy("probabilities").argmax(axis=1)
        assert (digits == mnist.test_labels[:8].numpy()).mean() >= 7 / 8
        assert client.is_model_ready(isvc["metadata"]["name"], headers=headers)
        assert np.isclose(result.as_numpy("probabilities").sum(axis=1), 1, atol=1e-4).all()
    finally:
        assert server.stop() == 0, server.log()
