"""Bearer-key authentication, and the rule that an open server only listens on loopback."""

from __future__ import annotations

import hmac
import logging

from fastapi import Request

from server import errors
from server.config import LOOPBACK_HOSTS

log = logging.getLogger("wai.auth")


class UnsafeBind(Exception):
    """Refusing to serve without keys on a non-loopback address."""


def check_bind(host: str, api_keys: list[str], insecure: bool) -> None:
    """Without keys, only loopback is safe; anything else needs keys or an explicit --insecure."""
    if api_keys:
        return
    if host in LOOPBACK_HOSTS:
        log.warning("no API keys configured: serving without authentication on loopback (%s) only", host)
        return
    if not insecure:
        raise UnsafeBind(
            f"refusing to serve on {host} without API keys: set api_keys in the config or WAI_API_KEYS, "
            "bind to 127.0.0.1, or pass --insecure"
        )
    log.warning("no API keys configured and --insecure given: anyone who reaches %s can use this server", host)


def key_matches(presented: str, api_keys: list[str]) -> bool:
    # Compare against every key, in constant time, so timing reveals neither the key nor its position.
    matched = False
    for key in api_keys:
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    return matched


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def require_api_key(request: Request) -> None:
    """FastAPI dependency: 401 / 10000 unless the request carries a configured key (or none are set)."""
    api_keys: list[str] = request.app.state.settings.api_keys
    if not api_keys:
        return
    token = bearer_token(request)
    if token is None or not key_matches(token, api_keys):
        raise errors.authentication_error()
