"""The Grafana dashboard's queries, as Grafana sends them to Prometheus."""

from __future__ import annotations

import json
import re
from typing import Any

from .conftest import DEPLOY

DASHBOARD = DEPLOY / "grafana" / "mnist-serving.json"
# What Grafana sends for "All" and its own interval.
ALL = {"$namespace": ".*", "$pod": ".*", "$job": "mnist-serving", "$__rate_interval": "1m"}


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def dashboard_queries() -> list[str]:
    """Every panel query and every variable query (``label_values(metric{...}, label)``)."""
    dashboard = load_dashboard()
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return queries + [var["definition"] for var in dashboard["templating"]["list"] if var["type"] == "query"]


def dashboard_panel(title: str) -> dict[str, Any]:
    (panel,) = [panel for panel in load_dashboard()["panels"] if panel["title"] == title]
    return panel  # type: ignore[no-any-return]


def fill_in_variables(expr: str) -> str:
    for name, value in ALL.items():
        expr = expr.replace(name, value)
    return re.sub(r"^label_values\((.*), \w+\)$", r"\1", expr)  # the series the variable lists
