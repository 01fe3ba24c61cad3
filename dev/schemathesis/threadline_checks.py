"""Checks schemathesis runs against our two APIs on top of its own (loaded through
SCHEMATHESIS_HOOKS=threadline_checks, with this directory on PYTHONPATH; e2e/tests/api_fuzz.rs).

They replace two built-in checks with sharper ones:

- `not_a_server_error` flags every 5xx. One 503 is an answer the documents promise: a
  read that names a `position` the read model has not reached within `wait_ms` answers
  503 `position_not_reached` with `Retry-After` (a made-up position never arrives).
  `no_server_error_but_not_yet_consistent` allows exactly that and nothing else.
- `positive_data_acceptance` wants every schema-valid request accepted, but a valid
  request can still break a rule no schema states: the endpoint URL does not resolve
  (`url_refused`), the Idempotency-Key was used for another body, a file is empty, a
  text is blank or holds control characters (`validation_failed`: the documents give
  lengths, not those rules).
  `well_formed_requests_are_not_refused_as_malformed` holds the documents to what they
  can say: a schema-valid request is never refused with a code that means "this request
  is not well formed".
"""

import json

import schemathesis

# The problem codes that say the request's shape is wrong: the documents must describe
# that shape, so schema-valid data never earns one of them.
MALFORMED = frozenset(
    {
        "invalid_body",
        "malformed_json",
        "invalid_query",
        "invalid_if_match",
        "invalid_idempotency_key",
        "invalid_position",
        "invalid_wait",
        "invalid_limit",
        "invalid_version",
        "invalid_status",
        "invalid_event_type",
        "invalid_last_event_id",
    }
)


def problem_code(response):
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


@schemathesis.check
def no_server_error_but_not_yet_consistent(ctx, response, case):
    if response.status_code < 500:
        return None
    if (
        response.status_code == 503
        and "position" in (case.query or {})
        and problem_code(response) == "position_not_reached"
    ):
        return None
    raise AssertionError(
        f"server error {response.status_code}: {response.content[:500]!r}"
    )


@schemathesis.check
def well_formed_requests_are_not_refused_as_malformed(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code not in (400, 422):
        return None
    code = problem_code(response)
    if code in MALFORMED:
        raise AssertionError(
            f"a request valid by the document was refused as {code}: "
            f"{response.content[:500]!r}"
        )
    return None
