"""The session admin: find, read and repair sessions, on a table of millions.

Every change goes through the domain functions, as the API's do: the edit form
through ``lifecycle.update_session`` (status rules, version, session.updated
event), the actions and buttons through ``recovery.recover_session``,
``lifecycle.change_status``, ``lifecycle.restore_checkpoint`` and
``lifecycle.delete_session``. A move the rules refuse becomes a message naming
the session; each change is written to the admin's history with its user.

Speed on a large table, where the stock changelist would read every row:

* no COUNT(*) over the table: ``SessionPaginator`` counts at most
  ``COUNT_LIMIT`` rows and, unfiltered, reads PostgreSQL's estimate instead;
  a filtered list reads the ids of its first matches once, for the count and
  the pages; pages stop at ``COUNT_LIMIT`` rows (OFFSET stays small), filters
  reach further;
* every filter and the default order (newest first) are served by an index
  (see ``models.Session.Meta.indexes``); the session types come from a loose
  index scan, the date hierarchy from MIN/MAX instead of SELECT DISTINCT;
* a full UUID in the search box is looked up by the primary key and agent
  indexes, never by LIKE; an id prefix by an index range. Other text is
  looked for in the context as text: that reads the rows (narrow down with the
  filters first). A trigram index would serve it, but it measured 281 MB on a
  million small contexts and every context write would maintain it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connections, transaction
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.db.models.lookups import IContains
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from . import lifecycle, recovery
from .dashboard import COUNT_LIMIT, bounded_count, format_duration
from .models import Checkpoint, Event, Session
from .templatetags.session_admin import json_html

Status = Session.Status
# What an action's step answers: the session as changed, and its history message.
Change = tuple[Session, str]

# Events of a session shown on its page, newest first.
EVENTS_SHOWN = 50
# Sessions one run of an action changes at most (one short transaction each);
# "select all" on a huge list is handled in runs of this size.
ACTION_LIMIT = 1000
# Per-session messages an action writes before summing up the rest.
MESSAGES_SHOWN = 10


# --- The changelist: counting, ordering, filters ------------------------------------


class SessionPaginator(Paginator):
    """Pages through the sessions without counting the whole table or asking for a large OFFSET.

    * Unfiltered: counts at most COUNT_LIMIT rows (an index-only scan that
      stops there); beyond that, the count is PostgreSQL's estimate.
    * Filtered (filters, a date, a search): one query reads the ids of the
      first COUNT_LIMIT + 1 matches in list order; the count and every page
      come from it, so a search that has to read the rows reads them once.

    ``exact`` says whether ``count`` is the true number. When it is not, the
    pages stop at COUNT_LIMIT rows: filters reach the others.
    """

    exact = True
    estimated = False
    # The ids of the matching sessions, in list order, when the list is filtered.
    matching_ids: list[uuid.UUID] | None = None

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if queryset.query.where:
            ids = list(queryset.values_list("pk", flat=True)[: COUNT_LIMIT + 1])
            self.exact = len(ids) <= COUNT_LIMIT
            self.matching_ids = ids[:COUNT_LIMIT]
            return len(ids)
        total, self.exact = bounded_count(queryset, COUNT_LIMIT)
        self.estimated = not self.exact and total > COUNT_LIMIT + 1
        return total

    @property
    def count_text(self) -> str:
        return f"{self.count:,}"

    @property
    def limit(self) -> str:
        return f"{COUNT_LIMIT:,}"

    @cached_property
    def num_pages(self) -> int:
        pages = super().num_pages
        if self.exact:
            return pages
        return min(pages, max(1, -(-COUNT_LIMIT // self.per_page)))

    def page(self, number):
        number = self.validate_number(number)
        if self.matching_ids is None:
            return super().page(number)
        bottom = (number - 1) * self.per_page
        chosen = self.matching_ids[bottom : bottom + self.per_page]
        return self._get_page(self.object_list.filter(pk__in=chosen), number, self)


class SessionChangeList(ChangeList):
    def get_queryset(self, request, exclude_parameters=None):
        # The JSON columns can be large and the list never shows them.
        return super().get_queryset(request, exclude_parameters).defer(*Session.JSON_FIELDS)

    def get_ordering(self, request, queryset):
        # Django breaks ties with -pk whatever the direction; the created index is
        # (created_at DESC, id DESC), so the tie-breaker must run the same way as
        # created_at or an ascending sort would sort the whole table.
        ordering = super().get_ordering(request, queryset)
        if len(ordering) > 1 and isinstance(ordering[0], str) and ordering[-1] in ("pk", "-pk", "id", "-id"):
            ordering[-1] = "-pk" if ordering[0].startswith("-") else "pk"
        return ordering

    def get_results(self, request):
        super().get_results(request)
        ids = self.paginator.matching_ids
        if ids is not None and (not self.multi_page or (self.show_all and self.can_show_all)):
            # One page holds every match: read them by id rather than run the filters again.
            self.result_list = self.queryset.filter(pk__in=ids)


class SessionTypeFilter(admin.SimpleListFilter):
    title = "type"
    parameter_name = "session_type"
    # A guard for free-form types: the filter lists this many at most.
    shown = 50

    def lookups(self, request, model_admin):
        types = _session_types(self.shown)
        chosen = self.value()
        if chosen and chosen not in types:
            types.append(chosen)
        return [(value, value) for value in types]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(session_type=self.value())
        return queryset


def _session_types(limit: int) -> list[str]:
    """The distinct session types, read from the session_type_created index.

    SELECT DISTINCT would read the whole index; on PostgreSQL a recursive query
    jumps from one type to the next (a "loose index scan"): one probe per type.
    """
    connection = connections["default"]
    if connection.vendor != "postgresql":
        return list(Session.objects.order_by("session_type").values_list("session_type", flat=True).distinct()[:limit])
    table = connection.ops.quote_name(Session._meta.db_table)
    sql = f"""
        WITH RECURSIVE types(session_type) AS (
            (SELECT session_type FROM {table} ORDER BY session_type LIMIT 1)
            UNION ALL
            SELECT (SELECT s.session_type FROM {table} s
                    WHERE s.session_type > types.session_type ORDER BY s.session_type LIMIT 1)
            FROM types WHERE types.session_type IS NOT NULL
        )
        SELECT session_type FROM types WHERE session_type IS NOT NULL LIMIT %s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [row[0] for row in cursor.fetchall()]


class RecoverabilityFilter(admin.SimpleListFilter):
    title = "recovery"
    parameter_name = "recoverability"

    def lookups(self, request, model_admin):
        return [
            ("waiting", "Waiting for recovery"),
            ("exhausted", f"Exhausted ({settings.MAX_RECOVERY_ATTEMPTS} attempts used)"),
        ]

    def queryset(self, request, queryset):
        # Both are crashed sessions: the (status, created_at) index and the crashed queue serve them.
        limit = settings.MAX_RECOVERY_ATTEMPTS
        if self.value() == "waiting":
            return queryset.filter(status=Status.CRASHED, recovery_attempts__lt=limit)
        if self.value() == "exhausted":
            return queryset.filter(status=Status.CRASHED, recovery_attempts__gte=limit)
        return queryset


# --- The edit form --------------------------------------------------------------------


class JSONEditor(forms.Textarea):
    """A monospace textarea, folded under "Edit as JSON" until the form comes back with errors."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__({"class": "json-editor", "spellcheck": "false", "cols": 100, **(attrs or {})})
        self.open = False

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        lines = str(value or "").count("\n") + 2
        context["widget"]["attrs"]["rows"] = max(6, min(lines, 30))
        return context

    def render(self, name, value, attrs=None, renderer=None):
        textarea = super().render(name, value, attrs, renderer)
        return format_html(
            '<details class="json-edit"{}><summary>Edit as JSON</summary>{}</details>',
            " open" if self.open else "",
            textarea,
        )


class JSONObjectField(forms.JSONField):
    """A JSON object, shown indented; anything else (bad JSON, a list, a number) is refused."""

    widget = JSONEditor
    default_error_messages = {
        "required": "Enter a JSON object: {} when there is nothing to store.",
        "not_object": "Must be a JSON object ({…}), not %(kind)s.",
        "invalid": "Not valid JSON: %(detail)s.",
    }

    def to_python(self, value):
        if self.disabled:
            return value
        if value in self.empty_values:
            return None
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as error:
            detail = f"{error.msg} (line {error.lineno}, column {error.colno})"
            raise ValidationError(self.error_messages["invalid"], code="invalid", params={"detail": detail}) from None
        if not isinstance(parsed, dict):
            raise ValidationError(
                self.error_messages["not_object"], code="not_object", params={"kind": _json_kind(parsed)}
            )
        return parsed

    def validate(self, value):
        # {} is a fine value (Field.validate takes it for "empty"); only a blank box is missing.
        if value is None and self.required:
            raise ValidationError(self.error_messages["required"], code="required")

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"


class SessionAdminForm(forms.ModelForm):
    """Validates a change the way the API does; ``SessionAdmin.save_model`` writes it through the domain."""

    context = JSONObjectField(label="Edit context")
    checkpoint = JSONObjectField(label="Edit checkpoint")
    runtime_metadata = JSONObjectField(label="Edit runtime metadata")
    # The version the page was loaded at: a change made meanwhile is not overwritten.
    expected_version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = Session
        fields = ["agent_id", "session_type", "status", "crash_reason", "runtime_backend", *Session.JSON_FIELDS]
        widgets = {
            "agent_id": forms.TextInput(attrs={"size": 40}),
            "crash_reason": forms.TextInput(attrs={"size": 60}),
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        current = self.instance.status
        self.fields["expected_version"].initial = self.instance.version
        if "status" in self.fields:
            allowed = ", ".join(sorted(lifecycle.ALLOWED[current])) or "none: it is final"
            self.fields["status"].help_text = f"From {current}, a session may move to: {allowed}."
        if "crash_reason" in self.fields:
            self.fields["crash_reason"].help_text = "Kept while the session is crashed."
        if self.is_bound:
            for name in Session.JSON_FIELDS:
                if name in self.fields:
                    self.fields[name].widget.open = True

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        session = self.instance  # as loaded for this request; the form has not touched it yet
        expected = cleaned.get("expected_version")
        if expected is not None and expected != session.version:
            raise ValidationError(
                "The session changed while you were editing it (version %(then)s, now %(now)s): "
                "reload the page and make your change again.",
                code="stale",
                params={"then": expected, "now": session.version},
            )
        status = cleaned.get("status") or session.status
        if "status" in self.changed_data:
            try:
                lifecycle.check_transition(session.status, status)
            except lifecycle.InvalidTransition as error:
                self.add_error("status", str(error))
        if "crash_reason" in self.changed_data and status != Status.CRASHED:
            self.add_error("crash_reason", "A crash reason is kept only when the status is or becomes crashed.")
        return cleaned

    def domain_changes(self) -> dict[str, Any]:
        """The fields the person changed, as ``lifecycle.update_session`` takes them."""
        changes = {name: self.cleaned_data[name] for name in self.changed_data if name in Session.WRITABLE_FIELDS}
        if changes.get("status") == Status.CRASHED:
            changes["crash_reason"] = self.cleaned_data.get("crash_reason", "")
        return changes


class CrashReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=Session._meta.get_field("crash_reason").max_length,
        help_text="Stored as the sessions' crash_reason and sent in their session.updated events.",
        widget=forms.TextInput(attrs={"size": 60, "autofocus": True}),
    )


# --- The admin --------------------------------------------------------------------------

_UUID_PREFIX = re.compile(r"[0-9a-f]{8}(?:-?[0-9a-f]{1,4}){0,6}")
_STATUS_COLOURS = {
    Status.ACTIVE: "active",
    Status.PAUSED: "paused",
    Status.COMPLETED: "completed",
    Status.CRASHED: "crashed",
}


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    form = SessionAdminForm
    paginator = SessionPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100
    ordering = ("-created_at", "-id")
    list_display = [
        "short_id",
        "agent",
        "kind",
        "status_badge",
        "backend",
        "created",
        "last_activity",
        "duration",
    ]
    list_display_links = ["short_id"]
    # Only the indexed order: sorting on another column would sort the whole table.
    sortable_by = ["created"]
    list_filter = [
        "status",
        SessionTypeFilter,
        "runtime_backend",
        "created_at",
        RecoverabilityFilter,
    ]
    date_hierarchy = "created_at"
    search_fields = ["id", "agent_id", "context"]  # shows the search box; get_search_results does the work
    search_help_text = "A session or agent id (whole, or its first 8 characters or more), or text inside the context."
    actions = ["recover_sessions", "mark_crashed", "mark_completed", "delete_selected"]
    readonly_fields = [
        "id",
        "parent",
        "version",
        "created_at",
        "updated_at",
        "last_activity_at",
        "last_heartbeat_at",
        "ended_at",
        "duration",
        "recovery_attempts",
        "recovered_at",
        "context_view",
        "checkpoint_view",
        "runtime_metadata_view",
    ]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "agent_id",
                    "session_type",
                    "status",
                    "crash_reason",
                    "runtime_backend",
                    "parent",
                    "expected_version",
                ]
            },
        ),
        (
            "Lifecycle",
            {
                "fields": [
                    ("version", "duration"),
                    ("created_at", "updated_at"),
                    ("last_activity_at", "last_heartbeat_at"),
                    "ended_at",
                    ("recovery_attempts", "recovered_at"),
                ]
            },
        ),
        ("Context", {"fields": ["context_view", "context"]}),
        ("Checkpoint", {"fields": ["checkpoint_view", "checkpoint"]}),
        ("Runtime metadata", {"fields": ["runtime_metadata_view", "runtime_metadata"]}),
    ]

    # Sessions are started by their agents, through the API.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_changelist(self, request, **kwargs):
        return SessionChangeList

    def get_fieldsets(self, request, obj=None):
        if self.has_change_permission(request, obj):
            return self.fieldsets
        # Read only: the coloured views are enough, and the form's own field is not there.
        editable_only = {"expected_version", *Session.JSON_FIELDS}
        return [
            (name, {**options, "fields": [f for f in options["fields"] if f not in editable_only]})
            for name, options in self.fieldsets
        ]

    # --- List columns

    @admin.display(description="id")
    def short_id(self, obj: Session) -> str:
        return format_html('<code title="{}">{}</code>', obj.pk, str(obj.pk)[:8])

    @admin.display(description="agent")
    def agent(self, obj: Session) -> str:
        return format_html(
            '<a href="?agent_id={}" title="Sessions of agent {}"><code>{}</code></a>',
            obj.agent_id,
            obj.agent_id,
            str(obj.agent_id)[:8],
        )

    @admin.display(description="status")
    def status_badge(self, obj: Session) -> str:
        return format_html(
            '<span class="session-badge session-badge-{}">{}</span>',
            _STATUS_COLOURS.get(obj.status, "unknown"),
            obj.get_status_display(),
        )

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Session) -> str:
        return _moment(obj.created_at)

    @admin.display(description="last activity")
    def last_activity(self, obj: Session) -> str:
        moment = obj.last_activity_at
        return format_html(
            '<time datetime="{}" title="{}">{}</time>', moment.isoformat(), timezone.localtime(moment), _ago(moment)
        )

    @admin.display(description="type")
    def kind(self, obj: Session) -> str:
        return obj.session_type

    @admin.display(description="backend")
    def backend(self, obj: Session) -> str:
        return obj.get_runtime_backend_display()

    @admin.display(description="duration")
    def duration(self, obj: Session) -> str:
        text = format_duration(obj.duration.total_seconds())
        if obj.ended_at:
            return text
        return format_html('<span class="running" title="Still running">{}</span>', text)

    @admin.display(description="Context")
    def context_view(self, obj: Session) -> str:
        return json_html(obj.context)

    @admin.display(description="Checkpoint")
    def checkpoint_view(self, obj: Session) -> str:
        return json_html(obj.checkpoint)

    @admin.display(description="Runtime metadata")
    def runtime_metadata_view(self, obj: Session) -> str:
        return json_html(obj.runtime_metadata)

    # --- Search

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            exact = uuid.UUID(term)
        except ValueError:
            exact = None
        if exact is not None:
            # The primary key and the agent index: never a LIKE scan.
            return queryset.filter(Q(pk=exact) | Q(agent_id=exact)), False
        lowered = term.lower()
        if _UUID_PREFIX.fullmatch(lowered):
            prefixed = queryset.filter(_uuid_prefix_q("pk", lowered) | _uuid_prefix_q("agent_id", lowered))
            if prefixed.exists():
                return prefixed, False
        # Text inside the context: jsonb as text, case-insensitive (reads the rows).
        return queryset.filter(IContains(Cast("context", TextField()), term)), False

    # --- Saving through the domain

    def save_model(self, request, obj: Session, form: SessionAdminForm, change: bool) -> None:
        # Runs inside the admin's transaction: the history entry and the events commit with the change.
        etag = f'"{form.cleaned_data["expected_version"]}"' if form.cleaned_data.get("expected_version") else None
        session, _ = lifecycle.update_session(obj.pk, form.domain_changes(), if_match=etag)
        _copy_into(session, obj)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except lifecycle.LifecycleError as error:
            # Lost a race between the form's checks and the write: the admin's
            # transaction rolled back, so nothing was saved.
            self.message_user(request, f"Nothing was saved: {error}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def delete_model(self, request, obj: Session) -> None:
        lifecycle.delete_session(obj.pk)

    def delete_queryset(self, request, queryset: QuerySet[Session]) -> None:
        # One short transaction per session; each publishes its session.deleted.
        for pk in list(queryset.values_list("pk", flat=True)):
            try:
                lifecycle.delete_session(pk)
            except Session.DoesNotExist:
                pass

    # --- The session's page: history, events, buttons

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra = {**(extra_context or {}), **_history(object_id)}
        return super().change_view(request, object_id, form_url, extra)

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/recover/", wrap(self.recover_view), name=f"{prefix}_recover"),
            path(
                "<path:object_id>/checkpoints/<int:number>/restore/",
                wrap(self.restore_view),
                name=f"{prefix}_restore_checkpoint",
            ),
            *super().get_urls(),
        ]

    def _change_url(self, pk: Any) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=[quote(pk)],
            current_app=self.admin_site.name,
        )

    def _session_for_button(self, request: HttpRequest, object_id: str) -> Session | HttpResponse:
        session = self.get_object(request, unquote(object_id))
        if session is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, session):
            raise PermissionDenied
        return session

    @method_decorator(require_POST)  # the buttons change data: never on GET
    def recover_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        session = self._session_for_button(request, object_id)
        if isinstance(session, HttpResponse):
            return session
        try:
            with transaction.atomic():
                session = recovery.recover_session(session.pk)
                self.log_change(request, session, _recovered_message(session))
        except recovery.RecoveryRefused as error:
            self.message_user(request, f"Not recovered: {error}", messages.ERROR)
        else:
            self.message_user(
                request, f"Session {_short(session.pk)} is active again ({_attempts(session)}).", messages.SUCCESS
            )
        return HttpResponseRedirect(self._change_url(session.pk))

    @method_decorator(require_POST)  # the buttons change data: never on GET
    def restore_view(self, request: HttpRequest, object_id: str, number: int) -> HttpResponse:
        session = self._session_for_button(request, object_id)
        if isinstance(session, HttpResponse):
            return session
        try:
            with transaction.atomic():
                session, _ = lifecycle.restore_checkpoint(session.pk, number)
                self.log_change(request, session, f"Restored checkpoint {number}.")
        except lifecycle.CheckpointNotFound as error:
            self.message_user(request, f"Not restored: {error}", messages.ERROR)
        else:
            self.message_user(
                request,
                f"Checkpoint {number} is the current checkpoint again (version {session.version}).",
                messages.SUCCESS,
            )
        return HttpResponseRedirect(self._change_url(session.pk))

    # --- Actions

    @admin.action(description="Recover selected crashed sessions", permissions=["change"])
    def recover_sessions(self, request: HttpRequest, queryset: QuerySet[Session]) -> None:
        def recover(session: Session) -> Change:
            recovered = recovery.recover_session(session.pk)
            return recovered, _recovered_message(recovered)

        self._apply(request, queryset, "Recovered", recover)

    @admin.action(description="Mark selected sessions crashed…", permissions=["change"])
    def mark_crashed(self, request: HttpRequest, queryset: QuerySet[Session]) -> TemplateResponse | None:
        form = CrashReasonForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            reason = form.cleaned_data["reason"]

            def crash(session: Session) -> Change | None:
                if session.status == Status.CRASHED:
                    return None
                crashed, _ = lifecycle.change_status(session.pk, Status.CRASHED, crash_reason=reason)
                return crashed, f"Marked crashed: {reason}"

            self._apply(request, queryset, "Marked crashed", crash, unchanged="was already crashed")
            return None
        sessions = list(queryset.only("pk", "agent_id", "session_type", "status", "created_at")[: ACTION_LIMIT + 1])
        truncated = len(sessions) > ACTION_LIMIT
        sessions = sessions[:ACTION_LIMIT]
        return TemplateResponse(
            request,
            "admin/sessions_app/session/mark_crashed.html",
            {
                **self.admin_site.each_context(request),
                "title": "Mark sessions crashed",
                "opts": self.opts,
                "form": form,
                "sessions": sessions,
                "truncated": truncated,
                "limit": ACTION_LIMIT,
                "final": [s for s in sessions if not lifecycle.ALLOWED[s.status] and s.status != Status.CRASHED],
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                "media": self.media,
            },
        )

    @admin.action(description="Mark selected sessions completed", permissions=["change"])
    def mark_completed(self, request: HttpRequest, queryset: QuerySet[Session]) -> None:
        def complete(session: Session) -> Change | None:
            completed, changed = lifecycle.change_status(session.pk, Status.COMPLETED)
            return (completed, "Marked completed.") if changed else None

        self._apply(request, queryset, "Marked completed", complete, unchanged="was already completed")

    def _apply(
        self,
        request: HttpRequest,
        queryset: QuerySet[Session],
        verb: str,
        change: Callable[[Session], Change | None],
        *,
        unchanged: str = "was left unchanged",
    ) -> None:
        """Run ``change`` on each session in its own transaction with its history entry; report each refusal.

        ``change`` answers the changed session and its history message, or None
        when there was nothing to do.
        """
        done = 0
        refused: list[str] = []
        skipped: list[str] = []
        selected = _selected(queryset)
        for session in selected[:ACTION_LIMIT]:
            try:
                with transaction.atomic():
                    result = change(session)
                    if result is not None:
                        self.log_change(request, *result)
            except (lifecycle.LifecycleError, ObjectDoesNotExist) as error:
                reason = str(error) if isinstance(error, lifecycle.LifecycleError) else "It no longer exists."
                refused.append(f"Session {_short(session.pk)} ({session.status}): {reason}")
                continue
            if result is None:
                skipped.append(_short(session.pk))
            else:
                done += 1
        if done:
            self.message_user(request, f"{verb} {done} session{'s' if done != 1 else ''}.", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{len(skipped)} {unchanged}: {', '.join(skipped[:20])}", messages.INFO)
        for line in refused[:MESSAGES_SHOWN]:
            self.message_user(request, f"{line} Nothing was changed.", messages.WARNING)
        if len(refused) > MESSAGES_SHOWN:
            self.message_user(request, f"…and {len(refused) - MESSAGES_SHOWN} more left unchanged.", messages.WARNING)
        if len(selected) > ACTION_LIMIT:
            self.message_user(
                request,
                f"Only the first {ACTION_LIMIT:,} selected sessions were handled: run the action again for the others.",
                messages.WARNING,
            )


def _selected(queryset: QuerySet[Session]) -> list[Session]:
    # Only what the messages name (each change reads its row again under a lock),
    # and one more than a run handles, to say that there are others.
    fields = ("pk", "agent_id", "status", "session_type")
    return list(queryset.order_by("-created_at", "-id").only(*fields)[: ACTION_LIMIT + 1])


def _copy_into(source: Session, target: Session) -> None:
    for field in Session._meta.concrete_fields:
        setattr(target, field.attname, getattr(source, field.attname))


def _moment(value) -> str:
    """A timestamp short enough for a list column; the full one on hover."""
    local = timezone.localtime(value)
    return format_html('<time datetime="{}" title="{}">{}</time>', value.isoformat(), local, f"{local:%Y-%m-%d %H:%M}")


def _ago(moment) -> str:
    """How long ago, to the coarsest unit that says it: 40 s ago, 12 min ago, 5 h ago, 3 d ago."""
    seconds = max(0, int((timezone.now() - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _short(pk: Any) -> str:
    return str(pk)[:8]


def _attempts(session: Session) -> str:
    return f"recovery attempt {session.recovery_attempts} of {settings.MAX_RECOVERY_ATTEMPTS}"


def _recovered_message(session: Session) -> str:
    return f"Recovered: {_attempts(session)}."


def _uuid_prefix_q(field: str, prefix: str) -> Q:
    """ids starting with ``prefix``, as a range of the field's index (uuids order like their hex)."""
    digits = prefix.replace("-", "")
    low = uuid.UUID(digits.ljust(32, "0"))
    high = uuid.UUID(digits.ljust(32, "f"))
    return Q(**{f"{field}__gte": low, f"{field}__lte": high})


def _history(object_id: str) -> dict[str, Any]:
    """The checkpoint history and the latest events of a session, for its page."""
    try:
        pk = uuid.UUID(unquote(object_id))
    except ValueError:
        return {}
    checkpoints = list(Checkpoint.objects.filter(session_id=pk).order_by("-number"))
    events = list(Event.objects.filter(aggregate_id=pk).order_by("-sequence")[:EVENTS_SHOWN])
    return {
        "checkpoint_history": checkpoints,
        "session_events": events,
        "events_shown": EVENTS_SHOWN,
    }
