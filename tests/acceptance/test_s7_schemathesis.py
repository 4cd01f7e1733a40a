"""Acceptance S7: Schemathesis over the app's own OpenAPI document.

Every operation gets generated valid and invalid requests with an admin token; the
checks require no 5xx, documented status codes, schema-conforming bodies and that
missing auth is refused. `positive_data_acceptance` is excluded: some rules cannot be
written in JSON Schema (a camera URL's address policy, IANA time zones, cross-field rule
checks), so a schema-valid body may rightly get a 422 naming the field. The SSE stream
never ends by design, so it is excluded here and covered by the API integration tests.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hyp_settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlmodel import Session

from flashwatch import registry
from flashwatch.api import create_app
from flashwatch.runtime import build_state
from tests.apiharness import settings_for

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

_DATA = Path(tempfile.mkdtemp(prefix="fw-s7-"))
_STATE = build_state(settings_for(_DATA, None))
with Session(_STATE.engine) as _s:
    _, ADMIN = registry.create_token(_s, "schemathesis", "admin")
APP = create_app(_STATE)

schema = schemathesis.openapi.from_asgi("/v1/openapi.json", APP)


@schema.auth()
class AdminToken:
    """Authenticates generated requests the way a client would, so Schemathesis knows the
    header is auth (a header merged in afterwards would turn its 'missing Authorization'
    negative cases into valid requests and false alarms)."""

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
        return ADMIN

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.exclude(path="/v1/alerts/stream").parametrize()
@hyp_settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_s7_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
