"""List filters for GET /sessions/: every one is backed by an index (see models)."""

from __future__ import annotations

from datetime import UTC

from django import forms
from django.conf import settings
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from rest_framework.exceptions import ValidationError
from rest_framework.filters import BaseFilterBackend, OrderingFilter

from .models import Session


class StrictBooleanField(forms.NullBooleanField):
    """true/false (or 1/0); anything else is a 400 naming the parameter, not silently ignored."""

    def to_python(self, value):
        if value in (None, ""):
            return None
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"true", "1"}:
            return True
        if text in {"false", "0"}:
            return False
        raise forms.ValidationError("Must be true or false.", code="invalid")

    def validate(self, value):
        pass


class StrictBooleanFilter(filters.BooleanFilter):
    field_class = StrictBooleanField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", forms.TextInput)
        super().__init__(*args, **kwargs)


class UTCDateTimeField(IsoDateTimeField):
    """ISO 8601, with or without a time zone (naive means UTC), handed to the database in UTC.

    Converting here keeps odd but valid offsets (+16:00) and dates at the edge
    of the calendar from reaching the database as values it refuses.
    """

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except OverflowError:
            raise forms.ValidationError("Out of range.", code="invalid") from None


class UTCDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField


class MultipleChoiceInFilter(filters.MultipleChoiceFilter):
    """?status=a&status=b as one `IN (...)`: no OR chain, no DISTINCT, so the indexes serve it."""

    def filter(self, qs, value):
        if not value:
            return qs
        return qs.filter(**{f"{self.field_name}__in": list(value)})


class CachedFormFilterSet(filters.FilterSet):
    """django-filter builds a new form class for every request; ours never change, so build each once."""

    def get_form_class(self):
        cls = type(self)
        form_class = cls.__dict__.get("_form_class")
        if form_class is None:
            form_class = super().get_form_class()
            cls._form_class = form_class
        return form_class


class SessionFilterSet(CachedFormFilterSet):
    agent_id = filters.UUIDFilter(help_text="Sessions of this agent.")
    status = MultipleChoiceInFilter(
        choices=Session.Status.choices, help_text="One or several: status=active&status=paused."
    )
    session_type = filters.CharFilter(help_text="Exact session type.")
    runtime_backend = MultipleChoiceInFilter(choices=Session.RuntimeBackend.choices)
    parent_id = filters.UUIDFilter(field_name="parent_id", help_text="Sessions forked from this one.")
    created_after = UTCDateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="ISO 8601; created at or after. Naive times are UTC."
    )
    created_before = UTCDateTimeFilter(
        field_name="created_at", lookup_expr="lt", help_text="ISO 8601; created strictly before. Naive times are UTC."
    )
    updated_after = UTCDateTimeFilter(field_name="updated_at", lookup_expr="gte")
    updated_before = UTCDateTimeFilter(field_name="updated_at", lookup_expr="lt")
    recoverable = StrictBooleanFilter(
        method="filter_recoverable",
        help_text="true: sessions with recovery attempts left; false: those that have used up MAX_RECOVERY_ATTEMPTS.",
    )

    class Meta:
        model = Session
        fields: list[str] = []

    def filter_recoverable(self, queryset, name, value):
        limit = settings.MAX_RECOVERY_ATTEMPTS
        return queryset.filter(recovery_attempts__lt=limit) if value else queryset.filter(recovery_attempts__gte=limit)


class StrictOrderingFilter(OrderingFilter):
    """?ordering= with one of the indexed orders; anything else is a 400, not ignored."""

    ordering_param = "ordering"
    ordering_fields = ["created_at", "updated_at"]
    choices = ("created_at", "-created_at", "updated_at", "-updated_at")

    def get_ordering(self, request, queryset, view):
        raw = request.query_params.get(self.ordering_param)
        if raw is None or raw == "":
            return ["-created_at", "-id"]
        if raw not in self.choices:
            raise ValidationError({"ordering": [f"Must be one of: {', '.join(self.choices)}."]})
        return [raw, ("-id" if raw.startswith("-") else "id")]

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": self.ordering_param,
                "required": False,
                "in": "query",
                "description": "Sort order; default -created_at (newest first).",
                "schema": {"type": "string", "enum": list(self.choices)},
            }
        ]


def refuse_unknown_params(query_params, known) -> None:
    """A misspelt filter (?stauts=active) is a 400 naming it, never silently ignored."""
    unknown = sorted(set(query_params) - set(known))
    if unknown:
        raise ValidationError({name: ["Unknown query parameter."] for name in unknown})


class KnownParamsFilter(BaseFilterBackend):
    """First list filter backend: only the FilterSet's parameters, paging and ordering are accepted."""

    extra = ("limit", "cursor", "ordering")

    def filter_queryset(self, request, queryset, view):
        refuse_unknown_params(request.query_params, [*view.filterset_class.base_filters, *self.extra])
        return queryset
