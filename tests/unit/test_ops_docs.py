"""The operators' guide keeps up with the code: every metric in the catalogue, every CLI command."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.metrics_core import Metric

from ari_agent.observability.metrics import Metrics

GUIDE = (Path(__file__).resolve().parents[2] / "docs" / "operators.md").read_text()


def exposed_names(metric: Metric) -> str:
    return metric.name + ("_total" if metric.type == "counter" else "")


def test_every_metric_is_in_the_catalogue() -> None:
    catalogue = GUIDE.split("## Metrics catalogue", 1)[1]
    names = [exposed_names(m) for m in Metrics().registry.collect()]
    assert names
    missing = [n for n in names if f"`{n}`" not in catalogue]
    assert missing == []


def test_every_command_and_doctor_check_is_described() -> None:
    for command in (
        "ari-agent run",
        "ari-agent check",
        "ari-agent doctor",
        "ari-agent call",
        "ari-agent test",
        "ari-agent calls",
        "ari-agent calls erase",
        "ari-agent load",
    ):
        assert command in GUIDE
    for check in ("`ari`", "`tls`", "`credentials`", "`modules`", "`app`", "`media`", "`extension`"):
        assert check in GUIDE
