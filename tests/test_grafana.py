"""deploy/grafana/havip.json: a dashboard Grafana can import, using only metrics that exist.

Every metric name in a panel's query must be one the daemon exposes (read from a real
`Metrics` object, counter and histogram suffixes included) or one Prometheus adds (`up`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from havip.core.states import Cause, Reason, State
from havip.shell.certinfo import CertInfo
from havip.shell.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "havip.json"
FROM_PROMETHEUS = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# What the issue asks the dashboard to show, each by one metric it must query.
REQUIRED = {
    "ownership over time": "havip_vip_owned",
    "state": "havip_state",
    "eligibility": "havip_eligible",
    "RTT": "havip_keepalive_rtt_seconds_bucket",
    "failovers": "havip_transitions_total",
    "certificate expiry": "havip_x509_cert_not_after",
}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum", ""),
    "info": ("_info",),
}


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query annotation."""
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} target {target.get('refId')}", target["expr"]
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (labels, functions, keywords removed)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match[0]
        after = text[match.end() :].lstrip()
        if after.startswith("(") or word.lower() in PROMQL_WORDS:
            continue  # a function call or a keyword
        if match.start() > 0 and text[match.start() - 1] in "$.0123456789":
            continue  # a Grafana variable, or an exponent / unit of a number
        names.add(word)
    return names


def exposed_names() -> set[str]:
    """Every sample name a daemon's /metrics can carry, each family's suffixes resolved."""
    m = Metrics(
        node="n1",
        peer="n2",
        vips=[("198.18.0.100/24", "eth0")],
        states=[s.value for s in State],
        reasons=[r.value for r in Reason],
        causes=[c.value for c in Cause if c is not Cause.OK],
        version="0.1.0",
    )
    now = dt.datetime.now(dt.UTC)
    cert = CertInfo(
        subject_cn="n1",
        issuer_cn="havip CA",
        serial_number=1,
        not_before=now,
        not_after=now + dt.timedelta(days=90),
    )
    for role in ("own", "peer", "ca"):
        m.set_certificates(role, cert)
    m.observe_rtt(0.001)
    m.observe_takeover(0.4)
    names = set()
    for family in m.registry.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    # And what the exposition really carries (the families above must account for it).
    for family in text_string_to_metric_families(m.exposition().decode()):
        for sample in family.samples:
            assert sample.name in names, f"{sample.name} not derived from its family"
    return names


def test_the_dashboard_is_json_grafana_imports() -> None:
    dashboard = load()
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 30
    assert dashboard["title"] and dashboard["uid"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    ids = [panel["id"] for panel in all_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in all_panels(dashboard["panels"]):
        assert panel["type"] and panel["title"], panel
        pos = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(pos), panel["title"]
        assert all(isinstance(pos[k], int) and pos[k] >= 0 for k in "hwxy"), panel["title"]
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']}: wider than the grid"
        if panel["type"] == "row":
            continue
        targets = panel["targets"]
        assert targets, f"{panel['title']}: no targets"
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), f"{panel['title']}: refIds repeat"
        assert all(t["expr"].strip() for t in targets), panel["title"]


def test_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in all_panels(load()["panels"]):
        pos = panel["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_the_datasource_is_a_variable() -> None:
    # Imported into any Grafana, the panels ask whichever Prometheus the user picks.
    dashboard = load()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in all_panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_metric_a_panel_queries_exists() -> None:
    exposed = exposed_names() | FROM_PROMETHEUS
    used = set()
    for where, expr in exprs(load()):
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        missing = names - exposed
        assert not missing, f"{where}: {sorted(missing)} not exposed by havip ({expr})"
        used |= names
    for what, name in REQUIRED.items():
        assert name in used, f"the dashboard shows no {what} ({name})"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'histogram_quantile(0.99, sum by (instance, le) (rate(x_bucket{job="havip"}[5m])))',
            {"x_bucket"},
        ),
        ('time() - process_start_time_seconds{job="a"}', {"process_start_time_seconds"}),
        ('sum by (vip) (a{vip=~"$vip"}) / on (vip) b[$__rate_interval]', {"a", "b"}),
        ("max_over_time((sum(up))[1h:1m]) > 1e3", {"up"}),
    ],
)
def test_metric_names_finds_the_selected_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_an_unknown_metric_is_caught() -> None:
    # The check itself can fail: a misspelt name is not in the exposition.
    assert "havip_vip_owned" in exposed_names()
    assert "havip_vip_owner" not in exposed_names()
    assert "havip_keepalive_rtt_seconds" not in exposed_names()  # a histogram: _bucket etc.
