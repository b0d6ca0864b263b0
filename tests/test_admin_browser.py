"""The admin in real headless Chromium against a live server, PostgreSQL and Redis.

Debian's chromium and chromium-driver drive it (scripts/ensure-browser.sh
installs them); nothing is downloaded. With SAVE_SCREENSHOTS=1 (`make screenshots`)
the tests save the README's screenshots in docs/screenshots/ (list.png, session.png,
dashboard.png); otherwise under the temporary folder.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from sessions_app import lifecycle
from sessions_app.models import Session

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# `make screenshots` (SAVE_SCREENSHOTS=1) refreshes the README's pictures; other runs keep theirs in /tmp.
SCREENSHOTS = (
    Path(__file__).resolve().parent.parent / "docs" / "screenshots"
    if os.environ.get("SAVE_SCREENSHOTS")
    else Path(tempfile.gettempdir()) / "session-service-screenshots"
)
PASSWORD = "a long test passphrase"
WAIT = 10


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} is missing: run scripts/ensure-browser.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="admin-browser-")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1440,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(autouse=True)
def plain_static_files(settings):
    # The live server serves the admin's CSS from the apps (no collectstatic, no manifest).
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def admin_in_browser(browser, live_server):
    """The browser, logged in to the admin as a fresh superuser."""
    from selenium.webdriver.common.by import By

    get_user_model().objects.create_superuser("ops", "ops@example.com", PASSWORD)
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("ops")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(browser, "#site-name")
    return browser


def wait_for(browser, css: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def screenshot(browser, name: str, *, height: int | None = None) -> Path:
    """Save docs/screenshots/<name>, as tall as the page (within reason)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.execute_script("return document.documentElement.scrollHeight")
    chrome = browser.execute_script("return window.outerHeight - window.innerHeight")
    browser.set_window_size(1440, min(max(height or page, 800), 3600) + chrome)
    path = SCREENSHOTS / name
    browser.save_screenshot(str(path))
    browser.set_window_size(1440, 1000)
    return path


def assert_no_alert(browser) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert  # noqa: B018 - the property raises when there is none


def fleet() -> None:
    """A fortnight of sessions for the list and the dashboard to show."""
    rng = random.Random(7)
    now = timezone.now()
    types = ["conversation", "development", "task", "batch"]
    backends = ["local", "kubernetes", "unknown"]
    rows = []
    for day in range(14):
        for _ in range(rng.randint(4, 12)):
            created = now - timedelta(days=day, hours=rng.uniform(0.5, 20))
            status = rng.choices(["completed", "crashed", "active", "paused"], [70, 12, 12, 6])[0]
            ended = created + timedelta(minutes=rng.uniform(2, 240)) if status in Session.ENDED else None
            if ended and ended > now:
                ended = now
            rows.append(
                Session(
                    agent_id=uuid.UUID(int=rng.getrandbits(128)),
                    session_type=rng.choice(types),
                    runtime_backend=rng.choice(backends),
                    status=status,
                    created_at=created,
                    updated_at=ended or created,
                    last_activity_at=ended or created + timedelta(minutes=5),
                    ended_at=ended,
                    crash_reason="heartbeat_timeout" if status == "crashed" else "",
                    # Out of attempts: the recover action refuses them (and they stay in the chart).
                    recovery_attempts=3 if status == "crashed" else 0,
                    context={"current_task": f"step {rng.randint(1, 9)}"},
                )
            )
    Session.objects.bulk_create(rows)


def test_an_operator_recovers_crashed_sessions_restores_a_checkpoint_and_reads_the_dashboard(
    admin_in_browser, live_server, subscriber
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser = admin_in_browser
    base = f"{live_server.url}/admin/sessions_app/session/"
    fleet()
    exhausted = Session.objects.filter(status="crashed").count()
    pod_lost = [
        lifecycle.create_session(
            {
                "agent_id": uuid.uuid4(),
                "session_type": "development",
                "runtime_backend": "kubernetes",
                "status": "crashed",
                "crash_reason": "pod evicted",
                "context": {"working_directory": "/project", "current_task": "Implement Steam Modal"},
                "checkpoint": {"step": 3, "resume_prompt": "Continue from step 3"},
            }
        )
        for _ in range(2)
    ]
    steps = lifecycle.create_session(
        {
            "agent_id": uuid.UUID("550e8400-e29b-41d4-a716-446655440000"),
            "session_type": "development",
            "runtime_backend": "local",
            "context": {
                "working_directory": "/project/src",
                "current_task": "Implement animation system",
                "files_open": ["animations.ts", "SteamModal.tsx"],
                "git_branch": "feature/steam-modal",
                "uncommitted_changes": 3,
                "tests_passing": True,
                "reviewer": None,
            },
            "checkpoint": {"step": 1, "completed_actions": ["analyze"], "resume_prompt": "Design the modal"},
            "runtime_metadata": {"terminal_id": "term-123", "pid": 12345},
        }
    )
    for step, actions in ((2, ["analyze", "design"]), (3, ["analyze", "design", "implement"])):
        lifecycle.update_session(
            steps.pk,
            {"checkpoint": {"step": step, "completed_actions": actions, "resume_prompt": f"Continue from step {step}"}},
        )
    subscriber.events([s.pk for s in pod_lost], count=2)  # their session.created

    # The list, then the crashed sessions only.
    browser.get(base)
    wait_for(browser, "#result_list")
    assert browser.find_elements(By.CSS_SELECTOR, ".session-badge-crashed")
    screenshot(browser, "list.png", height=1000)
    browser.find_element(By.CSS_SELECTOR, '#changelist-filter a[href="?status__exact=crashed"]').click()
    wait_for(browser, "#result_list")
    assert "status__exact=crashed" in browser.current_url
    shown = {e.get_attribute("title") for e in browser.find_elements(By.CSS_SELECTOR, "#result_list code[title]")}
    assert {str(s.pk) for s in pod_lost} <= shown
    assert not browser.find_elements(By.CSS_SELECTOR, "#result_list .session-badge-active")

    # Recover them with the action.
    browser.find_element(By.ID, "action-toggle").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("recover_sessions")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    message = wait_for(browser, "ul.messagelist li.success")
    assert message.text == "Recovered 2 sessions."
    refusals = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "ul.messagelist li.warning")]
    assert exhausted and len(refusals) == min(exhausted, 10) + (exhausted > 10)
    assert "has used up its 3 recovery attempts. Nothing was changed." in refusals[0]
    still = {e.get_attribute("title") for e in browser.find_elements(By.CSS_SELECTOR, "#result_list code[title]")}
    assert len(still) == exhausted and not still & {str(s.pk) for s in pod_lost}

    browser.get(f"{base}?q={pod_lost[0].pk}")
    wait_for(browser, "#result_list")
    assert browser.find_element(By.CSS_SELECTOR, "#result_list .session-badge").text == "Active"
    for session in pod_lost:
        received = subscriber.events(session.pk, count=3)
        assert [e["event_type"] for e in received] == ["session.created", "session.updated", "session.recovered"]
        assert received[1]["payload"]["previous_status"] == "crashed"
        assert received[1]["payload"]["status"] == "active"

    # A session's page: coloured JSON, history, events; restore checkpoint 1.
    browser.get(base)
    wait_for(browser, "#result_list")
    browser.find_element(By.CSS_SELECTOR, f'#result_list code[title="{steps.pk}"]').click()
    wait_for(browser, "#checkpoint-history")
    assert browser.find_elements(By.CSS_SELECTOR, "pre.json .json-key")
    assert [e.get_attribute("id") for e in browser.find_elements(By.CSS_SELECTOR, "#checkpoint-history tbody tr")] == [
        "checkpoint-3",
        "checkpoint-2",
        "checkpoint-1",
    ]
    screenshot(browser, "session.png")
    browser.find_element(By.CSS_SELECTOR, "#checkpoint-1 button.restore").click()
    message = wait_for(browser, "ul.messagelist li.success")
    assert message.text.startswith("Checkpoint 1 is the current checkpoint again")
    checkpoint_view = browser.find_element(By.CSS_SELECTOR, ".field-checkpoint_view pre.json").text
    assert '"resume_prompt": "Design the modal"' in checkpoint_view
    steps.refresh_from_db()
    assert steps.checkpoint["step"] == 1
    updated = subscriber.events(steps.pk, count=4)[-1]
    assert (updated["event_type"], updated["payload"]["updates"]) == ("session.updated", ["checkpoint"])

    # The dashboard and its chart.
    browser.get(f"{live_server.url}/admin/")
    chart = wait_for(browser, "svg#fleet-chart")
    bars = chart.find_elements(By.CSS_SELECTOR, "a.bar-link rect")
    assert len(bars) > 14
    assert {b.get_attribute("class") for b in bars} == {"bar-created", "bar-crashed", "bar-completed"}
    assert browser.find_element(By.CSS_SELECTOR, '[data-status="active"] .figure').text != "0"
    screenshot(browser, "dashboard.png")
    browser.find_element(By.ID, "fleet-exhausted").click()
    wait_for(browser, "#result_list")
    assert "recoverability=exhausted" in browser.current_url
    assert len(browser.find_elements(By.CSS_SELECTOR, "#result_list .session-badge-crashed")) == exhausted


def test_markup_in_a_context_is_shown_as_text_and_never_run(admin_in_browser, live_server):
    from selenium.webdriver.common.by import By

    browser = admin_in_browser
    payload = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    session = lifecycle.create_session(
        {"agent_id": uuid.uuid4(), "session_type": "task", "context": {"note": payload}, "checkpoint": {"p": payload}}
    )

    browser.get(f"{live_server.url}/admin/sessions_app/session/{session.pk}/change/")
    view = wait_for(browser, ".field-context_view pre.json")
    assert_no_alert(browser)
    assert payload.replace('"', '\\"') in view.text
    assert not browser.find_elements(By.CSS_SELECTOR, "pre.json script, pre.json img")

    browser.get(f"{live_server.url}/admin/sessions_app/session/?q=%3Cscript%3Ealert(1)")
    wait_for(browser, "#result_list")
    assert_no_alert(browser)
    assert browser.find_element(By.ID, "searchbar").get_attribute("value") == "<script>alert(1)"
    assert browser.find_element(By.CSS_SELECTOR, "#result_list code[title]").get_attribute("title") == str(session.pk)
