"""Schemathesis against the gateway's own OpenAPI schema: generated requests, schema-valid and
schema-invalid, to every operation, with the token. No 5xx; every status, header and body as documented.

(The operations are driven from this test with `APIOperation.as_strategy` rather than schemathesis's
pytest plugin, whose lazy-fixture loader does not run under pytest 9.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.gateway import gateway_in_thread

pytestmark = pytest.mark.timeout(600)

TOKEN = "schemathesis-token"
EXAMPLES = 30  # per operation and mode


def test_every_operation_answers_as_documented(tiny_model_repository, report):
    # Limits off: hundreds of requests in a few seconds would otherwise meet (documented) 429s.
    with gateway_in_thread(tiny_model_repository, api_tokens=(TOKEN,), rate_limit_per_s=0,
                           session_rate_per_min=0) as gw:
        schema = schemathesis.openapi.from_url(gw.url + "/openapi.json")
        calls: dict[str, int] = {}
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(max_examples=EXAMPLES, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
                def check(case):
                    calls[operation.label] = calls.get(operation.label, 0) + 1
                    # A schema-valid offer is still not a usable SDP (400), so "valid data is accepted"
                    # cannot hold for POST /v1/sessions; every other check runs.
                    case.call_and_validate(base_url=gw.url, headers={"Authorization": f"Bearer {TOKEN}"},
                                           excluded_checks=[positive_data_acceptance])

                try:
                    check()
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE  # nothing to get wrong (no parameters, no body)
        assert not gw.gateway.sessions
    report(f"schemathesis: {sum(calls.values())} generated requests over {len(calls)} operations "
           f"(valid and invalid data), no failed check")
    assert len(calls) >= 8, calls
