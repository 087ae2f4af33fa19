"""Kubernetes manifests: rendered by kustomize, validated against the real schemas, and consistent
with what the server really accepts (flags, env names, ports, probe paths, drain time)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest

from service.scoring.cli import build_parser as score_parser
from service.settings import Settings, build_parser, load_settings

from ..integration.harness import RunningServer
from .conftest import OVERLAYS

KUBERNETES_VERSION = "1.32.0"
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


def _objects(rendered: dict[str, list[dict[str, Any]]], overlay: str, kind: str) -> list[dict[str, Any]]:
    return [obj for obj in rendered[overlay] if obj["kind"] == kind]


def _one(rendered: dict[str, list[dict[str, Any]]], overlay: str, kind: str) -> dict[str, Any]:
    (obj,) = _objects(rendered, overlay, kind)
    return obj


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_the_kubernetes_schemas(rendered, overlay: str) -> None:
    kinds = {obj["kind"] for obj in rendered[overlay]}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Job",
        "ServiceMonitor",
        "PrometheusRule",
    } <= kinds
    for obj in rendered[overlay]:
        if obj["kind"] in OPERATOR_KINDS:
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)  # raises on any violation


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_operator_objects_are_valid_against_their_crds(
    rendered, crd_validator: Callable, overlay: str
) -> None:
    objects = [obj for obj in rendered[overlay] if obj["kind"] in OPERATOR_KINDS]
    results = crd_validator(objects)
    assert len(results) == 2 and all(result["error"] is None for result in results), results


def test_the_crd_validator_really_rejects_bad_objects(crd_validator: Callable) -> None:
    bad = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "http", "interval": 15}]},
    }
    (result,) = crd_validator([bad])
    assert result["error"] and "interval" in result["error"]


def test_kubernetes_validation_really_rejects_bad_objects() -> None:
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": "eighty"}]},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_in_the_configmap_are_ones_the_server_accepts(rendered, overlay: str) -> None:
    config = _one(rendered, overlay, "ConfigMap")["data"]
    known = {f"MNIST_{name.upper()}" for name in Settings.__dataclass_fields__}
    assert set(config) <= known, set(config) - known
    deployment = _one(rendered, overlay, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    settings = load_settings(container["args"], config)  # the server's own parser: raises on a bad value
    assert {env["name"] for env in container["env"]} <= known
    assert settings.metrics_dir is not None and str(settings.metrics_dir).startswith("/tmp")
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_probes_and_drain_time_match_the_server(rendered, overlay: str, server: RunningServer) -> None:
    config = _one(rendered, overlay, "ConfigMap")["data"]
    pod = _one(rendered, overlay, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    (port,) = container["ports"]
    assert port["containerPort"] == int(config["MNIST_PORT"]) and port["name"] == "http"
    service = _one(rendered, overlay, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    monitor = _one(rendered, overlay, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    paths = [monitor["spec"]["endpoints"][0]["path"]]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
        paths.append(container[probe]["httpGet"]["path"])
    for path in paths:
        assert server.request("GET", path).status == 200, f"{path} is not served"
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = float(config["MNIST_DRAIN_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 5


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_locked_down(rendered, overlay: str) -> None:
    for kind in ("Deployment", "Job"):
        pod = _one(rendered, overlay, kind)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"] and container["resources"]["limits"]


def test_gpu_overlay_asks_for_a_gpu_and_refuses_cpu_fallback(rendered) -> None:
    pod = _one(rendered, "overlays/gpu", "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["containers"][0]["image"].endswith("-gpu")
    assert _one(rendered, "overlays/gpu", "ConfigMap")["data"]["MNIST_DEVICE"] == "cuda"
    assert _one(rendered, "overlays/cpu", "ConfigMap")["data"]["MNIST_DEVICE"] == "cpu"
    assert "nvidia.com/gpu" not in str(_objects(rendered, "overlays/cpu", "Deployment"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scoring_job_is_indexed_and_sharded_with_flags_mnist_score_accepts(rendered, overlay: str) -> None:
    job = _one(rendered, overlay, "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    container = spec["template"]["spec"]["containers"][0]
    assert container["command"] == ["mnist-score"]
    args = [re.sub(r"\$\(JOB_COMPLETION_INDEX\)", "0", arg) for arg in container["args"]]
    parsed = score_parser().parse_args(args)
    assert parsed.num_shards == spec["completions"] and parsed.resume
    index_env = next(env for env in container["env"] if env["name"] == "JOB_COMPLETION_INDEX")
    assert "job-completion-index" in index_env["valueFrom"]["fieldRef"]["fieldPath"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaler_targets_the_deployment_and_a_real_metric(
    rendered, overlay: str, server: RunningServer
) -> None:
    hpa = _one(rendered, overlay, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == _one(rendered, overlay, "Deployment")["metadata"]["name"]
    custom = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    metrics = server.request("GET", "/metrics").body.decode()
    assert custom and all(re.search(rf"^{name}\b", metrics, re.MULTILINE) for name in custom)
    pdb = _one(rendered, overlay, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_server_args_in_the_deployment_parse(rendered) -> None:
    container = _one(rendered, "base", "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert isinstance(build_parser({}).parse_args(container["args"]), argparse.Namespace)
