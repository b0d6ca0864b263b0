"""Replay from the event store: GET /events/ and GET /sessions/{id}/events/.

Events come back in sequence order; a consumer catches up with
``?after=<last sequence it saw>`` and follows ``next`` until it is null.
Because sequence numbers are taken in commit order, nothing is skipped.
"""

from __future__ import annotations

import uuid

from django import forms
from django.utils.http import urlencode
from django_filters import rest_framework as filters
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, OpenApiTypes, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from .filters import refuse_unknown_params
from .models import Event, Session
from .pagination import parse_limit
from .serializers import ErrorSerializer, JSONObjectField


class EventSerializer(serializers.ModelSerializer):
    payload = JSONObjectField(read_only=True)

    class Meta:
        model = Event
        fields = [
            "sequence",
            "event_id",
            "event_type",
            "aggregate_type",
            "aggregate_id",
            "occurred_at",
            "published_at",
            "payload",
        ]
        read_only_fields = fields


class EventPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="The following page, or null when caught up.")
    last_sequence = serializers.IntegerField(allow_null=True, help_text="Pass as ?after= to continue from here later.")
    results = EventSerializer(many=True)


class IntegerFilter(filters.NumberFilter):
    field_class = forms.IntegerField


class EventFilterSet(filters.FilterSet):
    after = IntegerFilter(
        field_name="sequence", lookup_expr="gt", min_value=0, help_text="Events with a sequence above this one."
    )
    aggregate_id = filters.UUIDFilter(help_text="Events of this session.")
    agent_id = filters.UUIDFilter(help_text="Events of this agent's sessions.")
    event_type = filters.MultipleChoiceFilter(
        choices=[(t, t) for t in ("session.created", "session.updated", "session.deleted", "session.recovered")],
        help_text="One or several event types.",
        lookup_expr="in",
        conjoined=False,
        method="filter_types",
    )

    class Meta:
        model = Event
        fields: list[str] = []

    def filter_types(self, queryset, name, value):
        return queryset.filter(event_type__in=list(value)) if value else queryset


LIMIT = OpenApiParameter("limit", OpenApiTypes.INT, description="Events per page (default 100, at most 1000).")
BAD_QUERY = OpenApiResponse(
    {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
    description="A bad query parameter, named.",
)


class EventPageView(APIView):
    default_limit = 100
    max_limit = 1000

    def page(self, request, queryset, known=(*EventFilterSet.base_filters, "limit")):
        refuse_unknown_params(request.query_params, known)
        filterset = EventFilterSet(request.query_params, queryset=queryset)
        if not filterset.is_valid():
            raise serializers.ValidationError(filterset.errors)
        limit = parse_limit(request.query_params.get("limit"), default=self.default_limit, maximum=self.max_limit)
        rows = list(filterset.qs.order_by("sequence")[: limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1].sequence if rows else filterset.form.cleaned_data.get("after")
        next_url = None
        if more:
            params = request.query_params.copy()
            params["after"] = str(last)
            next_url = request.build_absolute_uri(request.path) + "?" + urlencode(params, doseq=True)
        return Response({"next": next_url, "last_sequence": last, "results": EventSerializer(rows, many=True).data})


class EventListView(EventPageView):
    # Declared for the schema generator, which documents the FilterSet's parameters.
    filter_backends = [DjangoFilterBackend]
    filterset_class = EventFilterSet
    queryset = Event.objects.all()

    @extend_schema(
        summary="Catch up on all events, in sequence order",
        parameters=[LIMIT],
        responses={200: EventPageSerializer, 400: BAD_QUERY},
        filters=True,
    )
    def get(self, request):
        return self.page(request, Event.objects.all())


class SessionEventListView(EventPageView):
    @extend_schema(
        summary="One session's events, in order",
        parameters=[
            OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH),
            LIMIT,
            OpenApiParameter("after", OpenApiTypes.INT, description="Events with a sequence above this."),
        ],
        responses={200: EventPageSerializer, 400: BAD_QUERY, 404: OpenApiResponse(ErrorSerializer)},
    )
    def get(self, request, pk: str):
        try:
            session_id = uuid.UUID(pk)
        except ValueError:
            raise NotFound() from None
        queryset = Event.objects.filter(aggregate_id=session_id)
        if not Session.objects.filter(pk=session_id).exists() and not queryset.exists():
            raise NotFound()
        return self.page(request, queryset, known=("after", "limit"))
