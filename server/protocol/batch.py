"""The Workers AI async batch format (`queueRequest`) on the run endpoint.

    POST .../ai/run/{model}?queueRequest=true  {"requests": [<input>, ...]}
      -> {"result": {"status": "queued", "request_id": "<uuid>", "model": "..."}, "success": true, ...}
    POST .../ai/run/{model}  {"request_id": "<uuid>"}
      -> status "queued" or "running", then "done" with
         {"responses": [{"id": 0, "result": {...}, "success": true, "errors": [], "messages": [],
                         "external_reference": ...}, ...], "usage": {...}}

`queueRequest` may also come in the body's `options`. Each request is an ordinary run input (plus an
`external_reference` carried through to its response) and is validated as one when the batch is
submitted: one invalid request refuses the whole submission (400 / 5006 naming it), since nothing
has run yet and the client can fix it at once. Errors that only running shows (a prompt over the
context window, an unknown fine-tune, JSON mode that failed) fail that item alone, in the
envelope's error format, and the others run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server import errors
from server.protocol import workers_ai

QUEUE_REQUEST = "queueRequest"
EXTERNAL_REFERENCE = "external_reference"


@dataclass(frozen=True)
class BatchItem:
    input: dict[str, Any]  # the run input, without its external_reference
    external_reference: str | None


def is_batch_call(body: Any, query: Mapping[str, str]) -> bool:
    """A submission (queueRequest asked for, or a `requests` array) or a poll (a body of just a request_id)."""
    if not isinstance(body, dict):
        return False
    return asks_queue(body, query) or "requests" in body or is_poll(body)


def asks_queue(body: dict[str, Any], query: Mapping[str, str]) -> bool:
    options = body.get("options")
    given = options.get(QUEUE_REQUEST) if isinstance(options, dict) else None
    return _flag(query.get(QUEUE_REQUEST)) or _flag(given)


def is_poll(body: dict[str, Any]) -> bool:
    return "request_id" in body and not ({"requests", "prompt", "messages"} & body.keys())


def poll_id(body: dict[str, Any]) -> str:
    request_id = body["request_id"]
    if not isinstance(request_id, str) or not request_id:
        raise errors.bad_input("request_id must be the string a queued batch answered", param="request_id")
    return request_id


def parse_submission(body: dict[str, Any], query: Mapping[str, str], max_items: int) -> list[BatchItem]:
    """The batch's requests, each validated as a run input; 400 for the whole batch when one is not."""
    if not asks_queue(body, query):
        raise errors.bad_input(f"a batch of requests needs {QUEUE_REQUEST}=true (query or options)", param="requests")
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise errors.bad_input(
            f'{QUEUE_REQUEST} needs a body {{"requests": [<input>, ...]}} with at least one request', param="requests"
        )
    if len(requests) > max_items:
        raise errors.batch_too_many_items(len(requests), max_items)
    return [_parse_item(index, request) for index, request in enumerate(requests)]


def _parse_item(index: int, request: Any) -> BatchItem:
    if not isinstance(request, dict):
        raise errors.bad_input(f"requests[{index}] must be an object, a run input", param="requests")
    run_input = {name: value for name, value in request.items() if name != EXTERNAL_REFERENCE}
    reference = request.get(EXTERNAL_REFERENCE)
    if reference is not None and not isinstance(reference, str):
        raise errors.bad_input(f"requests[{index}].{EXTERNAL_REFERENCE} must be a string", param="requests")
    try:
        text = workers_ai.parse_run_input(run_input)
    except errors.WaiError as error:
        raise dataclasses.replace(error, message=f"{error.message} (in requests[{index}])") from None
    if text.stream:
        raise errors.bad_input(f"requests[{index}] asks to stream; batch results are whole", param="stream")
    return BatchItem(run_input, reference)


def status(request_id: str, model: str, state: str) -> dict[str, Any]:
    return workers_ai.success({"status": state, "request_id": request_id, "model": model})


def done(request_id: str, model: str, responses: list[dict[str, Any]]) -> dict[str, Any]:
    """A finished job: every item's answer in order, and their usage together."""
    usages = [response["result"]["usage"] for response in responses if response["success"]]
    prompt = sum(usage["prompt_tokens"] for usage in usages)
    completion = sum(usage["completion_tokens"] for usage in usages)
    cached = sum(_cached_tokens(usage) for usage in usages)
    return workers_ai.success(
        {
            "status": "done",
            "request_id": request_id,
            "model": model,
            "responses": responses,
            "usage": workers_ai.run_usage(prompt, completion, cached),
        }
    )


def _cached_tokens(usage: dict[str, Any]) -> int:
    """An answer's cached prompt tokens; none in answers kept before usage reported them."""
    return usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)


def item_success(index: int, result: dict[str, Any], reference: str | None) -> dict[str, Any]:
    return {"id": index, **workers_ai.success(result), EXTERNAL_REFERENCE: reference}


def item_failure(index: int, error: errors.WaiError, reference: str | None) -> dict[str, Any]:
    return {"id": index, **workers_ai.failure(error), EXTERNAL_REFERENCE: reference}


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")
