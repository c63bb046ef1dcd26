"""AI Gateways made through the gateways API for a test: each test its own, so that no test sees
another's cache, rate limit or logs."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

ACCOUNT = "test-account"


def gateways_path(account: str = ACCOUNT) -> str:
    return f"/client/v4/accounts/{account}/ai-gateway/gateways"


def new_gateway(client: httpx.Client, prefix: str = "g", account: str = ACCOUNT, **settings: Any) -> str:
    """A new gateway's id: caching, rate limit and retries off, logs on, unless `settings` say otherwise."""
    gateway_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
    body = {
        "id": gateway_id,
        "cache_ttl": 0,
        "cache_invalidate_on_update": False,
        "collect_logs": True,
        "rate_limiting_interval": 0,
        "rate_limiting_limit": 0,
        "rate_limiting_technique": "fixed",
        **settings,
    }
    answer = client.post(gateways_path(account), json=body)
    assert answer.status_code == 200, answer.text
    return gateway_id
