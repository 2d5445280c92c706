"""TCP printer pass-through: sits between the till and a network receipt printer, forwards every byte
unchanged both ways and hands a copy of the till's bytes to the decoder. With ``copy_replies`` it is the
proxy for a LAN payment terminal (issue 17): the answers coming back are copied too, so the decoder reads
the till's requests and the terminal's answers in arrival order (ZVT and the UnionPay-style ECR are strict
request/answer protocols: the two sides do not talk over each other, so one decoder tells them apart).

Whoever can connect can print slips the decoder believes, so the listening surface is kept small
(issue 14, "Listening surfaces"): it binds to an address of this machine -- loopback by default, or
the address of a named interface -- and may take an allow-list of client addresses; a connection from
anyone else is closed before a byte is read or the printer is contacted, counted, and reported once
per address."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from drivers.clock import SYSTEM_CLOCK, Clock
from drivers.transports.base import NOTHING, ByteSource, Chunk, DeviceGone


def parse_host_port(value: str) -> tuple[str, int]:
    """``"0.0.0.0:9100"`` or ``"[::1]:9100"`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected host:port, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host, number


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
WILDCARDS = frozenset({"0.0.0.0", "::"})
LOOPBACK = "127.0.0.1"
IFNAMSIZ = 16               # Linux: interface names are at most 15 bytes
_SIOCGIFADDR = 0x8915       # Linux ioctl: an interface's IPv4 address
# A port scan must not grow the set of addresses already reported without bound.
MAX_REPORTED_PEERS = 64


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_interface_name(host: str) -> bool:
    """What Linux accepts as an interface name (``ip link``): 1-15 bytes, no '/', ':' or whitespace."""
    return 0 < len(host.encode()) < IFNAMSIZ and not any(ch in host for ch in "/: \t\n") and host not in (".", "..")


def parse_allow(entries: Sequence[str]) -> tuple[IpNetwork, ...]:
    """Client addresses or networks (``"192.168.1.23"``, ``"192.168.1.0/24"``, ``"::1"``)."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network like \"192.168.1.0/24\"") from None
    return tuple(networks)


def interface_ipv4(name: str) -> str:
    """The IPv4 address of network interface ``name`` (OSError naming the interfaces there are)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            packed = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:IFNAMSIZ - 1]))
        except OSError as exc:
            raise OSError(exc.errno, f"no IPv4 address on network interface {name!r} "
                                     f"({exc.strerror}; interfaces here: {_interfaces()})") from None
    return socket.inet_ntoa(packed[20:24])


def _interfaces() -> str:
    # /sys, not socket.if_nameindex(): that needs AF_NETLINK, which the systemd unit does not allow.
    try:
        return ", ".join(sorted(os.listdir("/sys/class/net")))
    except OSError:
        return "unknown"


def bind_address(host: str) -> str:
    """The address to bind for a configured listen host: an IP literal as it is; "" and "localhost" as
    loopback; anything else is a network interface's name, bound to that interface's IPv4 address."""
    if host in ("", "localhost"):
        return LOOPBACK
    if is_ip_literal(host):
        return host
    return interface_ipv4(host)


def _peer_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; the allow-list names them as a.b.c.d.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_listen(value: str) -> tuple[str, int]:
    """A listen setting: ``"9100"`` (loopback), ``"127.0.0.1:9100"``, ``"[::1]:9100"``, ``"eth0:9100"``."""
    if value.strip().isdigit():
        return parse_host_port(f"{LOOPBACK}:{value.strip()}")
    return parse_host_port(value.strip())


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(slots=True)
class PassThroughStats:
    connections: int = 0            # till connections accepted and forwarded
    active: int = 0
    refused: int = 0                # over max_connections, closed at once
    refused_peers: int = 0          # from an address not on the allow-list, closed at once
    forward_failures: int = 0       # printer unreachable: the till's connection was closed
    bytes_to_printer: int = 0
    bytes_to_till: int = 0
    bytes_copied_back: int = 0      # with copy_replies: the terminal's answers handed to the decoder
    copies_dropped: int = 0         # the decoder fell behind; printing was not held up
    bytes_dropped: int = 0
    printer_reachable: bool | None = None
    last_error: str | None = None


class _Link:
    """One till connection and its printer connection."""

    def __init__(self, conn_id: int, till: socket.socket, printer: socket.socket) -> None:
        self.conn_id = conn_id
        self.till = till
        self.printer = printer
        self.till_done = threading.Event()

    def abort(self) -> None:
        # shutdown() (unlike close()) wakes the other pump thread blocked on these sockets.
        for sock in (self.till, self.printer):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class TcpPassThrough(ByteSource):
    """Listen where the till prints to (``:9100``) and forward every connection to the printer.

    Bytes go both ways unchanged (printer status replies reach the till). A copy of the
    till->printer bytes is put, without blocking, on a bounded queue that :meth:`read_chunk`
    drains; when the decoder falls behind the copy is dropped and counted, so printing never waits
    for us. If the printer cannot be reached the till's connection is closed (the till retries)
    and ``on_problem`` is told once per change.

    Copies from overlapping connections are delivered in arrival order with a boundary whenever
    the connection changes, so the decoder never joins bytes of two connections into one receipt.
    """

    def __init__(self, listen_host: str, listen_port: int, forward_host: str, forward_port: int, *,
                 name: str | None = None, copy_queue_size: int = 256, recv_size: int = 16 * 1024,
                 connect_timeout: float = 5.0, linger_seconds: float = 5.0, max_connections: int = 8,
                 drain_seconds: float = 2.0, on_problem: Callable[[str], None] | None = None,
                 allow: Sequence[str] = (), clock: Clock = SYSTEM_CLOCK, copy_replies: bool = False) -> None:
        self.listen = (listen_host, listen_port)
        self.copy_replies = copy_replies
        self.allow = parse_allow(allow)     # empty: any client that can reach the listening address
        self._reported_peers: set[str] = set()
        self.forward = (forward_host, forward_port)
        super().__init__(name or f"{listen_host}:{listen_port}")
        self.copy_queue_size = copy_queue_size
        self.recv_size = recv_size
        self.connect_timeout = connect_timeout
        self.linger_seconds = linger_seconds
        self.max_connections = max_connections
        self.drain_seconds = drain_seconds
        self.on_problem = on_problem
        self.clock = clock
        self.stats = PassThroughStats()
        self.address: tuple[str, int] | None = None
        self._copies: queue.Queue[tuple[int, bytes | None]] = queue.Queue(maxsize=copy_queue_size)
        self._lock = threading.Lock()
        self._stopping = threading.Event()   # no new connections
        self._abort = threading.Event()      # cut the open ones
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._accept_error: str | None = None
        self._links: dict[int, _Link] = {}
        self._threads: set[threading.Thread] = set()
        self._next_id = 0
        self._copy_conn: int | None = None   # connection whose bytes the decoder is in the middle of
        self._held: tuple[int, bytes | None] | None = None
        self._end_lost = False

    def describe(self) -> str:
        return f"tcp pass-through {_host_port(*(self.address or self.listen))} -> {_host_port(*self.forward)}"

    @property
    def copy_backlog(self) -> int:
        return self._copies.qsize()

    def _open(self) -> None:
        self._close()
        self._stopping.clear()
        self._abort.clear()
        self._accept_error = None
        self._copies = queue.Queue(maxsize=self.copy_queue_size)
        self._copy_conn, self._held, self._end_lost = None, None, False
        host = bind_address(self.listen[0])
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, self.listen[1]), family=family, reuse_port=False)
        listener.settimeout(0.2)  # lets the accept loop notice stop; closing does not wake accept()
        self._listener = listener
        host, port = listener.getsockname()[:2]
        self.address = (host, port)
        self._acceptor = threading.Thread(target=self._accept_loop, args=(listener,),
                                          name=f"passthrough-accept:{port}", daemon=True)
        self._acceptor.start()

    def _close(self) -> None:
        self._stopping.set()
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.join(timeout=2.0)
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            threads = list(self._threads)
        # A restart of the agent should not cut a receipt in half: let running jobs finish.
        deadline = self.clock.monotonic() + self.drain_seconds
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - self.clock.monotonic()))
        self._abort.set()
        with self._lock:
            links = list(self._links.values())
            threads = list(self._threads)
        for link in links:
            link.abort()
        for thread in threads:
            thread.join(timeout=2.0)

    def _read_chunk(self, timeout: float) -> Chunk:
        if self._accept_error is not None:
            raise DeviceGone(f"{self.describe()}: {self._accept_error}")
        item = self._held
        self._held = None
        if item is None:
            try:
                item = self._copies.get(timeout=timeout)
            except queue.Empty:
                with self._lock:
                    end_lost, self._end_lost = self._end_lost, False
                if end_lost and self._copy_conn is not None:
                    self._copy_conn = None
                    return Chunk(b"", boundary=True)
                return NOTHING
        conn_id, data = item
        if data is None:
            if conn_id == self._copy_conn:
                self._copy_conn = None
                return Chunk(b"", boundary=True)
            return NOTHING  # already flushed when another connection took over
        if self._copy_conn is not None and conn_id != self._copy_conn:
            self._held = item
            self._copy_conn = None
            return Chunk(b"", boundary=True)
        self._copy_conn = conn_id
        return Chunk(data)

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                till, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if not self._stopping.is_set():
                    self._accept_error = f"accept failed: {exc}"
                return
            if not self._allowed(str(peer[0])):
                till.close()   # before reading a byte or contacting the printer
                continue
            with self._lock:
                over = self.stats.active >= self.max_connections
                if over:
                    self.stats.refused += 1
                else:
                    self.stats.active += 1
                    self._next_id += 1
                    conn_id = self._next_id
            if over:
                till.close()
                self._problem(f"more than {self.max_connections} till connections; refused one")
                continue
            thread = threading.Thread(target=self._serve, args=(till, conn_id),
                                      name=f"passthrough-conn:{conn_id}", daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _allowed(self, address: str) -> bool:
        if not self.allow:
            return True
        try:
            ip = _peer_ip(address)
        except ValueError:
            ip = None
        if ip is not None and any(ip.version == net.version and ip in net for net in self.allow):
            return True
        with self._lock:
            self.stats.refused_peers += 1
            first = address not in self._reported_peers and len(self._reported_peers) < MAX_REPORTED_PEERS
            if first:
                self._reported_peers.add(address)
        if first:
            self._problem(f"refused a connection from {address}: not on this source's allow list "
                          f"(further refusals from it are only counted)")
        return False

    def _serve(self, till: socket.socket, conn_id: int) -> None:
        try:
            try:
                printer = socket.create_connection(self.forward, timeout=self.connect_timeout)
            except OSError as exc:
                self._printer_down(exc)
                till.close()
                return
            self._printer_up()
            # Blocking sends: a printer that stalls (paper out) holds the till back through TCP,
            # exactly as it would without us. A send timeout could cut a job in the middle.
            printer.settimeout(None)
            till.settimeout(None)
            link = _Link(conn_id, till, printer)
            with self._lock:
                self._links[conn_id] = link
            back = threading.Thread(target=self._pump_back, args=(link,),
                                    name=f"passthrough-back:{conn_id}", daemon=True)
            back.start()
            try:
                self._pump_forward(link)
            finally:
                back.join()
                with self._lock:
                    self._links.pop(conn_id, None)
                printer.close()
                till.close()
        finally:
            self._copy(conn_id, None)
            with self._lock:
                self.stats.active -= 1
                self._threads.discard(threading.current_thread())

    def _pump_forward(self, link: _Link) -> None:
        try:
            with _poller(link.till) as wait_readable:
                while not self._abort.is_set():
                    if not wait_readable(0.25):
                        continue
                    data = link.till.recv(self.recv_size)
                    if not data:
                        link.printer.shutdown(socket.SHUT_WR)  # the printer sees the job end
                        return
                    if self.copy_replies:
                        # A terminal answers within milliseconds: copy the request before it can, so the
                        # decoder reads the conversation in its real order.
                        self._copy(link.conn_id, data)
                    link.printer.sendall(data)
                    with self._lock:
                        self.stats.bytes_to_printer += len(data)
                    if not self.copy_replies:
                        self._copy(link.conn_id, data)
        except OSError as exc:
            self._note(f"connection {link.conn_id}: till->printer: {exc}")
            link.abort()
        finally:
            link.till_done.set()

    def _pump_back(self, link: _Link) -> None:
        deadline: float | None = None
        try:
            with _poller(link.printer) as wait_readable:
                while not self._abort.is_set():
                    if link.till_done.is_set() and deadline is None:
                        # The till has finished sending; give the printer a moment for status bytes.
                        deadline = self.clock.monotonic() + self.linger_seconds
                    if deadline is not None and self.clock.monotonic() >= deadline:
                        break
                    if not wait_readable(0.25):
                        continue
                    data = link.printer.recv(self.recv_size)
                    if not data:
                        with contextlib.suppress(OSError):
                            link.till.shutdown(socket.SHUT_WR)
                        break
                    if self.copy_replies:
                        # Copied before it is passed on (never blocks): the till's next request cannot
                        # be copied ahead of the answer it reacts to.
                        self._copy(link.conn_id, data)
                    link.till.sendall(data)
                    with self._lock:
                        self.stats.bytes_to_till += len(data)
                        if self.copy_replies:
                            self.stats.bytes_copied_back += len(data)
        except OSError as exc:
            self._note(f"connection {link.conn_id}: printer->till: {exc}")
            link.abort()
        # A printer that only half-closed may still be reading: the forward pump carries on.

    def _copy(self, conn_id: int, data: bytes | None) -> None:
        try:
            self._copies.put_nowait((conn_id, data))
        except queue.Full:
            with self._lock:
                if data is None:
                    self._end_lost = True
                else:
                    self.stats.copies_dropped += 1
                    self.stats.bytes_dropped += len(data)

    def _printer_down(self, exc: OSError) -> None:
        with self._lock:
            self.stats.forward_failures += 1
            changed = self.stats.printer_reachable is not False
            self.stats.printer_reachable = False
        message = (f"{self._peer} {_host_port(*self.forward)} unreachable ({exc}); "
                   "closed the till's connection so it retries")
        self._note(message)
        if changed:
            self._problem(message)

    def _printer_up(self) -> None:
        with self._lock:
            changed = self.stats.printer_reachable is False
            self.stats.printer_reachable = True
        if changed:
            self._problem(f"{self._peer} {_host_port(*self.forward)} reachable again")

    @property
    def _peer(self) -> str:
        return "terminal" if self.copy_replies else "printer"

    def _note(self, message: str) -> None:
        with self._lock:
            self.stats.last_error = message

    def _problem(self, message: str) -> None:
        if self.on_problem is None:
            return
        # A failing reporter must not take a till connection down with it.
        with contextlib.suppress(Exception):
            self.on_problem(message)


@contextlib.contextmanager
def _poller(sock: socket.socket) -> Iterator[Callable[[float], bool]]:
    """wait(timeout) -> True when ``sock`` is readable (data, EOF or error). Not limited to fd < 1024."""
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    try:
        yield lambda timeout: bool(sel.select(timeout))
    finally:
        sel.close()
