"""The printer pass-through's listening surface (issue 14, "Listening surfaces").

Whoever can connect to the printer port can print slips settleguard believes (observation 4 forged a
void that way from the LAN through the example config's ``0.0.0.0:9100``). The port now binds to
loopback or one interface, an allow-list refuses everyone else before a byte is read, and the
configuration refuses "every interface" without an allow-list. Real sockets on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import ConfigError, parse_config
from agent.sources import build_transport
from drivers.transports import DeviceGone, TcpPassThrough
from tests.test_transport_tcp import FakePrinter, listening, print_from_till
from tests.transport_support import RECEIPT, WAIT, Recorder, running

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "settleguard.example.toml"


@pytest.fixture
def printer() -> Iterator[FakePrinter]:
    p = FakePrinter()
    yield p
    p.close()


def knock(address: tuple[str, int], data: bytes) -> bytes:
    """Connect, send a job, and return whatever comes back before the connection ends."""
    with socket.create_connection(address, timeout=WAIT) as till:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            till.sendall(data)
        try:
            return till.recv(4096)
        except ConnectionResetError:   # closed with our bytes unread: as clear to a till as an EOF
            return b""


def test_an_allow_list_without_the_client_refuses_it_before_the_printer_hears_anything(
        printer: FakePrinter) -> None:
    problems: list[str] = []
    passthrough = TcpPassThrough("127.0.0.1", 0, "127.0.0.1", printer.port, allow=["192.0.2.0/24", "::1"],
                                 on_problem=problems.append)
    rec = Recorder()
    with running(passthrough, rec):
        address = listening(passthrough, rec)
        for _ in range(3):
            assert knock(address, RECEIPT) == b""   # no printer status byte: the printer was never reached
        # Counted before the connection was closed, so the till's EOF means it is already recorded.
        assert passthrough.stats.refused_peers == 3
    assert passthrough.stats.connections == 0 and passthrough.stats.bytes_to_printer == 0
    assert printer.jobs == [] and rec.jobs == []
    assert len(problems) == 1 and "127.0.0.1" in problems[0] and "allow list" in problems[0]


@pytest.mark.parametrize("allow", [["127.0.0.1"], ["192.0.2.7", "127.0.0.0/8"]])
def test_an_allow_list_with_the_client_forwards_and_decodes_as_before(
        printer: FakePrinter, allow: list[str]) -> None:
    passthrough = TcpPassThrough("127.0.0.1", 0, "127.0.0.1", printer.port, allow=allow)
    rec = Recorder()
    with running(passthrough, rec):
        address = listening(passthrough, rec)
        assert print_from_till(address, RECEIPT) == FakePrinter.STATUS
        assert printer.wait_jobs(1) == [RECEIPT]
        rec.wait_for(lambda: len(rec.jobs) == 1, "a copy of the job")
    assert rec.jobs == [RECEIPT] and passthrough.stats.refused_peers == 0


def test_a_named_interface_binds_to_that_interfaces_address(printer: FakePrinter) -> None:
    passthrough = TcpPassThrough("lo", 0, "127.0.0.1", printer.port)
    rec = Recorder()
    with running(passthrough, rec):
        address = listening(passthrough, rec)
        assert address[0] == "127.0.0.1"
        assert print_from_till(address, RECEIPT) == FakePrinter.STATUS


def test_an_interface_that_is_not_there_is_a_clear_device_error() -> None:
    passthrough = TcpPassThrough("nosuch0", 0, "127.0.0.1", 9)
    with pytest.raises(DeviceGone, match=r"no IPv4 address on network interface 'nosuch0'.*interfaces here: .*\blo\b"):
        passthrough.open()
    passthrough.close()


# -- configuration ----------------------------------------------------------------------------------

SOURCE = """
[shop]
name = "x"

[[source]]
name = "printer"
protocol = "escpos"
{lines}
"""


def source_config(*lines: str) -> str:
    return SOURCE.format(lines="\n".join(lines))


def test_the_example_config_does_not_open_the_printer_port_to_the_lan() -> None:
    for src in parse_config(EXAMPLE.read_text(encoding="utf-8").replace("env:", "")).config.source:
        if src.listen:
            transport = build_transport(src)
            assert isinstance(transport, TcpPassThrough)
            assert transport.listen[0] in ("127.0.0.1", "::1", "localhost"), src.listen


@pytest.mark.parametrize("listen", ["0.0.0.0:9100", "[::]:9100"])
def test_every_interface_without_an_allow_list_is_refused_naming_file_line_and_field(listen: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(source_config(f'listen = "{listen}"', 'forward = "192.168.1.50:9100"'), "shop.toml")
    message = str(refused.value)
    assert message.startswith("shop.toml, line 5: source[0] (printer): listen on all interfaces")
    assert 'allow = ["192.168.1.23"]' in message


def test_every_interface_with_an_allow_list_is_accepted_and_reaches_the_transport() -> None:
    loaded = parse_config(source_config('listen = "0.0.0.0:9100"', 'forward = "192.168.1.50:9100"',
                                        'allow = ["192.168.1.23", "10.0.0.0/24"]'))
    transport = build_transport(loaded.config.source[0])
    assert isinstance(transport, TcpPassThrough)
    assert [str(n) for n in transport.allow] == ["192.168.1.23/32", "10.0.0.0/24"]


@pytest.mark.parametrize(("listen", "bound"), [
    ("9100", ("127.0.0.1", 9100)),            # a bare port: loopback
    ("[::1]:9100", ("::1", 9100)),
    ("eth0:9100", ("eth0", 9100)),            # an interface, resolved when the port opens
    ("localhost:9100", ("localhost", 9100)),
])
def test_loopback_an_address_or_an_interface_are_accepted(listen: str, bound: tuple[str, int]) -> None:
    loaded = parse_config(source_config(f'listen = "{listen}"', 'forward = "192.168.1.50:9100"'))
    transport = build_transport(loaded.config.source[0])
    assert isinstance(transport, TcpPassThrough) and transport.listen == bound


@pytest.mark.parametrize(("lines", "line", "expected"), [
    (('listen = "127.0.0.1:9100"', 'forward = "192.168.1.50:9100"', 'allow = ["192.168.1.23", "the till"]'),
     10, "allow: allow[1]: 'the till' is not an IP address or network"),
    (('listen = "127.0.0.1:9100"', 'forward = "192.168.1.50:9100"', 'allow = ["192.168.1.0/33"]'),
     10, "is not an IP address or network"),
    (('spool = "/var/spool/x"', 'allow = ["192.168.1.23"]'), 5, "allow only applies to a TCP pass-through"),
    (('listen = "my printer port:9100"', 'forward = "192.168.1.50:9100"'), 5,
     "is neither an IP address of this machine nor a network interface name"),
    (('listen = "127.0.0.1"', 'forward = "192.168.1.50:9100"'), 5, "listen must look like"),
])
def test_bad_listen_settings_are_refused(lines: tuple[str, ...], line: int, expected: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(source_config(*lines), "shop.toml")
    assert expected in str(refused.value)
    assert refused.value.line == line
