"""Fixtures of the real-Asterisk lab (see integration/lab.py), for tests/integration and tests/faults.

Here, above both, so that one pytest session starts one lab for the two.

``lab_session`` starts both Asterisk instances once per test session;
``lab`` hands it to a test and hangs up whatever the test left behind;
``agent_factory`` / ``agent`` run the agent under test as a subprocess.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.ariproxy import AriProxy
from tests.integration.lab import AgentFactory, AgentProcess, Lab, LabError, running_lab


@pytest.fixture(scope="session")
def lab_session() -> Iterator[Lab]:
    try:
        ctx = running_lab()
        lab = ctx.__enter__()
    except LabError as exc:
        # Never skip: a lab that cannot start is a failure to look at.
        pytest.fail(f"the Asterisk lab did not start: {exc}", pytrace=False)
    try:
        yield lab
    finally:
        ctx.__exit__(None, None, None)


@pytest.fixture
def lab(lab_session: Lab) -> Iterator[Lab]:
    yield lab_session
    lab_session.hangup_all()


@pytest.fixture
def agent_factory(lab: Lab, tmp_path: Path) -> Iterator[AgentFactory]:
    factory = AgentFactory(lab, tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def agent(agent_factory: AgentFactory) -> AgentProcess:
    """The agent with the lab's settings and records in a temporary directory."""
    return agent_factory.start()


@pytest.fixture
def ari_proxy(lab: Lab) -> Iterator[AriProxy]:
    """A man-in-the-middle on the agent's ARI connection (point the agent at ``ari_proxy.url``)."""
    proxy = AriProxy(lab.ari_url).start()
    try:
        yield proxy
    finally:
        proxy.close()
