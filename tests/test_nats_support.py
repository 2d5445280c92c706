"""The real nats-server the chain tests run against: up, down and back on the same port and store."""

from __future__ import annotations

import socket

from tests.nats_support import NatsServer


def test_server_comes_back_on_the_same_port(nats_server: NatsServer) -> None:
    with socket.create_connection(("127.0.0.1", nats_server.port)) as s:
        assert s.recv(4) == b"INFO"
    nats_server.stop()
    try:
        socket.create_connection(("127.0.0.1", nats_server.port), timeout=0.5).close()
        raise AssertionError("the server still listens after stop()")
    except OSError:
        pass
    nats_server.start()
    with socket.create_connection(("127.0.0.1", nats_server.port)) as s:
        assert s.recv(4) == b"INFO"
