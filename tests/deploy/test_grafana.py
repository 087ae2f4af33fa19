"""The Grafana dashboard: every query follows the namespace, job and pod variables, listed from Prometheus.

tests/deploy/test_prometheus.py runs every query against a real Prometheus scraping a real server."""

from __future__ import annotations

import re

from .dashboard import dashboard_panel, load_dashboard


def _metric_selectors(expr: str) -> list[str]:
    """The label matchers of each metric an expression reads (``up{...}``, ``mnist_x{...}``)."""
    return re.findall(r"\b(?:up|mnist_[a-z0-9_]+)(\{[^}]*\})?", expr)


def test_namespace_job_and_pod_variables_come_from_prometheus_and_chain() -> None:
    variables = {var["name"]: var for var in load_dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for name in ("namespace", "job", "pod"):
        var = variables[name]
        assert var["type"] == "query" and var["datasource"]["uid"] == "${datasource}"
        assert re.fullmatch(rf"label_values\(mnist_api_servers(\{{.*\}})?, {name}\)", var["definition"])
        assert var["query"]["query"] == var["definition"] and var["includeAll"] and var["multi"]
    assert "$namespace" in variables["job"]["definition"]
    assert "$namespace" in variables["pod"]["definition"] and "$job" in variables["pod"]["definition"]
    # All must also match series without the label: a Prometheus outside Kubernetes has neither.
    assert variables["namespace"]["allValue"] == variables["pod"]["allValue"] == ".*"


def test_every_panel_query_follows_the_namespace_job_and_pod_variables() -> None:
    queries = [target["expr"] for panel in load_dashboard()["panels"] for target in panel["targets"]]
    assert len(queries) >= 25
    for expr in queries:
        selectors = _metric_selectors(expr)
        assert selectors, expr
        for matchers in selectors:
            for variable in ("namespace", "job", "pod"):
                assert f'{variable}=~"${variable}"' in matchers, f"{expr}: {matchers or 'no matchers'}"


def test_the_operators_panels_are_there() -> None:
    dashboard = load_dashboard()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert "mnist_process_cpu_seconds_total" in dashboard_panel("CPU per process")["targets"][0]["expr"]
    assert "rate(" in dashboard_panel("CPU per process")["targets"][0]["expr"]
    assert "up{" in dashboard_panel("Replicas")["targets"][0]["expr"]
    reloads = dashboard_panel("Model reload failures")["targets"][0]["expr"]
    assert "mnist_model_reload_failures_total" in reloads
    low = dashboard_panel("Low-confidence rate")["targets"][0]["expr"]
    assert "mnist_low_confidence_predictions_total" in low and "mnist_images_total" in low
    burn = dashboard_panel("Error budget burn rate (SLO 99.9 %)")
    assert [target["legendFormat"].split()[-1] for target in burn["targets"]] == ["5m", "1h", "6h"]


def test_the_variable_check_would_catch_a_query_that_ignores_them() -> None:
    assert _metric_selectors("sum(rate(mnist_images_total[5m]))") == [""]
    assert _metric_selectors('rate(mnist_images_total{job=~"$job"}[5m])') == ['{job=~"$job"}']
