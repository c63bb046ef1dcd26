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

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


AI_PREFIX = "AiError: "


def bad_input(validator_message: str, param: str | None = None) -> WaiError:
    return WaiError(400, 5006, f"{AI_PREFIX}Bad input: Error: {validator_message}", param=param)


def unknown_model(model: str) -> WaiError:
    return WaiError(400, 5007, f"No such model {model} or task", param="model", openai_type="not_found_error")


def no_route() -> WaiError:
    return WaiError(400, 7000, "No route for that URI", openai_type="not_found_error")


def authentication_error() -> WaiError:
    return WaiError(
        401,
        10000,
        "Authentication error",
        openai_type="authentication_error",
        headers={"WWW-Authenticate": "Bearer"},
    )


def context_window_exceeded(requested_tokens: int, context_window: int, param: str = "max_tokens") -> WaiError:
    return WaiError(
        413,
        5021,
        f"{AI_PREFIX}The estimated number of input and maximum output tokens ({requested_tokens}) "
        f"exceeded this model context window limit ({context_window})",
        param=param,
    )


def request_too_large() -> WaiError:
    return WaiError(413, 3006, "Request is too large")


def request_aborted() -> WaiError:
    return WaiError(408, 3008, "Request was aborted")


def capacity_exceeded() -> WaiError:
    # The model's queue is full (or busy, with rejectIfBusy): refused at once rather than queued.
    return WaiError(
        429,
        3040,
        "Capacity temporarily exceeded, please try again.",
        openai_type="rate_limit_error",
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
        openai_type="rate_limit_error",
        headers={"Retry-After": str(retry_after_s)},
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
    return WaiError(405, 5005, f"The model {model} does not support LoRa inference", param="lora")


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
        openai_type="not_found_error",
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


def internal_error() -> WaiError:
    # Only for engine failures: a bug or a dead engine, never a client's input.
    return WaiError(500, 3043, "Internal server error", openai_type="server_error")
