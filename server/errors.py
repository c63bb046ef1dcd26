"""The error table: every error wai answers, with its HTTP status, Workers AI code and message.

This module is the one source of truth for error codes and texts (docs/compatibility.md, section 6;
the README's error table is checked against it). Every `WaiError` is made by a function below;
routes raise it and `api/errors.py` renders it in the caller's protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class WaiError(Exception):
    status: int
    code: int
    message: str
    # OpenAI rendering: error type and the offending parameter, when known.
    openai_type: str = "invalid_request_error"
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Where OpenAI's own API answers the same mistake otherwise, what the /v1 routes answer instead:
    # its status, its `code` (else the Workers AI code, as a string) and its message.
    openai_status: int | None = None
    openai_code: str | None = None
    openai_message: str | None = None
    # The AI Gateway's own refusals (its rate limit, its authorization) are written in its
    # `AiGatewayError` shape whatever the route (protocol/gateway.py).
    from_gateway: bool = False
    # Where in the body a gateway object's field failed validation (the gateways API's `path`).
    where: tuple[str | int, ...] | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    @property
    def retryable(self) -> bool:
        """The engine's overload and restarts, which a gateway's next attempt may find gone; never
        the caller's own mistakes or limits."""
        return self.code == 3040 and self.openai_type == "server_error"


AI_PREFIX = "AiError: "


# OpenAI's codes for a parameter missing and one of the wrong type (`bad_input`'s openai_code).
MISSING_PARAMETER = "missing_required_parameter"
WRONG_TYPE = "invalid_type"


def bad_input(validator_message: str, param: str | None = None, openai_code: str | None = None) -> WaiError:
    return WaiError(
        400, 5006, f"{AI_PREFIX}Bad input: Error: {validator_message}", param=param, openai_code=openai_code
    )


def unknown_model(model: str) -> WaiError:
    return WaiError(
        400, 5007, f"No such model {model} or task", param="model", openai_status=404, openai_code="model_not_found"
    )


def no_route() -> WaiError:
    return WaiError(400, 7000, "No route for that URI", openai_status=404)


def authentication_error() -> WaiError:
    return WaiError(
        401,
        10000,
        "Authentication error",
        headers={"WWW-Authenticate": "Bearer"},
        openai_code="invalid_api_key",
    )


def context_window_exceeded(
    requested_tokens: int, context_window: int, param: str = "messages", prompt_tokens: int | None = None
) -> WaiError:
    """`param` names what is too long: the messages or the prompt, of which `prompt_tokens` are the
    prompt's and the rest max_tokens; or an embedding's input (nothing generated)."""
    asked, cut = f"{requested_tokens} tokens in the {param}", param
    if prompt_tokens is not None:
        completion_tokens = requested_tokens - prompt_tokens
        asked = f"{requested_tokens} tokens ({prompt_tokens} in the {param}, {completion_tokens} in the completion)"
        cut = f"{param} or completion"
    return WaiError(
        413,
        5021,
        f"{AI_PREFIX}The estimated number of input and maximum output tokens ({requested_tokens}) "
        f"exceeded this model context window limit ({context_window})",
        param=param,
        # OpenAI's and vLLM's answer, whose words LangChain and LiteLLM look for.
        openai_status=400,
        openai_code="context_length_exceeded",
        openai_message=f"This model's maximum context length is {context_window} tokens. "
        f"However, you requested {asked}. Please reduce the length of the {cut}.",
    )


def request_too_large() -> WaiError:
    return WaiError(413, 3006, "Request is too large")


def headers_too_large(limit_bytes: int) -> WaiError:
    # The request's head past `limits.max_header_bytes`: refused by the connection, before any route.
    return WaiError(431, 3006, f"Request headers are too large (over {limit_bytes} bytes)")


def request_aborted() -> WaiError:
    return WaiError(408, 3008, "Request was aborted")


def capacity_exceeded() -> WaiError:
    # The model's queue is full (or busy, with rejectIfBusy): refused at once rather than queued.
    # Overload is a 429 on every protocol, as the hosted service answers it; OpenAI's SDKs retry a 429
    # after Retry-After. The type tells it apart from a key's own rate limit (`requests`).
    return WaiError(
        429,
        3040,
        "Capacity temporarily exceeded, please try again.",
        openai_type="server_error",
        headers={"Retry-After": "1"},
    )


def request_timeout() -> WaiError:
    return WaiError(408, 3007, "Request timeout", openai_type="timeout_error")


def key_limited(retry_after_s: int) -> WaiError:
    # A key past its own requests per minute or requests in flight (`keys:` in the config).
    return WaiError(
        429,
        3040,
        "Capacity temporarily exceeded, please try again.",
        headers={"Retry-After": str(retry_after_s)},
        openai_type="requests",  # OpenAI's type for a requests-per-minute limit
        openai_code="rate_limit_exceeded",
        openai_message=f"Rate limit reached for requests on this API key. Please try again in {retry_after_s}s.",
    )


def service_unavailable() -> WaiError:
    # While the engine starts, after it died, and while the server drains: clients retry on 503.
    return WaiError(
        503,
        3040,
        "Capacity temporarily exceeded, please try again.",
        openai_type="server_error",
        headers={"Retry-After": "5"},
    )


def lora_not_supported(model: str) -> WaiError:
    return WaiError(405, 5005, f"The model {model} does not support LoRa inference", param="lora", openai_status=400)


def finetune_missing_files() -> WaiError:
    return WaiError(
        400,
        3039,
        "Finetune is missing required files (adapter_model.safetensors and adapter_config.json)",
    )


# Fine-tune errors beyond the hosted 3039 are ours: 3041 to 3044.
def unknown_adapter(adapter: str, model: str) -> WaiError:
    return WaiError(
        400,
        3041,
        f"{AI_PREFIX}No such fine-tune {adapter} for model {model}",
        param="lora",
        openai_status=404,  # on /v1 the fine-tune is the model
        openai_code="model_not_found",
    )


def finetune_not_found(id_or_name: str) -> WaiError:
    return WaiError(404, 3041, f"No such finetune {id_or_name}", openai_type="not_found_error")


def invalid_finetune(reason: str) -> WaiError:
    return WaiError(400, 3042, f"Invalid finetune: {reason}")


def finetune_name_taken(name: str) -> WaiError:
    return WaiError(409, 3044, f"A finetune named {name} already exists")


def finetune_file_too_large(limit_bytes: int) -> WaiError:
    return WaiError(413, 3006, f"Request is too large: a finetune file may be at most {limit_bytes} bytes")


def finetune_failed_to_load(reason: str) -> WaiError:
    return WaiError(400, 3042, f"Invalid finetune: the engine could not load it: {reason}", param="lora")


# The hosted service has no fixed code for this one; 3030 is ours.
def json_mode_failed() -> WaiError:
    return WaiError(400, 3030, f"{AI_PREFIX}JSON Mode couldn't be met", param="response_format")


# Tool calls: bad tools (server/protocol/tools.py) are bad input; a call cut short
# (server/serving/tool_calls.py) is 3031, ours.
def invalid_tools(reason: str, param: str = "tools") -> WaiError:
    return bad_input(reason, param=param)


def tool_call_not_met() -> WaiError:
    # Structured decoding makes every complete call match its tool; one cut short is never sent.
    return WaiError(
        400,
        3031,
        f"{AI_PREFIX}Tool call couldn't be met: the call was cut short by max_tokens",
        param="max_tokens",
    )


# The async batch API (`queueRequest`); 3045 and 3046 are ours.
def batch_too_many_items(count: int, limit: int) -> WaiError:
    return bad_input(f"a batch holds at most {limit} requests, not {count}", param="requests")


def batch_too_large(limit_bytes: int) -> WaiError:
    return WaiError(413, 3006, f"Request is too large: a batch's requests may be at most {limit_bytes} bytes")


def batch_not_found(request_id: str) -> WaiError:
    return WaiError(404, 3045, f"No such batch request {request_id}", openai_type="not_found_error")


def response_not_found(response_id: str, param: str | None = None) -> WaiError:
    # A stored response (the Responses API's `store`) that is not there, deleted or expired.
    return WaiError(404, 3047, f"Response with id '{response_id}' not found.", param=param)


def batch_jobs_full(limit: int) -> WaiError:
    # Jobs kept (unfinished, or finished with results not yet expired) are at batch.max_jobs.
    return WaiError(
        429,
        3046,
        f"Too many batch jobs kept ({limit}): try again once older ones finish and their results expire",
        openai_type="rate_limit_error",
        headers={"Retry-After": "60"},
    )


def store_unavailable(what: str) -> WaiError:
    # A replica's shared store (`database_url`, `redis_url`) did not answer: `what` is what it holds
    # ("batch jobs", "fine-tunes", "key limits"). Nothing was accepted; the client may retry.
    return WaiError(
        503,
        3048,
        f"The {what} store is unavailable, please try again.",
        openai_type="server_error",
        headers={"Retry-After": "5"},
    )


def gateway_not_found() -> WaiError:
    # A gateway (or one of its logs) that is neither declared nor stored.
    return WaiError(404, 7002, "Not Found", openai_type="not_found_error")


def gateway_input_invalid(message: str, where: tuple[str | int, ...]) -> WaiError:
    # A gateway object or a logs query that does not validate; `where` is the field's path from where
    # it was sent ("body" or "query"), and `message` says what is wrong with it (Workers AI's envelope
    # carries it in `messages`, beside Cloudflare's fixed message).
    return WaiError(400, 7001, "Input Validation Error", openai_message=message, where=where)


def gateway_exists(gateway_id: str) -> WaiError:
    # Not retried by Cloudflare's SDKs (which retry every 409): `x-should-retry: false`.
    return WaiError(
        409,
        7003,
        f"A gateway with id {gateway_id!r} already exists",
        openai_type="conflict_error",
        headers={"x-should-retry": "false"},
    )


def gateway_read_only(gateway_id: str) -> WaiError:
    # Gateways declared in the config file change with the file, not through the API.
    return WaiError(
        400,
        7001,
        f"The gateway {gateway_id!r} is declared in the config file and cannot be changed through the API",
        headers={"x-should-retry": "false"},
    )


def gateway_rate_limited(retry_after_s: int) -> WaiError:
    # A gateway past its own rate limit (rate_limiting_limit per rate_limiting_interval).
    return WaiError(
        429,
        2003,
        "Rate limited",
        openai_type="requests",
        openai_code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after_s)},
        from_gateway=True,
    )


def gateway_unauthorized() -> WaiError:
    # A gateway with `authentication: true` and no valid `cf-aig-authorization`.
    return WaiError(401, 2009, "Unauthorized", openai_code="invalid_api_key", from_gateway=True)


def internal_error() -> WaiError:
    # Only for engine failures: a bug or a dead engine, never a client's input.
    return WaiError(500, 3043, "Internal server error", openai_type="server_error")
