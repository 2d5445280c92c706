"""The daemon's HTTP sender, built when it is first needed rather than before READY.

Building httpx's client imports httpx and httpcore (which imports trio when it is installed) and loads the
CA bundle into an SSL context: ~0.15-0.3 s on a till, which start-up used to spend before telling systemd
READY=1 even with no HTTP channel configured (issue 20: READY <= 0.4 s). The first delivery builds it,
once, under a lock (the delivery thread is the only caller; the lock keeps that true if it ever is not),
so the first alert after a start pays those ~0.2 s; a till with no HTTP channel never pays them. Not
warmed up on a thread after READY: that import competes for the CPU just when the first events arrive.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.delivery.channels.base import HttpRequest, HttpResponse
    from agent.delivery.channels.http import HttpxSender


class LazyHttpxSender:
    def __init__(self, *, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._sender: HttpxSender | None = None
        self._closed = False

    def ensure(self) -> HttpxSender:
        with self._lock:
            if self._sender is None:
                from agent.delivery.channels.http import HttpxSender

                self._sender = HttpxSender(timeout=self.timeout)
                if self._closed:             # closed while it was being built: close it at once
                    self._sender.close()
            return self._sender

    @property
    def built(self) -> bool:
        return self._sender is not None

    def post(self, request: HttpRequest) -> HttpResponse:
        return self.ensure().post(request)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._sender is not None:
                self._sender.close()
