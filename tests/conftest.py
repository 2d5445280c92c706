from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import agent.sim.sink
from agent.delivery.channels.webhook import WebhookChannel
from tests.cloudevents_schema import InvalidCloudEvent, validate_cloudevent
from tests.nats_support import NatsServer
from tests.transport_support import Pty

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def ptys() -> Iterator[list[Pty]]:
    """Pseudo-terminals a test made; each is unplugged afterwards."""
    made: list[Pty] = []
    yield made
    for p in made:
        p.unplug()


@pytest.fixture(autouse=True)
def every_cloudevent_is_valid(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every CloudEvent any test builds or delivers is checked against the CloudEvents 1.0 schema.

    Two places, so nothing slips past: each webhook request body a WebhookChannel builds in this
    process (whatever receives it: a sink, a scripted server, a fake sender), and each CloudEvent a
    WebhookSink receives (also from a daemon in a subprocess). The test errors at teardown with the
    reasons; a sink also answers an invalid event 400, so the daemon sees a failed delivery.
    """
    bad: list[str] = []

    def check(event: dict[str, Any]) -> None:
        try:
            validate_cloudevent(event)
        except InvalidCloudEvent as exc:
            bad.append(f"received by a WebhookSink: {exc}")
            raise

    original = WebhookChannel.build_request

    def build_request(self: WebhookChannel, *args: Any, **kwargs: Any) -> Any:
        request = original(self, *args, **kwargs)
        try:
            validate_cloudevent(json.loads(request.body))
        except InvalidCloudEvent as exc:
            bad.append(f"built by webhook channel {self.name}: {exc}")
        return request

    monkeypatch.setattr(agent.sim.sink, "event_check", check)
    monkeypatch.setattr(WebhookChannel, "build_request", build_request)
    yield bad
    if bad:
        pytest.fail("CloudEvents that are not valid CloudEvents 1.0:\n" + "\n".join(dict.fromkeys(bad)))


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with JetStream on 127.0.0.1 (tests/nats_support.py), stopped afterwards."""
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()
