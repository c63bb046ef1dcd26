"""The browser playground: static pages, shipped in the package, that use only public endpoints.

The chat is at /playground, a gateway's logs at /playground/logs; both take the same key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(__file__).resolve().parent.parent / "playground"

router = APIRouter()

# The page loads no fonts, scripts or styles from elsewhere: the machine may be offline.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'",
    "X-Content-Type-Options": "nosniff",
}

HOME = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>wai</title></head>
<body style="font-family: system-ui, sans-serif; margin: 2em">
<h1>wai</h1><p>Workers AI and OpenAI APIs on vLLM.</p>
<ul><li><a href="/playground">Playground</a>: talk to the models in the browser</li>
<li><a href="/playground/logs">Gateway logs</a>: the requests made through an AI Gateway, with their cost</li>
<li><a href="/docs">API reference</a></li><li><a href="/readyz">Readiness</a></li></ul></body></html>"""


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def home() -> HTMLResponse:
    return HTMLResponse(HOME)


@router.get("/playground", include_in_schema=False)
async def playground() -> FileResponse:
    return page("index.html")


@router.get("/playground/logs", include_in_schema=False)
async def playground_logs() -> FileResponse:
    return page("logs.html")


def page(name: str) -> FileResponse:
    return FileResponse(ASSETS / name, media_type="text/html", headers=SECURITY_HEADERS)


def mount_assets(app) -> None:
    app.mount("/playground/assets", StaticFiles(directory=ASSETS), name="playground-assets")
