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

from ..conftest import ROOT
from ..integration.harness import RunningServer, free_port
from .conftest import DEPLOY, require
from .dashboard import dashboard_panel, dashboard_queries, fill_in_variables, load_dashboard

PROMETHEUS = DEPLOY / "prometheus"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/example/mnist-serving/blob/main/docs/runbook.md#"
ALERTS = {
    "MnistServingAbsent",
    "MnistServingAllTargetsDown",
    "MnistServingTargetDown",
    "MnistServingNotReady",
    "MnistAvailabilityBudgetFastBurn",
    "MnistAvailabilityBudgetSlowBurn",
    "MnistHighLatencyP99",
    "MnistRequestsShed",
    "MnistModelReloadFailed",
    "MnistLowConfidenceRising",
}


def _promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool"), *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


def _rules() -> list[dict]:
    return [
        rule
        for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    ]


def test_promtool_checks_the_config_and_rules() -> None:
    config = _promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = _promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert rules.returncode == 0 and "SUCCESS: 17 rules found" in rules.stdout, rules.stdout + rules.stderr


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
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert alerts == fired == ALERTS


def test_every_aggregation_keeps_namespaces_and_jobs_apart() -> None:
    """Staging and production must never merge: every `by (...)` and `on (...)` keeps namespace and job."""
    groupings = [by for rule in _rules() for by in re.findall(r"\b(?:by|on) \(([^)]*)\)", rule["expr"])]
    assert len(groupings) >= 15
    for by in groupings:
        assert {"namespace", "job"} <= {label.strip() for label in by.split(",")}, by


def test_every_alert_links_to_its_runbook_section() -> None:
    headings = set(re.findall(r"^## (\w+)$", RUNBOOK.read_text(), re.MULTILINE))
    for rule in _rules():
        if "alert" in rule:
            assert rule["annotations"]["runbook_url"] == RUNBOOK_URL + rule["alert"].lower()
            assert rule["alert"] in headings, f"docs/runbook.md has no section for {rule['alert']}"


def _amtool_check(tmp_path: Path, inhibit_rules: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "alertmanager.yml"
    config.write_text("route:\n  receiver: pager\nreceivers:\n  - name: pager\n" + inhibit_rules)
    return subprocess.run(
        [require("amtool"), "check-config", str(config)], capture_output=True, text=True, timeout=60
    )


def test_the_runbooks_inhibit_rules_are_valid_alertmanager_config(tmp_path: Path) -> None:
    (snippet,) = re.findall(r"```yaml\n(inhibit_rules:.*?)```", RUNBOOK.read_text(), re.DOTALL)
    named = set(re.findall(r"Mnist\w+", snippet))
    assert named and named <= ALERTS
    checked = _amtool_check(tmp_path, snippet)
    assert checked.returncode == 0 and "2 inhibit rules" in checked.stdout, checked.stdout + checked.stderr
    assert _amtool_check(tmp_path, snippet.replace("equal:", "equals:")).returncode != 0


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
        # Every dashboard query is valid PromQL once Grafana has filled in its variables (All).
        for expr in dashboard_queries():
            _query(port, fill_in_variables(expr))
        replicas = fill_in_variables(dashboard_panel("Replicas")["targets"][0]["expr"])
        assert [float(r["value"][1]) for r in _query(port, replicas)] == [1.0]
    finally:
        process.terminate()
        process.wait(30)


def test_promtool_finds_nothing_to_fix_in_a_live_scrape(server: RunningServer, mnist) -> None:
    """Counters typed as counters, base units, no reserved suffixes, help on every family: the checks
    `promtool check metrics` makes, on what a real server exposes after good and bad requests."""
    assert server.post_json("/predict", {"pixels": mnist.test_images[0].tolist()}).status == 200
    assert server.post_json("/predict", {"pixels": "not pixels"}).status == 422
    assert server.request("GET", "/no-such-route").status == 404
    assert server.request("DELETE", "/predict").status == 405
    scrape = server.scrape().text
    assert "mnist_process_cpu_seconds_total" in scrape and "mnist_rejected_requests_total" in scrape
    result = _promtool("check", "metrics", stdin=scrape)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_promtool_check_metrics_would_catch_a_gauge_named_like_a_counter() -> None:
    wrong = "# HELP x_seconds_total CPU time.\n# TYPE x_seconds_total gauge\nx_seconds_total 1\n"
    result = _promtool("check", "metrics", stdin=wrong)
    assert result.returncode != 0 and "non-counter metrics should not have" in result.stdout + result.stderr


def test_every_metric_in_the_dashboard_and_rules_exists(server: RunningServer) -> None:
    server.post_json("/predict", {"pixels": [[0] * 28] * 28})
    exposed = set(
        re.findall(
            r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", server.request("GET", "/metrics").body.decode(), re.MULTILINE
        )
    )
    dashboard = load_dashboard()
    expressions = dashboard_queries() + [rule["expr"] for rule in _rules()]
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
