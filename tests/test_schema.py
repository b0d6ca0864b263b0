"""Property-based API tests: every operation of /api/schema/, fuzzed by schemathesis.

The schema is loaded from the application itself (in-process WSGI, no server),
and every generated request goes through the whole Django stack: middleware,
DRF, the lifecycle functions and PostgreSQL. A run fails on

* any 5xx response (``not_a_server_error``);
* a status code the operation does not document (``status_code_conformance``);
* a Content-Type the operation does not document (``content_type_conformance``);
* a body that does not match the documented schema (``response_schema_conformance``);
* a documented response header that is missing or malformed (``response_headers_conformance``).

Random UUIDs almost never name a stored session, so a few sessions (one per
status, each with a checkpoint history of three entries) are stored under fixed
ids, and the generated ``id``, ``number`` and ``If-Match`` values are replaced
by those of the seeds about half of the time: reads, updates, deletes, forks and
the checkpoint routes then run against real rows, not only their 404 branch.
Each example that may write is preceded by a fresh seed, so that examples do not
depend on each other (Hypothesis replays and shrinks them one by one).

Hypothesis draws new examples on every run (30 fuzzed ones per operation, on
top of schemathesis' deterministic coverage cases: the whole file takes 30 to 40
seconds); a failure prints the request as a curl command. Inputs that random
generation reaches only now and then, and that once made the service fail, are
also sent on every run by the "known hazards" tests at the end of the file.

No check is switched off and no failure is filtered: none of the failures seen
while writing these tests was a schemathesis false positive.
"""

from __future__ import annotations

import json
import uuid

import pytest
import schemathesis
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sessions_app.models import Checkpoint, Session
from sessions_project.wsgi import application

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

SEED_AGENT = uuid.UUID("5eed0000-0000-4000-8000-00000000a9e7")
# Fixed ids, so that generated path parameters can name them before the rows exist.
SEEDS = {
    uuid.UUID("5eed0000-0000-4000-8000-000000000001"): Session.Status.ACTIVE,
    uuid.UUID("5eed0000-0000-4000-8000-000000000002"): Session.Status.PAUSED,
    uuid.UUID("5eed0000-0000-4000-8000-000000000003"): Session.Status.CRASHED,
    uuid.UUID("5eed0000-0000-4000-8000-000000000004"): Session.Status.COMPLETED,
}
SEEDED_IDS = [str(pk) for pk in SEEDS]
CHECKPOINT_NUMBERS = [1, 2, 3]
# Created with checkpoint 1 (version 1), two checkpoint updates (3), then a status move (4).
SEEDED_ETAGS = ['"3"', '"4"', "*"]

# Failure reports print every value: schemathesis masks anything named like "session"
# (session_type, ...) or "key" (Idempotency-Key) by default, which hides the reproducer.
CONFIG = schemathesis.Config.from_dict({"output": {"sanitization": {"enabled": False}}})

schema = schemathesis.openapi.from_wsgi("/api/schema/", application, config=CONFIG)


def _half_seeded(value, choices):
    return st.one_of(st.just(value), st.sampled_from(choices))


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """About half of the generated ids (and checkpoint numbers) name a seeded row."""
    if not path_parameters:
        return st.just(path_parameters)
    replacements = {"id": SEEDED_IDS, "number": CHECKPOINT_NUMBERS}
    return st.fixed_dictionaries(
        {
            name: _half_seeded(value, replacements[name]) if name in replacements else st.just(value)
            for name, value in path_parameters.items()
        }
    )


@schema.hook
def flatmap_headers(context, headers):
    """About half of the generated If-Match headers match a seeded session's ETag."""
    if not headers or "If-Match" not in headers:
        return st.just(headers)
    return _half_seeded(headers["If-Match"], SEEDED_ETAGS).map(lambda tag: {**headers, "If-Match": tag})


def seed_sessions() -> None:
    """Store the seeded sessions as the lifecycle would have left them: one upsert, no events."""
    now = timezone.now()
    rows = []
    for pk, status in SEEDS.items():
        ended = status in Session.ENDED
        rows.append(
            Session(
                id=pk,
                agent_id=SEED_AGENT,
                session_type="task",
                status=status,
                context={"task_id": "schemathesis", "files_open": ["a.ts"]},
                checkpoint={"step": 3},
                runtime_backend=Session.RuntimeBackend.LOCAL,
                runtime_metadata={"pid": 4242},
                created_at=now,
                updated_at=now,
                last_activity_at=now,
                version=3 if status == Session.Status.ACTIVE else 4,
                ended_at=now if ended else None,
                crash_reason="seeded crash" if status == Session.Status.CRASHED else "",
                checkpoint_seq=3,  # the history below holds entries 1 to 3
            )
        )
    Session.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["id"],
        update_fields=[f.name for f in Session._meta.concrete_fields if not f.primary_key],
    )
    Checkpoint.objects.filter(session_id__in=SEEDS).delete()
    Checkpoint.objects.bulk_create(
        Checkpoint(session_id=pk, number=n, checkpoint={"step": n}, created_at=now)
        for pk in SEEDS
        for n in CHECKPOINT_NUMBERS
    )


@pytest.fixture
def seeded(transactional_db) -> None:
    seed_sessions()


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case, seeded):
    if case.method.upper() != "GET":
        seed_sessions()  # a previous example may have changed or deleted them
    case.call_and_validate(checks=CHECKS)


# --- Known hazards, sent on every run ----------------------------------------
#
# Inputs that random generation reaches only now and then, each of which made
# the service answer 500. They are valid RFC 3339 / JSON the parsers accept, and
# the API must answer them with a documented status (400 is fine), never a 5xx.

# PostgreSQL takes UTC offsets up to +-15:59 and Python up to +-23:59; and a
# time at the edge of Python's years 1..9999 leaves that range once moved to UTC.
DATETIME_HAZARDS = [
    "2026-01-01T00:00:00+16:00",
    "2026-01-01T00:00:00-23:59",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
]

# jsonb stores neither NUL characters nor lone surrogates (both valid JSON escapes).
JSON_VALUE_HAZARDS = {
    "NUL in a key": {"a\x00b": 1},
    "NUL in a string": {"text": "a\x00b"},
    "NUL nested in a list": {"items": [{"deep": "\x00"}]},
    "lone surrogate": {"text": "\ud800"},
}
# Nor NaN / Infinity: 1e999 parses as float("inf"), and a form-labelled body that
# looks like JSON (the specification's curl -d examples) is read with json.loads,
# which takes NaN and Infinity literals.
JSON_NUMBER_HAZARDS = ["1e999", "-1e999", "NaN", "Infinity"]
JSON_FIELDS = ("context", "checkpoint", "runtime_metadata")
CREATE_BODY = {"agent_id": str(SEED_AGENT), "session_type": "task"}


def _datetime_query_parameters():
    for path, item in schema.raw_schema["paths"].items():
        for parameter in item.get("get", {}).get("parameters", []):
            if parameter.get("in") == "query" and parameter.get("schema", {}).get("format") == "date-time":
                yield pytest.param(path, parameter["name"], id=f"GET {path}?{parameter['name']}")


def _problems(case) -> list[str]:
    """The failed checks of one request, as one line each (empty when all pass)."""
    response = case.call()
    try:
        case.validate_response(response, checks=CHECKS)
    except schemathesis.errors.FailureGroup as exc:
        names = sorted({type(failure).__name__ for failure in exc.exceptions})
        return [f"{response.status_code} {', '.join(names)}: {response.text[:200]}"]
    return []


@pytest.mark.parametrize(("path", "name"), list(_datetime_query_parameters()))
def test_datetime_filters_beyond_the_database_range(seeded, path, name):
    path_parameters = {"id": SEEDED_IDS[0]} if "{id}" in path else {}
    problems = []
    for value in DATETIME_HAZARDS:
        case = schema[path]["GET"].Case(path_parameters=path_parameters, query={name: value})
        problems += [f"{name}={value}: {problem}" for problem in _problems(case)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("path", "method", "media_type"),
    [
        ("/sessions/", "POST", "application/json"),
        ("/sessions/", "POST", "application/x-www-form-urlencoded"),
        ("/sessions/{id}/", "PATCH", "application/json"),
        ("/sessions/{id}/", "PATCH", "application/merge-patch+json"),
        ("/sessions/{id}/", "PATCH", "application/x-www-form-urlencoded"),
    ],
)
def test_json_fields_with_values_the_database_cannot_store(seeded, path, method, media_type):
    base = CREATE_BODY if method == "POST" else {}
    bodies = {}
    for field in JSON_FIELDS:
        for hazard, value in JSON_VALUE_HAZARDS.items():
            bodies[f"{hazard} of {field}"] = json.dumps({**base, field: value})
        for number in JSON_NUMBER_HAZARDS:
            bodies[f"{number} in {field}"] = json.dumps({**base, field: {"n": "@@"}}).replace('"@@"', number)
    problems = []
    for label, text in bodies.items():
        seed_sessions()
        path_parameters = {"id": SEEDED_IDS[0]} if "{id}" in path else {}
        # Raw bytes: sent as they are, whatever the media type.
        case = schema[path][method].Case(path_parameters=path_parameters, body=text.encode(), media_type=media_type)
        problems += [f"{label}: {problem}" for problem in _problems(case)]
    assert not problems, "\n".join(problems)
