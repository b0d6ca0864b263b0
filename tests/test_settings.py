"""The embedded default: no DATABASE_URL means a SQLite file next to manage.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from sessions_project.settings import database_from_url

ROOT = Path(__file__).resolve().parent.parent


def test_without_database_url_the_service_uses_a_sqlite_file():
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='sessions_project.settings'; django.setup();"
            "from django.conf import settings as s; d=s.DATABASES['default'];"
            "print(d['ENGINE']); print(d['NAME']); print(repr(s.REDIS_URL))",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert out[0] == "django.db.backends.sqlite3"
    assert out[1] == str(ROOT / "db.sqlite3")
    assert out[2] == "''"


def test_database_urls_are_parsed():
    pg = database_from_url("postgres://user:p%40ss@db.example:6543/sessions?sslmode=require")
    assert (pg["ENGINE"], pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == (
        "django.db.backends.postgresql",
        "sessions",
        "user",
        "p@ss",
        "db.example",
        "6543",
    )
    assert pg["OPTIONS"] == {"sslmode": "require"}
    assert database_from_url("sqlite:////tmp/x.db")["NAME"] == "/tmp/x.db"
    assert database_from_url("sqlite:///x.db")["NAME"] == str(ROOT / "x.db")
    with pytest.raises(ImproperlyConfigured):
        database_from_url("mysql://x/y")
