"""Every curl example of the specification, run with real curl against a live server."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from sessions_app.models import Session

from .conftest import AGENT

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
]

SPEC_ID = "660e8400-e29b-41d4-a716-446655440001"


def curl(*args: str) -> tuple[int, dict | list | None]:
    out = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    body, _, code = out.rpartition("\n")
    return int(code), (json.loads(body) if body.strip() else None)


def seed_spec_session() -> None:
    """The specification's examples address this id: give it a session."""
    Session.objects.create(id=SPEC_ID, agent_id=AGENT, session_type="development", runtime_backend="local")


def test_use_case_1_start_a_development_session(live_server):
    code, body = curl(
        "-X",
        "POST",
        f"{live_server.url}/sessions/",
        "-H",
        "Content-Type: application/json",
        "-d",
        """{
    "agent_id": "550e8400-e29b-41d4-a716-446655440000",
    "session_type": "development",
    "context": {
      "working_directory": "/project",
      "current_task": "Implement Steam Modal",
      "files_open": ["SteamModal.tsx", "animations.ts"]
    },
    "runtime_backend": "local",
    "runtime_metadata": {
      "terminal_id": "term-123",
      "pid": 12345
    }
  }""",
    )
    assert code == 201
    assert body["agent_id"] == AGENT
    assert body["session_type"] == "development"
    assert body["status"] == "active"
    assert body["context"]["files_open"] == ["SteamModal.tsx", "animations.ts"]
    assert body["checkpoint"] == {}
    assert body["runtime_backend"] == "local"
    assert body["runtime_metadata"] == {"terminal_id": "term-123", "pid": 12345}
    stored = Session.objects.get(pk=body["id"])
    assert stored.context["current_task"] == "Implement Steam Modal"


def test_use_case_2_track_a_conversation_session_defaults_the_backend(live_server):
    code, body = curl(
        "-X",
        "POST",
        f"{live_server.url}/sessions/",
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"agent_id": "550e8400-e29b-41d4-a716-446655440000", "session_type": "conversation",'
        ' "context": {"user_id": "user-456", "topic": "code review", "message_count": 0}}',
    )
    assert code == 201
    assert body["runtime_backend"] == "unknown"
    assert body["runtime_metadata"] == {}
    assert body["context"]["message_count"] == 0


def test_use_cases_3_to_5_checkpoint_context_and_end(live_server):
    seed_spec_session()
    url = f"{live_server.url}/sessions/{SPEC_ID}"
    checkpoint = {
        "last_completed_step": 3,
        "files_modified": ["a.ts", "b.ts"],
        "pending_actions": ["run tests", "commit"],
        "recovery_prompt": "Continue implementing modal from step 4",
    }
    code, body = curl(
        "-X",
        "PATCH",
        url,
        "-H",
        "Content-Type: application/json",
        "-d",
        json.dumps({"checkpoint": checkpoint}, indent=2),
    )
    assert code == 200 and body["checkpoint"] == checkpoint

    context = {
        "working_directory": "/project",
        "current_task": "Testing Steam Modal",
        "files_open": ["SteamModal.test.tsx"],
        "progress": 0.75,
    }
    code, body = curl(
        "-X", "PATCH", url, "-H", "Content-Type: application/json", "-d", json.dumps({"context": context})
    )
    assert code == 200 and body["context"] == context  # replaced, not merged
    assert body["checkpoint"] == checkpoint

    code, body = curl("-X", "PATCH", url, "-H", "Content-Type: application/json", "-d", '{"status": "completed"}')
    assert code == 200 and body["status"] == "completed"
    assert Session.objects.get(pk=SPEC_ID).status == "completed"


def test_use_case_5_mark_as_crashed(live_server):
    seed_spec_session()
    code, body = curl(
        "-X",
        "PATCH",
        f"{live_server.url}/sessions/{SPEC_ID}",
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"status": "crashed"}',
    )
    assert code == 200 and body["status"] == "crashed"


def test_use_case_6_list_agent_sessions(live_server):
    for n in range(12):
        Session.objects.create(agent_id=AGENT, session_type=f"t{n}")
    Session.objects.create(agent_id="11111111-1111-1111-1111-111111111111", session_type="other")
    code, body = curl(f"{live_server.url}/sessions/?agent_id=550e8400-e29b-41d4-a716-446655440000&limit=10")
    assert code == 200
    assert len(body["results"]) == 10
    assert {s["agent_id"] for s in body["results"]} == {AGENT}
    assert [s["session_type"] for s in body["results"]] == [f"t{n}" for n in range(11, 1, -1)]  # newest first
    assert body["next"]
    code, body = curl(f"{live_server.url}/sessions/?limit=20")
    assert code == 200 and len(body["results"]) == 13


def test_execution_examples_without_content_type(live_server):
    """The execution examples PATCH with bare `curl -d` (form-urlencoded): read as JSON, applied."""
    code, created = curl(
        "-X",
        "POST",
        f"{live_server.url}/sessions/",
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"agent_id": "550e8400-e29b-41d4-a716-446655440000", "session_type": "task",'
        ' "context": {"task_id": "implement-modal"}, "runtime_backend": "local"}',
    )
    assert code == 201
    url = f"{live_server.url}/sessions/{created['id']}"

    code, body = curl(url)
    assert code == 200 and body["id"] == created["id"]

    code, body = curl("-X", "PATCH", url, "-d", '{"status": "paused"}')
    assert code == 200 and body["status"] == "paused"
    assert Session.objects.get(pk=created["id"]).status == "paused"

    code, body = curl("-X", "PATCH", url, "-d", '{"status": "active"}')
    assert code == 200 and body["status"] == "active"

    code, body = curl(
        "-X",
        "PATCH",
        url,
        "-d",
        """{
    "checkpoint": {
      "step": 5,
      "state": {"files": ["a.ts"]},
      "resume_prompt": "Continue from step 5"
    }
  }""",
    )
    assert code == 200
    assert body["checkpoint"] == {"step": 5, "state": {"files": ["a.ts"]}, "resume_prompt": "Continue from step 5"}

    code, body = curl(f"{live_server.url}/sessions/?agent_id=550e8400-e29b-41d4-a716-446655440000")
    assert code == 200 and body["results"][0]["id"] == created["id"]

    code, body = curl("-X", "PATCH", url, "-d", '{"status": "completed"}')
    assert code == 200 and body["status"] == "completed"
    assert Session.objects.get(pk=created["id"]).status == "completed"


def test_a_broken_body_without_content_type_is_refused_not_dropped(live_server):
    seed_spec_session()
    code, body = curl("-X", "PATCH", f"{live_server.url}/sessions/{SPEC_ID}", "-d", '{"status": "paused"')
    assert code == 400 and "JSON" in body["detail"]
    assert Session.objects.get(pk=SPEC_ID).status == "active"


def test_every_path_answers_with_and_without_its_trailing_slash(live_server):
    seed_spec_session()
    for path in (
        f"/sessions/{SPEC_ID}",
        f"/sessions/{SPEC_ID}/",
        "/sessions",
        "/sessions/",
        f"/sessions/{SPEC_ID}/checkpoints",
        f"/sessions/{SPEC_ID}/checkpoints/",
        "/api/schema",
        "/api/schema/",
    ):
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", live_server.url + path],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out == "200", path
    for path in ("/sessions", "/sessions/"):
        code, body = curl(
            "-X",
            "POST",
            live_server.url + path,
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"agent_id": "550e8400-e29b-41d4-a716-446655440000", "session_type": "task"}',
        )
        assert code == 201, path
    for path in (f"/sessions/{SPEC_ID}", f"/sessions/{SPEC_ID}/"):
        code, body = curl("-X", "PATCH", live_server.url + path, "-d", '{"context": {"p": "' + path + '"}}')
        assert code == 200 and body["context"] == {"p": path}
