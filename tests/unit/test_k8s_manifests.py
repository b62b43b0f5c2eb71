"""deploy/k8s/: rendered with the real ``kubectl kustomize``, validated offline, and read back.

No cluster is reached. The render uses ``kubectl`` on PATH (Debian's
``kubernetes-client``, kubectl 1.20, in CI; ``KUBECTL`` names another); the
schemas are kubernetes-validate's, for the oldest and the newest Kubernetes it
ships. Then what a cluster would not check: the grace period outlasts the
drain, the probes hit the agent's own paths and port, and the HPA asks the
Prometheus adapter for the metric its rule actually serves, built from a gauge
the agent exports.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ari_agent.config import Settings
from ari_agent.observability.metrics import Metrics

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
# kubernetes-validate's oldest and newest schemas (its 1.37 release ships 1.25 to 1.37).
VERSIONS = ("1.25", "1.37")


def render(directory: Path) -> list[dict[str, Any]]:
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found: install Debian's kubernetes-client (make deps does)", pytrace=False)
    proc = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert docs, f"{directory} rendered nothing"
    return docs


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(K8S / "base")


@pytest.fixture(scope="module")
def adapter() -> list[dict[str, Any]]:
    return render(K8S / "prometheus-adapter")


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def agent_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The agent container's settings: the ConfigMaps it reads (envFrom) under its own env values."""
    container = agent_container(docs)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]  # kustomize has rewritten it to the hashed name
        env.update(one(docs, "ConfigMap", name)["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def agent_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment", "agent")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "agent")


@pytest.mark.parametrize("version", VERSIONS)
def test_every_rendered_object_validates_strictly(
    base: list[dict[str, Any]], adapter: list[dict[str, Any]], version: str
) -> None:
    kinds = set()
    for doc in base + adapter:
        kubernetes_validate.validate(doc, version, strict=True)
        kinds.add(doc["kind"])
    assert {"Deployment", "StatefulSet", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds


def test_the_validator_rejects_a_misspelt_field(base: list[dict[str, Any]]) -> None:
    # The check above means something only if a wrong manifest fails it.
    broken = yaml.safe_load(yaml.safe_dump(one(base, "Deployment", "agent")))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 10
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_the_grace_period_outlasts_the_drain_timeout_set_beside_it(base: list[dict[str, Any]]) -> None:
    env = agent_env(base)
    # The environment as the agent reads it: a value it would refuse fails here, not in the pod.
    settings = Settings.model_validate({"calls": {"drain_timeout": env["AGENT_CALLS__DRAIN_TIMEOUT"]}})
    grace = one(base, "Deployment", "agent")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # The preStop hook's drain runs inside the grace period; calls still up at the drain
    # timeout must be handed back before SIGKILL, which takes a few seconds more.
    assert grace >= settings.calls.drain_timeout + 10, (grace, settings.calls.drain_timeout)
    pre_stop = " ".join(agent_container(base)["lifecycle"]["preStop"]["exec"]["command"])
    assert "kill -TERM 1" in pre_stop  # the agent drains on SIGTERM (app.drain)


def test_probes_hit_readyz_and_healthz_at_the_configured_port(base: list[dict[str, Any]]) -> None:
    env = agent_env(base)
    port = int(env["AGENT_HTTP__PORT"])
    # A probe from the kubelet comes from off the pod's loopback.
    assert env["AGENT_HTTP__HOST"] == "0.0.0.0"
    container = agent_container(base)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert {"containerPort": port, "name": "http", "protocol": "TCP"} in container["ports"]
    annotations = one(base, "Deployment", "agent")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


def adapter_rules(adapter: list[dict[str, Any]]) -> list[dict[str, Any]]:
    config = yaml.safe_load(one(adapter, "ConfigMap", "adapter-config")["data"]["config.yaml"])
    rules: list[dict[str, Any]] = config["rules"]
    return rules


def served_name(rule: dict[str, Any], series: str) -> str | None:
    """The custom metric name the adapter serves for one series (its name.matches / name.as)."""
    name = rule.get("name") or {}
    pattern = name.get("matches") or "(.*)"
    match = re.search(pattern, series)
    if match is None:
        return None
    # Go's regexp.Expand: $1 or ${1}; an empty `as` is $1 with one group, else $0.
    template = name.get("as") or ("$1" if match.re.groups == 1 else "$0")
    return re.sub(r"\$\{?(\d+)\}?", lambda m: match.group(int(m.group(1))) or "", template)


def test_the_hpa_scales_on_what_the_adapter_rule_serves_from_an_exported_gauge(
    base: list[dict[str, Any]], adapter: list[dict[str, Any]]
) -> None:
    exported = {m.name: m.type for m in Metrics().registry.collect()}
    hpa = one(base, "HorizontalPodAutoscaler", "agent")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "agent"}
    wanted = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert wanted
    served = {}
    for rule in adapter_rules(adapter):
        series = re.match(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)", rule["seriesQuery"])
        assert series, rule["seriesQuery"]
        served[served_name(rule, series.group(1))] = series.group(1)
    for name in wanted:
        assert name in served, (name, served)
        assert exported.get(served[name]) == "gauge", (served[name], sorted(exported))
    # The target per pod is below the agent's own call limit, or the HPA would never scale.
    target = float(hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"])
    assert 0 < target < int(agent_env(base)["AGENT_CALLS__MAX_CONCURRENT"])


def test_the_pdb_and_the_hpa_select_the_agent_pods(base: list[dict[str, Any]]) -> None:
    labels = one(base, "Deployment", "agent")["spec"]["template"]["metadata"]["labels"]
    selector = one(base, "PodDisruptionBudget", "agent")["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert one(base, "HorizontalPodAutoscaler", "agent")["spec"]["minReplicas"] >= 2


def test_asterisk_runs_on_the_host_network_and_agents_advertise_their_pod_ip(
    base: list[dict[str, Any]],
) -> None:
    # The documented RTP strategy (deploy/k8s/README.md).
    assert one(base, "StatefulSet", "asterisk")["spec"]["template"]["spec"]["hostNetwork"] is True
    env = {e["name"]: e for e in agent_container(base)["env"]}
    assert env["AGENT_MEDIA__ADVERTISE_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["AGENT_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert agent_env(base)["AGENT_POOL__ENABLED"] == "true"
