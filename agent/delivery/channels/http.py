"""The one module that imports httpx: a blocking HTTP sender for the delivery thread.

httpx's exceptions are translated here into our HttpFailure so nothing
above this line knows which HTTP library sat below it.
"""

from __future__ import annotations

import logging
import sys

# httpx's package imports its command-line tool (httpx._main: click, rich's console, pygments) whenever
# click is installed, and Flask installs it: 4.6 MiB of the daemon's RSS and ~70 ms at the first alert,
# for a CLI the daemon never runs. A None entry makes that import fail, which httpx handles by design
# (its main() then only says to install httpx[cli]); nothing else of httpx's changes.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx  # noqa: E402  (after the entry above)

from agent.delivery.channels.base import HttpFailure, HttpRequest, HttpResponse  # noqa: E402

# httpx logs every request URL at INFO and httpcore every step at DEBUG; a robot's URL carries its
# credential. Our delivery loop logs what matters (with the redactor); theirs stay quiet.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class HttpxSender:
    def __init__(self, *, timeout: float = 10.0, user_agent: str = "settleguard") -> None:
        # No proxies from the environment: a till talks to its configured endpoints only.
        self.client = httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False,
                                   headers={"User-Agent": user_agent})

    def post(self, request: HttpRequest) -> HttpResponse:
        try:
            response = self.client.post(request.url, content=request.body, headers=request.headers,
                                        timeout=request.timeout)
        except httpx.TimeoutException as exc:
            raise HttpFailure(f"timeout after {request.timeout:g}s ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise HttpFailure(f"{type(exc).__name__}: {exc}") from None
        return HttpResponse(status=response.status_code, headers=dict(response.headers), body=response.content)

    def close(self) -> None:
        self.client.close()
