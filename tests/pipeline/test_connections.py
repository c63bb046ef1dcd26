"""The connection's own defences (server/api/connections.py) on the real app and uvicorn protocol, with
short limits: slow heads and bodies get 408 and lose their connection, an oversized head 431, the
connections past a cap 503 at once; a slow upload that keeps sending is not cut; an unexpected exception
keeps the connection usable; TLS serves from a certificate made here. The same defences on the real
engine's server: tests/integration/test_slow_clients.py."""

from __future__ import annotations

import asyncio
import ssl
import time

import httpx
import pytest
import trustme

from tests.support.fakes import fake_settings
from tests.support.metrics import scrape
from tests.support.raw_http import closed_within, connect, exchange, held_connections, read_until_closed, request_head
from tests.support.servers import serve_app

LIMITS = {
    "header_timeout_s": 1,
    "body_timeout_s": 1,
    "keep_alive_timeout_s": 1,
    "max_header_bytes": 4096,
    "max_connections": 12,
    "max_connections_per_client": 4,
}
RUN = "/client/v4/accounts/a/ai/run/@cf/meta/llama-3-8b-instruct"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with serve_app(fake_settings(tmp_path_factory.mktemp("guarded"), limits=LIMITS)) as app:
        yield app


def refusals(served, reason: str) -> float:
    return scrape(served).value("wai_http_refusals_total", reason=reason)


def test_a_head_slower_than_the_header_timeout_gets_408_in_the_protocols_format(served):
    before = refusals(served, "header_timeout")
    reply = exchange(served.base_url, f"POST {RUN} HTTP/1.1\r\nHost: wai\r\n".encode())
    assert reply.status == 408 and reply.header("connection") == "close"
    assert reply.json()["errors"] == [{"code": 3007, "message": "Request timeout"}]
    assert 0.9 < reply.seconds < 5
    reply = exchange(served.base_url, f"POST {CHAT} HTTP/1.1\r\nHost: wai\r\nX-A: b".encode())
    assert reply.status == 408 and reply.json()["error"]["code"] == "3007"
    assert refusals(served, "header_timeout") == before + 2


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(served):
    reply = exchange(served.base_url, b"")
    assert reply.raw == b"" and reply.seconds < 5


def test_a_body_that_stops_gets_408_and_the_connection_is_closed(served):
    before = refusals(served, "body_timeout")
    head = request_head("POST", CHAT, {"Content-Type": "application/json", "Content-Length": "1000"})
    reply = exchange(served.base_url, head + b'{"model": "x"')
    assert reply.status == 408 and reply.json()["error"] == {
        "message": "Request timeout",
        "type": "timeout_error",
        "param": None,
        "code": "3007",
    }
    assert refusals(served, "body_timeout") == before + 1


def test_a_body_that_keeps_coming_slowly_is_not_cut(served):
    """Every pause shorter than the body timeout, the whole body longer than it: a slow upload."""
    body = b'{"prompt": "' + b"a" * 60 + b'", "max_tokens": 2}'
    with connect(served.base_url) as sock:
        sock.sendall(request_head("POST", RUN, {"Content-Type": "application/json", "Content-Length": str(len(body))}))
        for start in range(0, len(body), 8):
            time.sleep(0.25)
            sock.sendall(body[start : start + 8])
        sock.sendall(request_head("GET", "/healthz", {"Connection": "close"}))
        reply = read_until_closed(sock)
    assert reply.status == 200 and b'"success":true' in reply.raw


def test_an_oversized_head_gets_431(served):
    before = refusals(served, "header_too_large")
    for head in (
        request_head("GET", "/v1/models", {"X-Big": "a" * 64 * 1024}),  # one read, or many
        request_head("GET", "/v1/models", {f"X-{i}": "a" * 100 for i in range(50)}),  # many small headers
    ):
        reply = exchange(served.base_url, head)
        assert reply.status == 431 and reply.json()["error"]["code"] == "3006", reply.raw[:200]
    assert refusals(served, "header_too_large") == before + 2
    small = exchange(served.base_url, request_head("GET", "/healthz", {"X-A": "a" * 2000, "Connection": "close"}))
    assert small.status == 200


def test_connections_past_a_clients_cap_get_503_while_another_client_is_served(served):
    before = refusals(served, "max_connections_per_client")
    with held_connections(served.base_url, LIMITS["max_connections_per_client"], ["127.0.0.5"]):
        reply = exchange(served.base_url, request_head("GET", "/healthz"), source="127.0.0.5")
        assert reply.status == 503 and reply.header("retry-after") is not None
        assert reply.json()["errors"][0]["code"] == 3040
        assert httpx.get(f"{served.base_url}/healthz").status_code == 200  # from 127.0.0.1
    assert refusals(served, "max_connections_per_client") == before + 1
    assert (
        exchange(served.base_url, request_head("GET", "/healthz", {"Connection": "close"}), "127.0.0.5").status == 200
    )


def test_connections_past_the_servers_cap_get_503(served):
    before = refusals(served, "max_connections")
    sources = [f"127.0.1.{n}" for n in range(1, 4)]  # 3 addresses x 4 = the cap of 12
    with held_connections(served.base_url, LIMITS["max_connections"], sources):
        assert exchange(served.base_url, request_head("GET", "/healthz"), source="127.0.1.9").status == 503
    assert refusals(served, "max_connections") == before + 1
    assert scrape(served).value("wai_http_connections_open") <= 1  # the scrape's own


def test_every_slow_connection_is_closed_by_the_header_timeout(served):
    with held_connections(served.base_url, 10, [f"127.0.2.{n}" for n in range(1, 4)], b"GET / HTTP/1.1\r\n") as held:
        assert all(asyncio.run(closed_within(held, timeout=5)))


def test_an_idle_kept_alive_connection_closes_after_its_timeout(served):
    with connect(served.base_url) as sock:
        sock.sendall(request_head("GET", "/healthz"))
        reply = read_until_closed(sock, timeout=10)
    assert reply.status == 200 and 0.9 < reply.seconds < 5  # answered, then closed once idle


def test_an_unexpected_exception_gets_its_500_and_the_connection_stays_usable(served):
    served.text_engine.fail(RuntimeError, "a bug")
    try:
        opened: list[str] = []
        with httpx.Client(base_url=served.base_url, timeout=10) as client:
            trace = {
                "trace": lambda name, info: opened.append(name) if name == "connection.connect_tcp.complete" else None
            }
            body = {"model": served.model, "messages": [{"role": "user", "content": "hi"}]}
            for _ in range(2):
                response = client.post(CHAT, json=body, extensions=trace)
                assert response.status_code == 500 and response.json()["error"]["code"] == "3043"
            served.text_engine.reset()
            assert client.post(CHAT, json=body, extensions=trace).status_code == 200
        assert len(opened) == 1  # one connection served all three
    finally:
        served.text_engine.reset()


def test_tls_serves_from_the_configured_certificate(tmp_path):
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    certificate.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    tls = {"certfile": str(tmp_path / "server.pem"), "keyfile": str(tmp_path / "server.pem")}
    with serve_app(fake_settings(tmp_path, tls=tls)) as app:
        https = app.base_url
        assert https.startswith("https://")
        trusted = ssl.create_default_context()
        authority.configure_trust(trusted)
        response = httpx.post(f"{https}{RUN}", json={"prompt": "Hi", "max_tokens": 2}, verify=trusted)
        assert response.status_code == 200 and response.json()["success"] is True
        with pytest.raises(httpx.ConnectError):  # not a certificate this client trusts
            httpx.get(f"{https}/healthz")
        with pytest.raises(httpx.RemoteProtocolError):  # plain HTTP on the TLS port
            httpx.get(https.replace("https://", "http://") + "/healthz")
