"""The HTTP connection's own defences against slow and hostile clients, below the app.

uvicorn's httptools protocol with what nginx does in front of an app (client_header_timeout,
client_body_timeout, large_client_header_buffers, limit_conn), for a node that faces clients itself:
- a request's headers must arrive within `limits.header_timeout_s` of its first byte (or of the
  connection's opening), and its body may pause no longer than `limits.body_timeout_s` between two
  reads, as nginx's timeouts: a slow upload that keeps sending is never cut;
- headers over `limits.max_header_bytes` get 431;
- open connections are capped in all and per client address; the excess is answered at once with 503
  and `Retry-After`, instead of running the process out of file descriptors.
A late or oversized request gets its answer in the caller's protocol where one is still possible, and
its connection is closed either way; every refusal counts in `wai_http_refusals_total` by reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections import Counter
from typing import Any

import httptools
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from server import errors, metrics
from server.api.errors import wire_body
from server.config import Limits

log = logging.getLogger("wai.connections")

# After a refusal, how long the connection stays half-open to read (and drop) what the client still
# sends, so that its own closing does not reset the connection before the client reads the answer
# (nginx's lingering close).
LINGER_S = 2.0
# File descriptors kept for what is not a client connection: the engine's sockets, logs, the batch
# database, adapter files, the metrics folder.
RESERVED_DESCRIPTORS = 256


def connection_cap(configured: int) -> int:
    """`limits.max_connections`, lowered to what the process's file-descriptor limit can hold."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or configured <= soft - RESERVED_DESCRIPTORS:
        return configured
    cap = max(1, soft - RESERVED_DESCRIPTORS)
    log.warning("limits.max_connections %d lowered to %d: the file-descriptor limit is %d", configured, cap, soft)
    return cap


class Ledger:
    """The connections one process has open, in all and per client address."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.open = 0
        self.by_client: Counter[str] = Counter()

    def admit(self, client: str, limits: Limits) -> str | None:
        """Count a new connection in, or say why it is refused (a refusal reason)."""
        if self.open >= self.max_connections:
            return "max_connections"
        if self.by_client[client] >= limits.max_connections_per_client:
            return "max_connections_per_client"
        self.open += 1
        self.by_client[client] += 1
        metrics.CONNECTIONS_OPEN.inc()
        return None

    def release(self, client: str) -> None:
        self.open -= 1
        self.by_client[client] -= 1
        if not self.by_client[client]:
            del self.by_client[client]
        metrics.CONNECTIONS_OPEN.dec()


def guarded_http(limits: Limits) -> type[HttpToolsProtocol]:
    """uvicorn's `http` protocol class for a server with these limits (one ledger per server)."""
    ledger = Ledger(connection_cap(limits.max_connections))
    return type("GuardedHttp", (GuardedHttp,), {"limits": limits, "ledger": ledger})


class GuardedHttp(HttpToolsProtocol):
    limits: Limits
    ledger: Ledger

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counted_as: str | None = None  # the client address this connection is counted under
        self.timer: asyncio.TimerHandle | None = None
        self.reading_headers = True
        self.request_begun = False
        self.head_bytes = 0  # of the request being read, as received, while its head is incomplete
        self.header_bytes = 0  # the same, as parsed: the request line and each header
        self.body_expected = False
        self.refused = False  # answered and closing: what comes now is dropped

    # --- the connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        client = self.client[0] if self.client else ""
        refused = self.ledger.admit(client, self.limits)
        if refused is not None:
            self.refuse(refused, errors.service_unavailable())
            return
        self.counted_as = client
        self.wait_for_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_timer()
        if self.counted_as is not None:
            self.ledger.release(self.counted_as)
            self.counted_as = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        super().data_received(data)
        # A head still incomplete after this read is all of what came: the parser holds an unfinished
        # header without calling back. (A read that completed the head was measured by the callbacks,
        # without the body that came with it.)
        if self.reading_headers and self.request_begun:
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_header_bytes:
                self.refuse("header_too_large", errors.headers_too_large(self.limits.max_header_bytes))

    # --- the parser's callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.reading_headers, self.request_begun = True, True
        self.head_bytes = self.header_bytes = 0
        if self.timer is None:  # the next request on a kept-alive connection
            self.wait_for_headers()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self.header_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self.header_bytes <= self.limits.max_header_bytes:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.stop_timer()
        self.reading_headers = False
        if self.header_bytes > self.limits.max_header_bytes:
            self.refuse("header_too_large", errors.headers_too_large(self.limits.max_header_bytes))
            return
        self.body_expected = self.has_body()
        super().on_headers_complete()
        if self.body_expected:
            self.wait_for_body()

    def on_body(self, body: bytes) -> None:
        if self.refused:
            return
        super().on_body(body)
        if self.body_expected:
            self.wait_for_body()

    def on_message_complete(self) -> None:
        if self.refused:
            return
        self.body_expected = False
        self.request_begun = False
        self.stop_timer()
        super().on_message_complete()

    # --- timeouts and refusals ----------------------------------------------------------------

    def has_body(self) -> bool:
        headers = dict(self.headers)
        length = headers.get(b"content-length", b"0").strip()
        return headers.get(b"transfer-encoding") is not None or (length.isdigit() and int(length) > 0)

    def wait_for_headers(self) -> None:
        self.restart_timer(self.limits.header_timeout_s, self.headers_too_slow)

    def wait_for_body(self) -> None:
        self.restart_timer(self.limits.body_timeout_s, self.body_too_slow)

    def restart_timer(self, seconds: float, then: Any) -> None:
        self.stop_timer()
        self.timer = self.loop.call_later(seconds, then)

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def headers_too_slow(self) -> None:
        self.timer = None
        if self.request_begun:
            self.refuse("header_timeout", errors.request_timeout())
        else:  # a connection that never sent a byte: nothing to answer
            self.count_and_close("header_timeout")

    def body_too_slow(self) -> None:
        self.timer = None
        if self.flow.read_paused:  # the app is behind, not the client: wait on
            self.wait_for_body()
            return
        if self.cycle is not None and self.cycle.response_started:
            self.count_and_close("body_timeout")
        else:
            self.refuse("body_timeout", errors.request_timeout())

    def refuse(self, reason: str, error: errors.WaiError) -> None:
        """Answer `error` in the caller's protocol (by the path, where it is known yet) and close."""
        if self.refused or self.transport.is_closing():
            return
        status, body = wire_body(self.request_path(), error)
        content = json.dumps(body).encode()
        head = {"content-type": "application/json", "content-length": str(len(content)), "connection": "close"}
        lines = [STATUS_LINE[status]] + [f"{k}: {v}\r\n".encode() for k, v in {**head, **error.headers}.items()]
        self.transport.write(b"".join([*lines, b"\r\n", content]))
        self.count_and_close(reason)

    def request_path(self) -> str:
        """The path of the request being read, once its request line has come; else ""."""
        if self.scope and "path" in self.scope:
            return self.scope["path"]
        try:
            return httptools.parse_url(self.url).path.decode("ascii", "replace") if self.request_begun else ""
        except (httptools.HttpParserInvalidURLError, AttributeError):
            return ""

    def count_and_close(self, reason: str) -> None:
        metrics.HTTP_REFUSALS.labels(reason=reason).inc()
        self.refused = True
        self.stop_timer()
        if self.cycle is not None:
            self.cycle.keep_alive = False
            if not self.cycle.response_complete:  # the app reading the body sees the client gone
                self.cycle.disconnected = True
                self.cycle.message_event.set()
        if self.transport.can_write_eof():  # the answer goes out, then the client's end is awaited
            self.transport.write_eof()
            self.timer = self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()


class ErrorsEndWithTheirAnswer:
    """Starlette re-raises an unexpected exception after its handler sent the 500 (in the protocol's
    format, server/api/errors.py), and uvicorn then closes the connection. Once that answer is complete
    nothing is left to fail: the exception, logged by the handler, ends here, and the client's
    connection stays usable for its next request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answered = False

        async def send_and_note(message: Message) -> None:
            nonlocal answered
            await send(message)
            answered = message["type"] == "http.response.body" and not message.get("more_body", False)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            if not answered:
                raise
