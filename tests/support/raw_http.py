"""HTTP spoken byte by byte, as slow and hostile clients speak it: a request cut anywhere, sent at any pace,
from any loopback address (Linux answers for all of 127.0.0.0/8), and what came back until the server
closed the connection."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


def address(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    return parts.hostname or "127.0.0.1", parts.port or 80


@dataclass
class Reply:
    """What the server sent until it closed the connection, and how long that took."""

    raw: bytes
    seconds: float

    @property
    def status(self) -> int | None:
        line = self.raw.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 and line[0].startswith(b"HTTP/") else None

    def header(self, name: str) -> str | None:
        head = self.raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        for line in head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    def json(self) -> Any:
        return json.loads(self.raw.split(b"\r\n\r\n", 1)[1])


def connect(base_url: str, source: str | None = None) -> socket.socket:
    return socket.create_connection(address(base_url), timeout=30, source_address=(source, 0) if source else None)


def read_until_closed(sock: socket.socket, timeout: float = 30) -> Reply:
    began = time.monotonic()
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return Reply(received, time.monotonic() - began)


def exchange(base_url: str, data: bytes, source: str | None = None, timeout: float = 30) -> Reply:
    """Send `data` on a new connection, then read until the server closes it."""
    with connect(base_url, source) as sock:
        sock.sendall(data)
        return read_until_closed(sock, timeout)


def request_head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: wai", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextmanager
def held_connections(
    base_url: str, count: int, sources: list[str], first_bytes: bytes = b""
) -> Iterator[list[socket.socket]]:
    """`count` connections spread over the `sources` addresses, each having sent `first_bytes` and
    then nothing; closed on exit."""
    held: list[socket.socket] = []
    try:
        for index in range(count):
            sock = connect(base_url, sources[index % len(sources)])
            if first_bytes:
                sock.sendall(first_bytes)
            held.append(sock)
        yield held
    finally:
        for sock in held:
            sock.close()


async def closed_within(sockets: list[socket.socket], timeout: float) -> list[bool]:
    """For each socket, whether the server closed it (end of stream) within `timeout` seconds."""

    async def closed(sock: socket.socket) -> bool:
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while (left := deadline - loop.time()) > 0:
                if not await asyncio.wait_for(loop.sock_recv(sock, 65536), left):
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return False

    return list(await asyncio.gather(*(closed(sock) for sock in sockets)))
