"""The one module that imports httpx: a blocking HTTP sender for the delivery thread.

httpx's exceptions are translated here into our HttpFailure so nothing
above this line knows which HTTP library sat below it.
"""

from __future__ import annotations

import logging

import httpx

from agent.delivery.channels.base import HttpFailure, HttpRequest, HttpResponse

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
