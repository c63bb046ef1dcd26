"""The Workers binding's wire format: what `env.AI.run(model, inputs, options)` sends and reads.

Inside a Worker that call is Cloudflare's runtime code (workerd's `cloudflare-internal:ai-api`
module) posting to the binding's fetcher. The answer it expects is the run endpoint's result without
the envelope, or the same event stream; an error is `{internalCode, message, name, description}`,
which the runtime throws as an error named `name` with the message `<internalCode>: <description>`.
"""

from __future__ import annotations

from typing import Any

from server import errors

# The request's model ("[<prefix>:]<model>"; wai serves no prefixed names).
MODEL_HEADER = "cf-consn-model-id"
# wrangler's remote form sends the binding's original URL here (`http://.../run?version=3`).
FORWARDED_HEADER = "x-forwarded"


def call(body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `inputs` and `options` of a binding call's body; 400 / 5006 when it is not that shape."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), dict):
        raise errors.bad_input('a binding call\'s body is {"inputs": {...}, "options": {...}}', param="inputs")
    options = body.get("options")
    if options is not None and not isinstance(options, dict):
        raise errors.bad_input("a binding call's options must be an object", param="options")
    return body["inputs"], options or {}


def as_run_body(inputs: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The run endpoint's body for a binding call: its inputs, with the run options (`rejectIfBusy`)
    where the run endpoint reads them."""
    return {**inputs, "options": options} if options else inputs


def failure(error: errors.WaiError) -> dict[str, Any]:
    """An error as the runtime reads it. Model-service errors (`AiError: ...`) are thrown as `AiError`,
    the others as the runtime's own `InferenceUpstreamError`, as the hosted service does."""
    from_model = error.message.startswith(errors.AI_PREFIX)
    return {
        "internalCode": error.code,
        "message": error.message,
        "name": "AiError" if from_model else "InferenceUpstreamError",
        "description": error.message.removeprefix(errors.AI_PREFIX),
    }
