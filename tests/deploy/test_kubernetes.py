"""Kubernetes manifests: rendered by kustomize, validated against the real schemas, and consistent
with what the server and mnist-score really accept (flags, env names, ports, probe paths, drain time,
exit codes)."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from PIL import Image

from service.scoring.cli import build_parser as score_parser
from service.settings import Settings, build_parser, load_settings
from training.data import MnistArrays

from ..conftest import ROOT
from ..integration.harness import RunningServer
from .conftest import COMPONENTS, DEPLOY, K8S, KUSTOMIZATIONS, SCORING, SERVING

KUBERNETES_VERSION = "1.32.0"
# The oldest and newest releases whose schemas kubernetes-validate ships that the manifests support:
# 1.29 is the first with per-index backoff for Indexed Jobs on by default.
KUBERNETES_VERSIONS = ("1.29.0", KUBERNETES_VERSION, "1.37.0")
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
# Kinds every cluster serves without extra software (the API server's own groups).
BUILT_IN_KINDS = {
    "ConfigMap",
    "Deployment",
    "HorizontalPodAutoscaler",
    "Job",
    "PersistentVolumeClaim",
    "PodDisruptionBudget",
    "Service",
}
SERVERS = [*SERVING, *COMPONENTS]
KNOWN_SETTINGS = {f"MNIST_{name.upper()}" for name in Settings.__dataclass_fields__}


def _objects(rendered: dict[str, list[dict[str, Any]]], name: str, kind: str) -> list[dict[str, Any]]:
    return [obj for obj in rendered[name] if obj["kind"] == kind]


def _one(rendered: dict[str, list[dict[str, Any]]], name: str, kind: str) -> dict[str, Any]:
    (obj,) = _objects(rendered, name, kind)
    return obj


def _pod(rendered: dict[str, list[dict[str, Any]]], name: str, kind: str) -> dict[str, Any]:
    return _one(rendered, name, kind)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _config(rendered: dict[str, list[dict[str, Any]]], name: str) -> dict[str, str]:
    """The server's ConfigMap (the monitoring component adds the dashboard's)."""
    (config,) = [
        c["data"]
        for c in _objects(rendered, name, "ConfigMap")
        if c["metadata"]["name"].startswith("mnist-serving-config")
    ]
    return config  # type: ignore[no-any-return]


def _cpus(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _with_env(args: list[str], env: dict[str, str]) -> list[str]:
    """Expand $(NAME) as the kubelet does in a container's args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in args]


def test_the_base_holds_only_built_in_kinds(rendered) -> None:
    kinds = [obj["kind"] for obj in rendered["base"]]
    assert sorted(kinds) == sorted(
        ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    )
    for name in SCORING:
        assert {obj["kind"] for obj in rendered[name]} == {"Job", "PersistentVolumeClaim"}


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_object_is_valid_against_the_kubernetes_schemas(rendered, name: str) -> None:
    assert rendered[name]
    for obj in rendered[name]:
        if obj["kind"] in OPERATOR_KINDS:
            continue  # validated against the operator's CRD schemas below
        assert obj["kind"] in BUILT_IN_KINDS, obj["kind"]
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)  # raises on any violation


@pytest.mark.parametrize("name", ["overlays/cpu", "overlays/gpu", "components/monitoring"])
def test_prometheus_operator_objects_are_valid_against_their_crds(
    rendered, crd_validator: Callable, name: str
) -> None:
    objects = [obj for obj in rendered[name] if obj["kind"] in OPERATOR_KINDS]
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


def test_the_crd_validator_rejects_misspelt_fields(rendered, crd_validator: Callable) -> None:
    """Strict, as `kubectl apply --validate=strict`: the package alone accepts any unknown field."""
    monitor = _one(rendered, "components/monitoring", "ServiceMonitor")
    rule = _one(rendered, "components/monitoring", "PrometheusRule")
    typos = []
    endpionts = json.loads(json.dumps(monitor))
    endpionts["spec"]["endpionts"] = endpionts["spec"]["endpoints"]
    typos.append((endpionts, "/spec/endpionts"))
    pth = json.loads(json.dumps(monitor))
    pth["spec"]["endpoints"][0]["pth"] = "/metrics"
    typos.append((pth, "/spec/endpoints/0/pth"))
    anotations = json.loads(json.dumps(rule))
    last = len(rule["spec"]["groups"]) - 1
    anotations["spec"]["groups"][last]["rules"][0]["anotations"] = {"summary": "x"}
    typos.append((anotations, f"/spec/groups/{last}/rules/0/anotations"))
    lables = json.loads(json.dumps(rule))
    lables["metadata"]["lables"] = {"x": "y"}
    typos.append((lables, "/metadata/lables"))
    results = crd_validator([typo for typo, _ in typos])
    for result, (_, field) in zip(results, typos, strict=True):
        assert result["error"] == f"unknown field(s): {field}", result
    # Free-form maps (labels, annotations, a rule's labels) still take any key.
    assert crd_validator([monitor, rule]) == [
        {"kind": "ServiceMonitor", "name": monitor["metadata"]["name"], "error": None},
        {"kind": "PrometheusRule", "name": rule["metadata"]["name"], "error": None},
    ]


def test_kubernetes_validation_really_rejects_bad_objects() -> None:
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": "eighty"}]},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"prots": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", SERVERS)
def test_settings_in_the_configmap_are_ones_the_server_accepts(rendered, name: str) -> None:
    config = _config(rendered, name)
    assert set(config) <= KNOWN_SETTINGS, set(config) - KNOWN_SETTINGS
    container = _pod(rendered, name, "Deployment")["containers"][0]
    settings = load_settings(container["args"], config)  # the server's own parser: raises on a bad value
    assert {env["name"] for env in container["env"]} <= KNOWN_SETTINGS
    assert settings.metrics_dir is not None and str(settings.metrics_dir).startswith("/tmp")
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]


@pytest.mark.parametrize("name", SERVING)
def test_resources_match_the_api_server_and_worker_counts(rendered, name: str) -> None:
    config = _config(rendered, name)
    container = _pod(rendered, name, "Deployment")["containers"][0]
    settings = load_settings(container["args"], config)
    cpus = math.ceil(_cpus(container["resources"]["limits"]["cpu"]))
    # One API server per CPU of the limit (what `auto` would pick from the cgroup), one worker whose
    # ONNX Runtime threads are those CPUs (service.server.worker_threads).
    assert settings.api_servers in (0, cpus) and 1 <= settings.workers <= cpus
    assert _cpus(container["resources"]["requests"]["cpu"]) == _cpus(container["resources"]["limits"]["cpu"])


@pytest.mark.parametrize("name", SERVING)
def test_ports_probes_and_drain_time_match_the_server(rendered, name: str, server: RunningServer) -> None:
    config = _config(rendered, name)
    pod = _pod(rendered, name, "Deployment")
    container = pod["containers"][0]
    (port,) = container["ports"]
    assert port["containerPort"] == int(config["MNIST_PORT"]) and port["name"] == "http"
    service = _one(rendered, name, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    paths = []
    for monitor in _objects(rendered, name, "ServiceMonitor"):
        assert monitor["spec"]["endpoints"][0]["port"] == "http"
        paths.append(monitor["spec"]["endpoints"][0]["path"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
        assert container[probe]["timeoutSeconds"] >= 2, f"{probe} keeps the 1 s default timeout"
        paths.append(container[probe]["httpGet"]["path"])
    for path in paths:
        assert server.request("GET", path).status == 200, f"{path} is not served"
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = float(config["MNIST_DRAIN_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 5


@pytest.mark.parametrize("name", SERVING)
def test_the_autoscaler_owns_the_replica_count_and_pods_spread_over_nodes(rendered, name: str) -> None:
    deployment = _one(rendered, name, "Deployment")
    assert "replicas" not in deployment["spec"], "a fixed count resets the HPA's on every apply"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    spread = {
        c["topologyKey"]: c for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    }
    hostname = spread["kubernetes.io/hostname"]
    assert hostname["whenUnsatisfiable"] == "DoNotSchedule" and hostname["maxSkew"] == 1
    assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    for constraint in spread.values():
        assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    pdb = _one(rendered, name, "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}


@pytest.mark.parametrize("name", SERVERS)
def test_pods_run_locked_down(rendered, name: str) -> None:
    pods = [_pod(rendered, name, "Deployment")] + [
        job["spec"]["template"]["spec"] for job in _objects(rendered, name, "Job")
    ]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"] and container["resources"]["limits"]


@pytest.mark.parametrize(("name", "kinds"), [("overlays/gpu", ["Deployment"]), ("scoring/gpu", ["Job"])])
def test_gpu_pods_ask_for_a_gpu_node_and_refuse_cpu_fallback(rendered, name: str, kinds: list[str]) -> None:
    for kind in kinds:
        template = _one(rendered, name, kind)["spec"]["template"]
        pod = template["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert pod["runtimeClassName"] == "nvidia"
        assert "580" in template["metadata"]["annotations"]["mnist-serving/nvidia-driver"]
        assert pod["containers"][0]["image"].endswith("-gpu")
    assert _config(rendered, "overlays/gpu")["MNIST_DEVICE"] == "cuda"
    assert _config(rendered, "overlays/cpu")["MNIST_DEVICE"] == "cpu"
    job = _one(rendered, "scoring/gpu", "Job")["spec"]["template"]["spec"]["containers"][0]
    assert (
        score_parser()
        .parse_args(_with_env(job["args"], {"JOB_COMPLETION_INDEX": "0", "CPU_LIMIT": "2"}))
        .device
        == "cuda"
    )
    for cpu_only in ("overlays/cpu", "scoring/cpu", "base"):
        assert "nvidia" not in json.dumps(rendered[cpu_only])
    assert "580" in (K8S / "components" / "gpu" / "kustomization.yaml").read_text()  # the driver, in words


@pytest.mark.parametrize("name", SCORING)
def test_scoring_job_is_indexed_and_sharded_with_flags_mnist_score_accepts(rendered, name: str) -> None:
    spec = _one(rendered, name, "Job")["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["backoffLimitPerIndex"] >= 1
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
    container = pod["containers"][0]
    assert container["command"] == ["tini", "--", "mnist-score"]  # the image's entrypoint, for mnist-score
    env = {item["name"]: item["valueFrom"] for item in container["env"]}
    assert "job-completion-index" in env["JOB_COMPLETION_INDEX"]["fieldRef"]["fieldPath"]
    # --workers is the container's CPU limit, as the downward API rounds it up.
    limit = env["CPU_LIMIT"]["resourceFieldRef"]
    assert limit == {"containerName": container["name"], "resource": "limits.cpu", "divisor": "1"}
    cpus = math.ceil(_cpus(container["resources"]["limits"]["cpu"]))
    parsed = score_parser().parse_args(
        _with_env(container["args"], {"JOB_COMPLETION_INDEX": "3", "CPU_LIMIT": str(cpus)})
    )
    assert parsed.num_shards == spec["completions"] and parsed.resume and parsed.allow_error_rows
    assert parsed.workers == cpus and parsed.output.name == "part-3.csv"


@pytest.mark.parametrize("name", SCORING)
def test_scoring_volumes_are_shipped_with_the_access_modes_several_pods_need(rendered, name: str) -> None:
    claims = {
        pvc["metadata"]["name"]: pvc["spec"]["accessModes"]
        for pvc in _objects(rendered, name, "PersistentVolumeClaim")
    }
    pod = _pod(rendered, name, "Job")
    volumes = {v["name"]: v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert {v["claimName"] for v in volumes.values()} == set(claims)  # nothing waits for a claim nobody made
    for volume, claim in volumes.items():
        if mounts[volume].get("readOnly"):
            assert claims[claim["claimName"]] == ["ReadOnlyMany"]
        else:  # every index writes its own part file on the same volume, from any node
            assert claims[claim["claimName"]] == ["ReadWriteMany"]


def test_a_corrupt_input_file_neither_fails_nor_retries_an_index(
    rendered, tmp_path: Path, mnist: MnistArrays
) -> None:
    """The Job's own arguments, run for real on index 0 with a corrupt PNG in its shard: the exit code
    is one the Job's podFailurePolicy and backoff count as success."""
    spec = _one(rendered, "scoring/cpu", "Job")["spec"]
    container = spec["template"]["spec"]["containers"][0]
    mounts = {"/data": tmp_path / "data", "/results": tmp_path / "results", "/models": ROOT / "models"}
    (tmp_path / "data" / "input").mkdir(parents=True)
    (tmp_path / "results").mkdir()
    (tmp_path / "data" / "input" / "000-corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    for i in range(1, 8):
        Image.fromarray(mnist.test_images[i].numpy()).save(tmp_path / "data" / "input" / f"{i:03d}.png")
    args = _with_env(container["args"], {"JOB_COMPLETION_INDEX": "0", "CPU_LIMIT": "1"})
    for mount, local in mounts.items():
        args = [re.sub(rf"^{mount}(?=/|$)", str(local), arg) for arg in args]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mnist-score"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "JOB_COMPLETION_INDEX": "0"},
    )
    rows = (tmp_path / "results" / "part-0.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 and "000-corrupt.png" in rows[1] and "cannot decode" in rows[1]  # files 0 and 4
    assert result.returncode == 0, result.stderr
    for rule in spec["podFailurePolicy"]["rules"]:
        if "onExitCodes" in rule and rule["action"] in ("FailJob", "FailIndex"):
            assert rule["onExitCodes"]["operator"] == "In" and 1 not in rule["onExitCodes"]["values"]


@pytest.mark.parametrize("name", SERVING)
def test_the_base_autoscaler_needs_nothing_but_metrics_server(rendered, name: str) -> None:
    hpa = _one(rendered, name, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == _one(rendered, name, "Deployment")["metadata"]["name"]
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_the_custom_metric_component_scales_on_a_real_metric_the_adapter_serves_per_pod(
    rendered, server: RunningServer
) -> None:
    hpa = _one(rendered, "components/custom-metrics-hpa", "HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]
    (name,) = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    metrics = server.request("GET", "/metrics").body.decode()
    assert re.search(rf"^{name}\b", metrics, re.MULTILINE), f"{name} is not in /metrics"
    (rule,) = yaml.safe_load((DEPLOY / "prometheus" / "adapter-rules.yaml").read_text())["rules"]["custom"]
    assert rule["name"]["as"] == name and rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert rule["metricsQuery"].startswith("sum by (<<.GroupBy>>) (")  # one value per pod


def test_the_dashboard_configmap_is_the_dashboard_file_labelled_for_grafana(rendered) -> None:
    (dashboard,) = [
        c
        for c in _objects(rendered, "components/monitoring", "ConfigMap")
        if "grafana_dashboard" in c["metadata"].get("labels", {})
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = dashboard["data"].values()
    source = DEPLOY / "grafana" / "mnist-serving.json"
    assert text == source.read_text(), (
        "deploy/k8s/components/monitoring/mnist-serving.json differs from deploy/grafana/mnist-serving.json: "
        "cp deploy/grafana/mnist-serving.json deploy/k8s/components/monitoring/"
    )
    assert json.loads(text)["title"]


def test_server_args_in_the_deployment_parse(rendered) -> None:
    container = _pod(rendered, "base", "Deployment")["containers"][0]
    assert isinstance(build_parser({}).parse_args(container["args"]), argparse.Namespace)


def test_every_component_is_a_kustomize_component() -> None:
    for component in COMPONENTS:
        kustomization = yaml.safe_load((K8S / component / "kustomization.yaml").read_text())
        assert kustomization["kind"] == "Component", component
    assert {p.name for p in (K8S / "components").iterdir()} == {c.rpartition("/")[2] for c in COMPONENTS}
