"""Schemathesis over /openapi.json against the real app on the fake engines: every operation but
/metrics, valid and invalid inputs; no 5xx, every error in its protocol's envelope, no hang."""

from __future__ import annotations

import httpx
from hypothesis import HealthCheck, settings

from tests.support import api_fuzz
from tests.support.fakes import EMBEDDING_MODEL, TEXT_MODEL
from tests.support.repo import STAND_IN
from tests.support.servers import ServedApp

SUITE = "fake engines"
DOCUMENT = api_fuzz.app_document()
schema = api_fuzz.load(api_fuzz.fuzz_document(DOCUMENT, [TEXT_MODEL, STAND_IN], [EMBEDDING_MODEL]))


def test_the_fuzzed_document_is_the_one_served(fuzz_app: ServedApp):
    assert httpx.get(f"{fuzz_app.base_url}/openapi.json", timeout=10).json() == DOCUMENT


@schema.parametrize()
@settings(deadline=None, database=None, derandomize=not api_fuzz.RANDOM, suppress_health_check=list(HealthCheck))
def test_the_api_as_documented(case, fuzz_app: ServedApp):
    api_fuzz.call_and_check(case, SUITE, fuzz_app.base_url)
