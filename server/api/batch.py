"""The run endpoint's async batch calls: submitting a job (`queueRequest`) and polling it.

The jobs themselves are server/batch/jobs.py's; the wire format is server/protocol/batch.py's.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from server import errors
from server.api.middleware import request_record
from server.api.pipeline import reply_headers
from server.batch.jobs import BatchJobs
from server.protocol import batch
from server.serving.registry import Route
from server.serving.text import TextService

is_batch_call = batch.is_batch_call


def batch_jobs(request: Request) -> BatchJobs:
    return request.app.state.batch


async def queue_or_poll(request: Request, route: Route, body: dict[str, Any]) -> JSONResponse:
    """A poll's status or results, or a submission's request id, in the Workers AI envelope."""
    jobs = batch_jobs(request)
    if batch.is_poll(body):
        answer = await jobs.poll(batch.poll_id(body), route)
    else:
        if not isinstance(route.service, TextService):
            raise errors.bad_input("queued requests are for text-generation models", param="model")
        items = batch.parse_submission(body, request.query_params, jobs.config.max_items_per_job)
        answer = batch.status(await jobs.submit(route.requested_name, items), route.requested_name, "queued")
    return JSONResponse(answer, headers=reply_headers(route, request_record(request).request_id))
