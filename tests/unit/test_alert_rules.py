"""deploy/prometheus: the alert rules pass promtool's checks and its unit tests (a firing and a
non-firing case per alert), and every agent metric they read is one the agent exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ari_agent.observability.metrics import Metrics
from ari_agent.profiles import ProfileConfig

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool missing: apt-get install --no-install-recommends prometheus (make deps)")
    return subprocess.run(
        [tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60, check=False
    )


def test_config_and_rules_check() -> None:
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 rules found" in result.stdout


def test_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _who(labels: str) -> tuple[str | None, str | None]:
    instance = re.search(r'instance="([^"]+)"', labels)
    profile = re.search(r'profile="([^"]+)"', labels)
    return (instance[1] if instance else None, profile[1] if profile else None)


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for test in tests:
        inputs = {_who(series["series"]) for series in test["input_series"]}
        for case in test["alert_rule_test"]:
            expected = case.get("exp_alerts") or []
            if expected:
                fired.add(case["alertname"])
            alerted = {(e["exp_labels"].get("instance"), e["exp_labels"].get("profile")) for e in expected}
            # Quiet: an evaluation expecting nothing, or input series of someone who must not alert.
            if not expected or inputs - alerted:
                quiet.add(case["alertname"])
    names = {r["alert"] for r in rules}
    assert names == fired
    assert names == quiet


def test_rules_read_only_metrics_the_agent_exports() -> None:
    text = (PROMETHEUS / "alerts.yml").read_text()
    used = set(re.findall(r"\b(ari_agent_[a-z_]+)", text))
    metrics = Metrics()
    exported: set[str] = set()
    for family in metrics.registry.collect():
        exported.update(sample.name for sample in family.samples)
        exported.add(family.name)
    # Families with no sample yet (labelled, unobserved) still name their series.
    for collector in list(metrics.registry._collector_to_names):
        exported.update(metrics.registry._collector_to_names[collector])
    assert used, "no agent metric in the rules?"
    assert used <= exported, used - exported


def test_threshold_default_is_the_issue_line() -> None:
    assert ProfileConfig().turn_latency_alert_s == 1.5


def test_dashboard_shows_every_agent_metric() -> None:
    """A metric the agent exports and no panel shows is one nobody looks at."""
    import json

    dashboard = json.loads((PROMETHEUS.parent / "grafana/dashboards/ari-agent.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    families = {
        min(names, key=len)  # the family's own name; its series add _total, _bucket, ...
        for names in Metrics().registry._collector_to_names.values()
        if names and min(names, key=len).startswith("ari_agent_")
    }
    # Labels only (which agent this is), or the pool's own bookkeeping, not a graph.
    families -= {"ari_agent_instance_info", "ari_agent_pool_claims", "ari_agent_pool_takeovers"}
    used = set(re.findall(r"\b(ari_agent_[a-z_]+?)(?:_total|_bucket|_sum|_count)?\b", exprs))
    missing = sorted(families - used)
    assert missing == []
