"""gunicorn settings for `make run`; every value can be overridden from the environment."""

import multiprocessing
import os

bind = os.environ.get("BIND", f"127.0.0.1:{os.environ.get('PORT', '8011')}")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
wsgi_app = "sessions_project.wsgi:application"
# gunicorn's control socket defaults to one path per user, shared by every
# gunicorn on the machine: a second server would take it over. We don't use it.
control_socket_disable = True


# --- Companion processes ---------------------------------------------------
# With Redis configured, `make run` also runs the event relay next to the web
# workers, so events that could not be published at once are delivered
# without a second terminal. RUN_RELAY=false turns it off (run
# `manage.py relay_events` yourself, e.g. as its own service).
# CRASH_DETECT_STALE_AFTER=15m likewise runs `detect_crashed_sessions`.
_companions = []


def _wanted_companions() -> list[list[str]]:
    import sys

    manage = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "manage.py")]
    wanted = []
    if os.environ.get("REDIS_URL") and os.environ.get("RUN_RELAY", "true").lower() not in {"0", "false", "no", "off"}:
        wanted.append([*manage, "relay_events"])
    stale_after = os.environ.get("CRASH_DETECT_STALE_AFTER")
    if stale_after:
        wanted.append([*manage, "detect_crashed_sessions", "--stale-after", stale_after])
    return wanted


def when_ready(server):
    import subprocess

    for command in _wanted_companions():
        server.log.info("Starting %s", " ".join(command[1:]))
        _companions.append(subprocess.Popen(command))


def on_exit(server):
    for process in _companions:
        process.terminate()
    for process in _companions:
        try:
            process.wait(timeout=15)
        except Exception:
            process.kill()
