"""Connections: a header-read timeout and a per-client cap, inside uvicorn's h11 protocol.

uvicorn alone has neither: its keep-alive timer is cancelled by any byte received (a
client dripping one header byte at a time holds the connection forever), and its
``limit_concurrency`` counts *sockets*, so idle connections turn every request,
``/health`` included, into a plain-text 503. Here admission is per request (see
`inference.serving.admission`), uvicorn's socket limit is off, and:

* the request line and headers must arrive within `header_timeout_s` of the connection
  opening or of the previous response (else the connection is closed);
* one client address holds at most `max_connections_per_client` connections; more are
  answered 503 and closed at once, so one client cannot use up the process's sockets.

`uvicorn_config(service)` builds the uvicorn config with this protocol.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("inference.serve")

_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"connection: close\r\nretry-after: 2\r\ncontent-length: %d\r\n\r\n%s"
)
_REFUSED_BODY = (
    b'{"error": {"message": "too many connections from this client", '
    b'"type": "server_error", "code": "too_many_connections"}}'
)


@dataclass
class ConnectionGuard:
    header_timeout_s: float = 10.0
    max_connections_per_client: int = 256
    by_client: Counter[str] = field(default_factory=Counter)
    open: int = 0
    opened_total: int = 0
    refused_total: int = 0
    header_timeouts_total: int = 0

    def admit(self, client: str) -> bool:
        if self.by_client[client] >= self.max_connections_per_client:
            self.refused_total += 1
            return False
        self.by_client[client] += 1
        self.open += 1
        self.opened_total += 1
        return True

    def leave(self, client: str) -> None:
        self.open -= 1
        self.by_client[client] -= 1
        if self.by_client[client] <= 0:
            del self.by_client[client]

    def snapshot(self) -> dict[str, int]:
        return {
            "open": self.open,
            "opened_total": self.opened_total,
            "refused_total": self.refused_total,
            "header_timeouts_total": self.header_timeouts_total,
        }


def guarded_protocol(guard: ConnectionGuard) -> type[H11Protocol]:
    """uvicorn's h11 protocol with `guard`'s header timeout and per-client cap."""

    class GuardedH11Protocol(H11Protocol):
        _guard_client: str | None = None
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            client = self.client[0] if self.client else "unknown"
            if not guard.admit(client):
                transport.write(_REFUSED % (len(_REFUSED_BODY), _REFUSED_BODY))
                transport.close()
                return
            self._guard_client = client
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(guard.header_timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _waiting_for_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _expired(self) -> None:
            self._header_timer = None
            if self._waiting_for_headers() and not self.transport.is_closing():
                guard.header_timeouts_total += 1
                log.info("closing %s: no complete request headers in %gs", self.client,
                         guard.header_timeout_s)  # fmt: skip
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._header_timer is not None and not self._waiting_for_headers():
                self._disarm()  # the request line and headers are in

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self._waiting_for_headers():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._guard_client is not None:
                guard.leave(self._guard_client)
                self._guard_client = None
            super().connection_lost(exc)

    return GuardedH11Protocol


def uvicorn_config(service: Any, host: str, port: int, **kwargs: Any) -> Any:
    """A `uvicorn.Config` serving `service` (from `create_app`) with its connection guard."""
    import uvicorn

    limits = service.config.limits
    return uvicorn.Config(
        service,
        host=host,
        port=port,
        http=guarded_protocol(service.guard),
        timeout_keep_alive=limits.keepalive_timeout_s,
        limit_concurrency=None,  # admission is per request, not per socket
        **kwargs,
    )
