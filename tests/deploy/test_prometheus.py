"""Prometheus config, alert rules and their unit tests, checked by the real promtool; and a real
Prometheus server scraping a real mnist-serve."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from ..integration.harness import RunningServer, free_port
from .conftest import DEPLOY, require

PROMETHEUS = DEPLOY / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_checks_the_config_and_rules() -> None:
    config = _promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = _promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert rules.returncode == 0 and "SUCCESS: 10 rules found" in rules.stdout, rules.stdout + rules.stderr


def test_alert_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_promtool_would_catch_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: rate(mnist_images_total[5m]\n"
    )
    assert _promtool("check", "rules", str(broken)).returncode != 0


def test_every_alert_is_unit_tested() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert (
        alerts
        == fired
        == {
            "MnistServingDown",
            "MnistServingNotReady",
            "MnistHighErrorRate",
            "MnistHighLatencyP99",
            "MnistRequestsShed",
            "MnistLowConfidenceRising",
        }
    )


def test_kubernetes_prometheusrule_carries_the_same_rules() -> None:
    plain = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    operator = yaml.safe_load(
        (DEPLOY / "k8s" / "components" / "monitoring" / "prometheusrule.yaml").read_text()
    )["spec"]["groups"]
    assert operator == plain


def _query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        payload = json.loads(response.read())
    assert payload["status"] == "success"
    return payload["data"]["result"]  # type: ignore[no-any-return]


def test_a_real_prometheus_scrapes_the_server(tmp_path: Path, server: RunningServer, mnist) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{server.port}"]}]
    config["rule_files"] = [str(PROMETHEUS / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            require("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    try:
        expr = 'sum(mnist_requests_total{job="mnist-serving", route="/predict", code="200"})'
        deadline = time.monotonic() + 60
        before = None
        while time.monotonic() < deadline and before is None:
            try:
                up = _query(port, 'up{job="mnist-serving"}')
                if up and up[0]["value"][1] == "1":
                    result = _query(port, expr)
                    before = float(result[0]["value"][1]) if result else 0.0
            except OSError:
                pass
            time.sleep(0.5)
        assert before is not None, (tmp_path / "prometheus.log").read_text()[-2000:]
        for i in range(5):
            assert server.post_json("/predict", {"pixels": mnist.test_images[i].tolist()}).status == 200
        after = before
        while time.monotonic() < deadline and after < before + 5:
            result = _query(port, expr)
            after = float(result[0]["value"][1]) if result else 0.0
            time.sleep(0.5)
        assert after >= before + 5, f"the counter did not rise in Prometheus: {before} -> {after}"
        assert (
            _query(port, "mnist:request_duration_seconds:p99_rate5m") is not None
        )  # rules load and evaluate
    finally:
        process.terminate()
        process.wait(30)


def test_every_metric_in_the_dashboard_and_rules_exists(server: RunningServer) -> None:
    server.post_json("/predict", {"pixels": [[0] * 28] * 28})
    exposed = set(
        re.findall(
            r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", server.request("GET", "/metrics").body.decode(), re.MULTILINE
        )
    )
    dashboard = json.loads((DEPLOY / "grafana" / "mnist-serving.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    expressions += [
        rule["expr"]
        for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    ]
    named = {name for expr in expressions for name in re.findall(r"\bmnist_[a-z0-9_]+", expr)}
    assert len(named) >= 12
    assert named - exposed == set(), f"named but not exposed: {sorted(named - exposed)}"
    panels = {panel["title"] for panel in dashboard["panels"]}
    for needed in (
        "Request rate by route and code",
        "Request latency (predict + infer)",
        "Queue wait",
        "Batch size (mean)",
        "Predictions per digit",
        "Confidence",
        "Errors and rejections by reason",
    ):
        assert needed in panels
