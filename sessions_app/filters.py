"""List filters for GET /sessions/: every one is backed by an index (see models)."""

from __future__ import annotations

from django_filters import rest_framework as filters
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter

from .models import Session


class SessionFilterSet(filters.FilterSet):
    agent_id = filters.UUIDFilter(help_text="Sessions of this agent.")
    status = filters.MultipleChoiceFilter(
        choices=Session.Status.choices, help_text="One or several: status=active&status=paused."
    )
    session_type = filters.CharFilter(help_text="Exact session type.")
    runtime_backend = filters.MultipleChoiceFilter(choices=Session.RuntimeBackend.choices)
    parent_id = filters.UUIDFilter(field_name="parent_id", help_text="Sessions forked from this one.")
    created_after = filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="ISO 8601; created at or after. Naive times are UTC."
    )
    created_before = filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt", help_text="ISO 8601; created strictly before. Naive times are UTC."
    )
    updated_after = filters.IsoDateTimeFilter(field_name="updated_at", lookup_expr="gte")
    updated_before = filters.IsoDateTimeFilter(field_name="updated_at", lookup_expr="lt")

    class Meta:
        model = Session
        fields: list[str] = []


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
