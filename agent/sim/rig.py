"""The rig around a daemon on this machine: a simulated card terminal on a pty, a local webhook sink, and
the configuration that joins them, with a state directory.

The demo, the end-to-end and fault tests and the benchmarks all run the real
daemon this way; one rig keeps them from drifting apart in how they do it.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from agent.config import LoadedConfig, parse_config
from agent.service.daemon import Daemon
from agent.sim.sink import Received, WebhookSink
from agent.sim.terminal import PtyTerminal
from drivers.clock import SYSTEM_CLOCK, Clock

SHOP_CONFIG = """\
[shop]
name = "{name}"
till = "{till}"
timezone = "Asia/Shanghai"
{shop_extra}
[[source]]
name = "terminal"
protocol = "{protocol}"
port = "{device}"
baudrate = 115200

[rules.DUP-001]
window = "10m"

[[channel]]
name = "{channel}"
type = "webhook"
url = "{url}"
secret = "{secret}"
"""

CHANNEL = "back-office"


def new_secret() -> str:
    """A fresh Standard Webhooks signing secret."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def shop_config(*, name: str, device: str | os.PathLike[str], url: str, secret: str, protocol: str = "cn_ecr",
                till: str = "till-1", shop_extra: str = "") -> str:
    """One terminal line into one webhook channel; ``shop_extra`` is TOML placed after ``[shop]``."""
    return SHOP_CONFIG.format(name=name, till=till, shop_extra=shop_extra, protocol=protocol, device=device,
                              channel=CHANNEL, url=url, secret=secret)


class ShopRig:
    """A pty terminal, a signature-checking webhook sink and a state directory, ready for a daemon.

    ``state=None`` makes a temporary directory removed by :meth:`close`. ``device`` points the
    configuration elsewhere than the pty (a udev-style symlink to it, for instance).
    """

    def __init__(self, *, name: str, protocol: str = "cn_ecr", till: str = "till-1", shop_extra: str = "",
                 state: Path | None = None, device: str | os.PathLike[str] | None = None,
                 clock: Clock = SYSTEM_CLOCK, sink_tolerance: int = 300, secret: str | None = None) -> None:
        self.clock = clock
        self.secret = secret or new_secret()
        self.sink = WebhookSink(secret=self.secret, tolerance=sink_tolerance, clock=clock).start()
        self.terminal = PtyTerminal()
        self._holder: tempfile.TemporaryDirectory[str] | None = None
        if state is None:
            self._holder = tempfile.TemporaryDirectory(prefix="settleguard-")
            state = Path(self._holder.name)
        self.state: Path = state
        self.config_text = shop_config(name=name, till=till, shop_extra=shop_extra, protocol=protocol,
                                       device=device or self.terminal.device, url=self.sink.url, secret=self.secret)

    @property
    def received(self) -> list[Received]:
        return self.sink.received

    def loaded(self) -> LoadedConfig:
        return parse_config(self.config_text, "<rig>")

    def write_config(self, path: Path) -> Path:
        path.write_text(self.config_text, encoding="utf-8")
        return path

    def daemon(self, **options: Any) -> Daemon:
        """The daemon on this rig's configuration, clock and state; the schedule is the caller's to drive."""
        options.setdefault("use_scheduler", False)
        return Daemon(self.loaded(), self.state, clock=self.clock, **options)

    def reopen_sink(self) -> WebhookSink:
        """The receiver back on its port after ``sink.stop()``: a new sink, empty (the caller keeps the old one)."""
        self.sink = WebhookSink(secret=self.secret, tolerance=self.sink.tolerance, clock=self.clock,
                                port=self.sink.port).start()
        return self.sink

    def close(self) -> None:
        self.terminal.close()
        self.sink.stop()
        if self._holder is not None:
            self._holder.cleanup()

    def __enter__(self) -> ShopRig:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
