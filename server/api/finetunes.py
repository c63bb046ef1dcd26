"""Workers AI fine-tune routes under `/client/v4/accounts/{account_id}/ai/finetunes`.

The same calls `wrangler ai finetune create <model> <name> <folder>` makes: create, then one
multipart upload per file; plus list, list public, show one and delete. Every answer is in
Cloudflare's envelope.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from server import errors
from server.api import openapi
from server.api.common import accepting_requests, read_json_body
from server.api.uploads import FILE_FIELD, read_asset_form
from server.auth import require_finetunes_key
from server.protocol import workers_ai
from server.protocol.validation import validate
from server.serving.finetunes import Finetunes
from server.serving.lora_checks import ADAPTER_FILES

router = APIRouter(
    prefix="/client/v4/accounts/{account_id}/ai/finetunes",
    dependencies=[Depends(require_finetunes_key), Depends(accepting_requests)],
)

CREATE_INPUT = {
    "type": "object",
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "public": {"type": "boolean"},
    },
    "required": ["model", "name"],
}


def store_of(request: Request) -> Finetunes:
    return request.app.state.adapters


def envelope(result: Any) -> JSONResponse:
    return JSONResponse(workers_ai.success(result))


@router.post("", openapi_extra=openapi.schema_body("FinetuneCreate", CREATE_INPUT, "The fine-tune to create."))
async def create_finetune(account_id: str, request: Request) -> JSONResponse:
    body = await read_json_body(request)
    problems = validate(body, CREATE_INPUT)
    if problems:
        raise errors.bad_input(", ".join(problems))
    finetune = await store_of(request).create(
        body["model"], body["name"], body.get("description", ""), body.get("public", False)
    )
    return envelope(finetune.as_dict())


@router.get("")
async def list_finetunes(account_id: str, request: Request) -> JSONResponse:
    return envelope([f.as_dict() for f in await store_of(request).finetunes()])


@router.get("/public")
async def list_public_finetunes(account_id: str, request: Request) -> JSONResponse:
    return envelope([f.as_dict() for f in await store_of(request).finetunes(public_only=True)])


@router.get("/{id_or_name}")
async def show_finetune(account_id: str, id_or_name: str, request: Request) -> JSONResponse:
    return envelope((await store_of(request).get(id_or_name)).as_dict())


@router.delete("/{id_or_name}")
async def delete_finetune(account_id: str, id_or_name: str, request: Request) -> JSONResponse:
    return envelope((await store_of(request).delete(id_or_name)).as_dict())


ASSET_UPLOAD_BODY = openapi.form_body(
    "FinetuneAssetUpload",
    {
        "file_name": {"type": "string", "enum": list(ADAPTER_FILES), "description": "Which of the two files this is."},
        FILE_FIELD: {"type": "string", "format": "binary", "description": "The file's bytes."},
    },
    ["file_name", FILE_FIELD],
    "One of the fine-tune's two files, as `wrangler ai finetune create` uploads it.",
)


@router.post("/{id_or_name}/finetune-assets", openapi_extra=ASSET_UPLOAD_BODY)
async def upload_finetune_asset(account_id: str, id_or_name: str, request: Request) -> JSONResponse:
    store = store_of(request)
    finetune = await store.get(id_or_name)  # 404 before reading a large body for nothing
    limit = store.lora_model(finetune.model).config.lora.max_upload_bytes
    with store.upload_file() as (file, path):
        form = await read_asset_form(request, file, limit)
        file_name = form.fields.get("file_name")
        if not file_name or not form.has_file:
            raise errors.bad_input("required form fields are 'file_name' and 'file'")
        finetune = await store.add_asset(id_or_name, file_name, path)
    return envelope(finetune.as_dict())
