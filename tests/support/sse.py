"""Read a server-sent event stream exactly as bytes arrive, for checks on the wire format."""

from __future__ import annotations

import json
from typing import Any

import httpx


def events(response: httpx.Response) -> list[str]:
    """The `data:` payloads of a finished stream, in order; asserts the framing is exact."""
    raw = response.read().decode()
    assert raw.endswith("\n\n"), raw[-200:]
    chunks = raw[:-2].split("\n\n")
    payloads = []
    for chunk in chunks:
        assert chunk.startswith("data: ") and "\n" not in chunk, repr(chunk)
        payloads.append(chunk[len("data: ") :])
    return payloads


def json_events(payloads: list[str]) -> list[dict[str, Any]]:
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]
