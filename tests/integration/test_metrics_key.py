"""`metrics.api_key` guards GET /metrics with a key of its own.

The key check needs no engine, so the real app is built from the default config and asked over
ASGI without starting its engine (the session server has no metrics key).
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.config import load_settings
from tests.support.repo import DEFAULT_CONFIG

METRICS_KEY = "scrape-only-key"
API_KEY = "model-key"


@pytest.fixture(scope="module")
def app_client():
    settings = load_settings(DEFAULT_CONFIG, api_keys=[API_KEY], metrics={"api_key": METRICS_KEY})
    return TestClient(create_app(settings))  # no `with`: the lifespan, and so the engine, never starts


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {API_KEY}"}])
def test_metrics_refuse_anything_but_their_key(app_client, headers):
    response = app_client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == 10000


def test_metrics_answer_with_their_key(app_client):
    response = app_client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'wai_engine_ready{model="@cf/huggingfacetb/smollm2-135m-instruct"} 0.0' in response.text


def test_metrics_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("WAI_METRICS__API_KEY", "from-env")
    assert load_settings(DEFAULT_CONFIG).metrics.api_key == "from-env"
