"""Workers AI's envelope, OpenAI's and Anthropic's error objects: read an answer after checking its shape,
or say what is wrong with an error answer, by path.

Written from the wire formats (README, docs/compatibility.md), not from the server's own rendering code,
so that a path rendered in the wrong protocol fails here.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

import httpx

# --- reading an answer ------------------------------------------------------------------------------


def result(response: httpx.Response) -> dict[str, Any]:
    """A Workers AI success envelope's result."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    return body["result"]


def workers_ai_error(response: httpx.Response, status: int, code: int) -> str:
    """The message of a Workers AI failure envelope, after checking its status, code and shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["result"] == {} and body["messages"] == []
    [error] = body["errors"]
    assert error["code"] == code, body
    return error["message"]


def openai_body(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


def openai_error(response: httpx.Response, status: int, code: int | str | None = None) -> dict[str, Any]:
    """An OpenAI error object, after checking its status, shape and, when given, its code (OpenAI's own,
    or the Workers AI code as a string)."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == str(code), error
    return error


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    """Workers AI's usage object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


# --- what is wrong with an error answer ---------------------------------------------------------------

# The OpenAI API lives at /v1/... and at Cloudflare's /client/v4/accounts/{account_id}/ai/v1/...
OPENAI_PATH = re.compile(r"^(/v1/|/client/v4/accounts/[^/]+/ai/v1/)")
# Anthropic's Messages API beside it: /v1/messages and /v1/messages/count_tokens.
ANTHROPIC_PATH = re.compile(r"^(/v1/|/client/v4/accounts/[^/]+/ai/v1/)messages(/count_tokens)?$")
WORKERS_AI_PATH = re.compile(r"^/client/v4/")


def protocol_of(path: str) -> str | None:
    """'anthropic', 'openai', 'workers_ai', or None (probes and /metrics), for a request path as the
    server decodes it."""
    path = unquote(path)
    if ANTHROPIC_PATH.match(path):
        return "anthropic"
    if OPENAI_PATH.match(path):
        return "openai"
    if WORKERS_AI_PATH.match(path):
        return "workers_ai"
    return None


def error_problems(path: str, status: int, content_type: str, body: bytes) -> list[str]:
    """Why this error answer is not in its protocol's format; [] when it is (or when `path` has no protocol)."""
    protocol = protocol_of(path)
    if protocol is None:
        return []
    if not content_type.startswith("application/json"):
        return [f"a {status} answer on {path} is {content_type!r}, not JSON"]
    try:
        parsed = json.loads(body)
    except ValueError:
        return [f"a {status} answer on {path} is not JSON: {body[:200]!r}"]
    problems = {"workers_ai": workers_ai_problems, "openai": openai_problems, "anthropic": anthropic_problems}[
        protocol
    ](parsed)
    return [f"{status} on {path}: {problem}; body: {body[:300]!r}" for problem in problems]


def workers_ai_problems(body: Any) -> list[str]:
    """{"result": {}, "success": false, "errors": [{"code": int, "message": str}, ...], "messages": []};
    the gateways and logs APIs' validation errors add the field's `path` to the error and say what is
    wrong with it in `messages` ({"code", "message"} entries, as Cloudflare's v4 envelope has them)."""
    if not isinstance(body, dict) or set(body) != {"result", "success", "errors", "messages"}:
        return ["not Workers AI's envelope (result, success, errors, messages)"]
    problems = []
    if body["result"] != {}:
        problems.append("result is not {}")
    if body["success"] is not False:
        problems.append("success is not false")
    located = any(isinstance(error, dict) and "path" in error for error in body["errors"] or [])
    if body["messages"] != [] and not (located and all(_code_and_message(m) for m in body["messages"])):
        problems.append("messages is not []")
    errors = body["errors"]
    if not isinstance(errors, list) or not errors:
        return [*problems, "errors is not a non-empty list"]
    for error in errors:
        if not isinstance(error, dict) or set(error) - {"path"} != {"code", "message"}:
            problems.append(f"an error is not {{code, message}}: {error!r}")
        elif "path" in error and not (isinstance(error["path"], list) and error["path"]):
            problems.append(f"an error's path is not a non-empty list: {error['path']!r}")
        elif not (isinstance(error["code"], int) and not isinstance(error["code"], bool)):
            problems.append(f"an error code is not an integer: {error['code']!r}")
        elif not isinstance(error["message"], str) or not error["message"]:
            problems.append(f"an error message is not a non-empty string: {error['message']!r}")
    return problems


def _code_and_message(entry: Any) -> bool:
    return isinstance(entry, dict) and set(entry) == {"code", "message"} and isinstance(entry["message"], str)


def openai_problems(body: Any) -> list[str]:
    """{"error": {"message": str, "type": str, "param": str | null, "code": str}}"""
    if not isinstance(body, dict) or set(body) != {"error"}:
        return ["not OpenAI's error object ({'error': {...}})"]
    error = body["error"]
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return [f"the error is not {{message, type, param, code}}: {error!r}"]
    problems = []
    if not isinstance(error["message"], str) or not error["message"]:
        problems.append("message is not a non-empty string")
    if not isinstance(error["type"], str) or not error["type"]:
        problems.append("type is not a non-empty string")
    if error["param"] is not None and not isinstance(error["param"], str):
        problems.append("param is neither a string nor null")
    if not isinstance(error["code"], str) or not re.fullmatch(r"[0-9]+|[a-z_]+", error["code"]):
        problems.append(f"code is neither OpenAI's code nor the error code as a string: {error['code']!r}")
    return problems


def anthropic_problems(body: Any) -> list[str]:
    """{"type": "error", "error": {"type": str, "message": str}}"""
    if not isinstance(body, dict) or set(body) != {"type", "error"} or body["type"] != "error":
        return ["not Anthropic's error object ({'type': 'error', 'error': {...}})"]
    error = body["error"]
    if not isinstance(error, dict) or set(error) != {"type", "message"}:
        return [f"the error is not {{type, message}}: {error!r}"]
    return [f"{name} is not a non-empty string" for name in ("type", "message") if not error[name]]


def assert_error_envelope(path: str, status: int, content_type: str, body: bytes) -> None:
    problems = error_problems(path, status, content_type, body)
    assert not problems, "\n".join(problems)
