"""Shared fixtures: the real API client, a real Redis subscriber, session factories."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

AGENT = "550e8400-e29b-41d4-a716-446655440000"


@pytest.fixture
def api() -> APIClient:
    return APIClient()


class Subscriber:
    """A real subscriber of events:session, as another service would be."""

    def __init__(self, url: str, channel: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(channel)
        # Wait for the subscription to be confirmed so no event is missed.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.1)
            if message and message["type"] == "subscribe":
                break
        self.seen: list[dict] = []

    def _drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            message = self.pubsub.get_message(timeout=max(remaining, 0.0))
            if message is None or message["type"] != "message":
                if remaining <= 0:
                    return
                continue
            self.seen.append(json.loads(message["data"]))

    def events(self, aggregate_id=None, *, count: int | None = None, timeout: float = 2.0) -> list[dict]:
        """Events received so far for one session id, or a collection of ids (None: all), waiting for `count`.

        Other processes may publish on the same Redis, so tests name what they expect.
        """
        if aggregate_id is None:
            wanted = None
        elif isinstance(aggregate_id, (set, frozenset, list, tuple)):
            wanted = {str(a) for a in aggregate_id}
        else:
            wanted = {str(aggregate_id)}
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.seen if wanted is None or e["aggregate_id"] in wanted]
            remaining = deadline - time.monotonic()
            if (count is not None and len(found) >= count) or remaining <= 0:
                return found
            self._drain(min(remaining, 0.2) if count is not None else remaining)

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    assert settings.REDIS_URL, "the test suite needs REDIS_URL (make test sets it)"
    sub = Subscriber(settings.REDIS_URL, settings.EVENTS_CHANNEL)
    yield sub
    sub.close()


def create(api: APIClient, **fields) -> dict:
    body = {"agent_id": AGENT, "session_type": "task", **fields}
    response = api.post("/sessions/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def new_agent() -> str:
    return str(uuid.uuid4())


def run_together(n: int, work: Callable[[int, APIClient], object]) -> list:
    """Run work(i, client) in n real threads released at the same moment, each with its own
    API client and database connection; answer the results in order of i."""
    barrier = threading.Barrier(n)

    def one(i: int):
        client = APIClient()
        try:
            barrier.wait(timeout=10)
            return work(i, client)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n), timeout=120))


def command_env() -> dict[str, str]:
    """The environment for a manage.py subprocess that uses the test database and Redis."""
    db = connection.settings_dict
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "PYTHONUNBUFFERED": "1",
    }


def pytest_configure(config) -> None:
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine:
        raise pytest.UsageError(
            "The tests run against PostgreSQL and Redis: use `make test`, or set "
            "DATABASE_URL=postgres://... and REDIS_URL=redis://..."
        )
