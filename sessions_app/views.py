"""The REST API: thin viewsets that validate input and call ``lifecycle``."""

from __future__ import annotations

import uuid

from django.db import connection
from django.http import JsonResponse
from django_filters.rest_framework import DjangoFilterBackend
from django_filters.utils import translate_validation
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    OpenApiTypes,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from . import lifecycle, recovery
from .filters import KnownParamsFilter, SessionFilterSet, StrictOrderingFilter, refuse_unknown_params
from .metrics import session_metrics
from .metrics_serializers import SessionMetricsSerializer
from .models import Checkpoint, Session
from .pagination import SessionCursorPagination
from .parsers import MERGE_PATCH
from .recovery_serializers import LivenessErrorSerializer, RecoverRequestSerializer, RecoveryErrorSerializer
from .serializers import (
    CheckpointSerializer,
    ErrorSerializer,
    ForkSerializer,
    PreconditionErrorSerializer,
    SessionCreateSerializer,
    SessionSerializer,
    SessionUpdateSerializer,
    TransitionErrorSerializer,
)

VALIDATION_ERROR = OpenApiResponse(
    response={
        "type": "object",
        "description": "Each bad field or query parameter with its messages; or detail and code for a malformed body.",
        "additionalProperties": {"oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]},
    },
    description="Bad input: the body names each bad field.",
)
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No session with this id (or a malformed id).")
CONFLICT = OpenApiResponse(TransitionErrorSerializer, description="The status rules do not allow this move.")
PRECONDITION = OpenApiResponse(PreconditionErrorSerializer, description="If-Match does not match the current ETag.")
UNSUPPORTED = OpenApiResponse(ErrorSerializer, description="Unsupported Content-Type.")

IF_MATCH = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description='Only write if the session\'s ETag (its version, e.g. "3") still matches; else 412.',
)
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Retry-safe create: one session per key and agent. A retry with the same body answers the "
    "first session (200); the same key with another body answers 409.",
)
SESSION_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Session id.")


def _if_match(request) -> str | None:
    return request.headers.get("If-Match")


def _with_etag(response: Response, session: Session) -> Response:
    response["ETag"] = session.etag
    return response


@extend_schema_view(
    list=extend_schema(
        summary="List sessions, newest first",
        responses={200: SessionSerializer(many=True), 400: VALIDATION_ERROR},
    ),
    retrieve=extend_schema(
        summary="Get one session",
        parameters=[SESSION_ID],
        responses={
            200: SessionSerializer,
            304: OpenApiResponse(description="Not modified (If-None-Match)."),
            404: NOT_FOUND,
        },
    ),
)
class SessionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = Session.objects.all()
    serializer_class = SessionSerializer
    filter_backends = [KnownParamsFilter, DjangoFilterBackend, StrictOrderingFilter]
    filterset_class = SessionFilterSet
    pagination_class = SessionCursorPagination
    lookup_value_regex = "[^/]+"

    def retrieve(self, request, *args, **kwargs):
        session = Session.objects.get(pk=self._session_pk())  # no list filters on the hot path
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match and lifecycle.etag_matches(if_none_match, session.version):
            return _with_etag(Response(status=status.HTTP_304_NOT_MODIFIED), session)
        return _with_etag(Response(SessionSerializer(session).data), session)

    @extend_schema(
        summary="Create a session",
        parameters=[IDEMPOTENCY_KEY],
        request=SessionCreateSerializer,
        responses={
            201: SessionSerializer,
            200: OpenApiResponse(SessionSerializer, description="Idempotent retry: the session created first."),
            400: VALIDATION_ERROR,
            409: OpenApiResponse(ErrorSerializer, description="Idempotency-Key reused with another body."),
            415: UNSUPPORTED,
        },
    )
    def create(self, request, *args, **kwargs):
        serializer = SessionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key")
        if key:
            fingerprint = lifecycle.request_fingerprint(serializer.validated_data)
            session, created = lifecycle.create_session_idempotent(serializer.validated_data, key[:255], fingerprint)
        else:
            session, created = lifecycle.create_session(serializer.validated_data), True
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        response = Response(SessionSerializer(session).data, status=code)
        response["Location"] = f"/sessions/{session.pk}"
        return _with_etag(response, session)

    @extend_schema(
        summary="Update a session",
        description=(
            "With `Content-Type: application/json` a JSON field in the body replaces the stored value. "
            "With `Content-Type: application/merge-patch+json` the JSON fields (context, checkpoint, "
            "runtime_metadata) are merged as RFC 7396 says: keys set to null are removed, nested objects "
            "merge. Only fields that change are written; a status move must follow the status rules."
        ),
        parameters=[SESSION_ID, IF_MATCH],
        request={
            "application/json": SessionUpdateSerializer,
            MERGE_PATCH: SessionUpdateSerializer,
            "application/x-www-form-urlencoded": SessionUpdateSerializer,
        },
        responses={
            200: SessionSerializer,
            400: VALIDATION_ERROR,
            404: NOT_FOUND,
            409: CONFLICT,
            412: PRECONDITION,
            415: UNSUPPORTED,
        },
    )
    def partial_update(self, request, *args, **kwargs):
        serializer = SessionUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        merge = (request.content_type or "").split(";")[0].strip().lower() == MERGE_PATCH
        session, _ = lifecycle.update_session(
            self._session_pk(), serializer.validated_data, merge=merge, if_match=_if_match(request)
        )
        return _with_etag(Response(SessionSerializer(session).data), session)

    @extend_schema(
        summary="Delete a session and its history",
        parameters=[SESSION_ID, IF_MATCH],
        responses={204: None, 404: NOT_FOUND, 412: PRECONDITION},
    )
    def destroy(self, request, *args, **kwargs):
        lifecycle.delete_session(self._session_pk(), if_match=_if_match(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    # --- checkpoint history -------------------------------------------------

    @extend_schema(
        summary="Checkpoint history, newest first",
        parameters=[SESSION_ID],
        responses={200: CheckpointSerializer(many=True), 404: NOT_FOUND},
    )
    @action(detail=True, methods=["get"], url_path="checkpoints", pagination_class=None, filter_backends=[])
    def checkpoints(self, request, *args, **kwargs):
        pk = self._session_pk()
        entries = list(Checkpoint.objects.filter(session_id=pk).order_by("-number"))
        if not entries:
            Session.objects.only("pk").get(pk=pk)
        return Response(CheckpointSerializer(entries, many=True).data)

    @extend_schema(
        summary="One checkpoint of the history",
        parameters=[SESSION_ID, OpenApiParameter("number", OpenApiTypes.INT, OpenApiParameter.PATH)],
        responses={200: CheckpointSerializer, 404: NOT_FOUND},
    )
    @action(
        detail=True,
        methods=["get"],
        url_path=r"checkpoints/(?P<number>[0-9]{1,9})",
        pagination_class=None,
        filter_backends=[],
    )
    def checkpoint(self, request, *args, number: str, **kwargs):
        entry = lifecycle.get_checkpoint(self._session_pk(), int(number))
        return Response(CheckpointSerializer(entry).data)

    @extend_schema(
        summary="Make an older checkpoint current again",
        parameters=[SESSION_ID, IF_MATCH, OpenApiParameter("number", OpenApiTypes.INT, OpenApiParameter.PATH)],
        request=None,
        responses={200: SessionSerializer, 404: NOT_FOUND, 412: PRECONDITION},
    )
    @action(
        detail=True,
        methods=["post"],
        url_path=r"checkpoints/(?P<number>[0-9]{1,9})/restore",
        pagination_class=None,
        filter_backends=[],
    )
    def restore(self, request, *args, number: str, **kwargs):
        session, _ = lifecycle.restore_checkpoint(self._session_pk(), int(number), if_match=_if_match(request))
        return _with_etag(Response(SessionSerializer(session).data), session)

    # --- fork ---------------------------------------------------------------

    @extend_schema(
        summary="Fork: a new active session from this one's context and checkpoint",
        parameters=[SESSION_ID],
        request=ForkSerializer,
        responses={201: SessionSerializer, 400: VALIDATION_ERROR, 404: NOT_FOUND},
    )
    @action(detail=True, methods=["post"], pagination_class=None, filter_backends=[])
    def fork(self, request, *args, **kwargs):
        serializer = ForkSerializer(data=request.data if request.data else {})
        serializer.is_valid(raise_exception=True)
        session = lifecycle.fork_session(
            self._session_pk(), checkpoint_number=serializer.validated_data.get("checkpoint")
        )
        response = Response(SessionSerializer(session).data, status=status.HTTP_201_CREATED)
        response["Location"] = f"/sessions/{session.pk}"
        return _with_etag(response, session)

    # --- helpers ------------------------------------------------------------

    def _session_pk(self):
        """The id from the URL, validated; a malformed one is a 404 like an unknown one."""
        try:
            return uuid.UUID(str(self.kwargs[self.lookup_field]))
        except ValueError:
            raise Session.DoesNotExist from None

    # --- liveness and recovery ---------------------------------------------

    @extend_schema(
        summary="Heartbeat: the agent is alive",
        description=(
            "Records `last_heartbeat_at` (and `last_activity_at`, which the crash detector watches) in one "
            "write. Publishes no event and leaves the version (ETag) alone. Any other change to a session "
            "counts as activity too."
        ),
        parameters=[SESSION_ID],
        request=None,
        responses={
            204: OpenApiResponse(description="Recorded."),
            404: NOT_FOUND,
            409: OpenApiResponse(LivenessErrorSerializer, description="The session has ended (completed or crashed)."),
        },
    )
    @action(detail=True, methods=["post"], pagination_class=None, filter_backends=[])
    def heartbeat(self, request, *args, **kwargs):
        lifecycle.heartbeat(self._session_pk())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        operation_id="sessions_recover_oldest",
        summary="Recover the oldest crashed session",
        description=(
            "Hands the oldest crashed session (by ended_at, then created_at) that matches the optional filters "
            "to the caller: in one transaction it becomes `active`, its `recovery_attempts` grows by one and "
            "`recovered_at` is set. Resume from `checkpoint.resume_prompt`. Concurrent callers never receive the "
            "same session. Sessions that have used up MAX_RECOVERY_ATTEMPTS are not handed out. Publishes "
            "`session.updated` (previous_status crashed) and `session.recovered`."
        ),
        request=RecoverRequestSerializer,
        responses={
            200: SessionSerializer,
            204: OpenApiResponse(description="No crashed session to recover."),
            400: VALIDATION_ERROR,
            415: UNSUPPORTED,
        },
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="recover",
        url_name="recover-next",
        pagination_class=None,
        filter_backends=[],
    )
    def recover_next(self, request, *args, **kwargs):
        serializer = RecoverRequestSerializer(data=request.data if request.data else {})
        serializer.is_valid(raise_exception=True)
        session = recovery.claim_next(**serializer.validated_data)
        if session is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return _with_etag(Response(SessionSerializer(session).data), session)

    @extend_schema(
        operation_id="sessions_recover",
        summary="Recover this crashed session",
        description="As POST /sessions/recover, for one given session.",
        parameters=[SESSION_ID],
        request=None,
        responses={
            200: SessionSerializer,
            404: NOT_FOUND,
            409: OpenApiResponse(
                RecoveryErrorSerializer,
                description="Not crashed (code not_crashed), or no recovery attempts left (code recovery_exhausted).",
            ),
        },
    )
    @action(detail=True, methods=["post"], pagination_class=None, filter_backends=[])
    def recover(self, request, *args, **kwargs):
        session = recovery.recover_session(self._session_pk())
        return _with_etag(Response(SessionSerializer(session).data), session)

    # --- metrics ------------------------------------------------------------

    @extend_schema(
        summary="Session metrics",
        description=(
            "Counts by status, session type and runtime backend; durations of ended sessions (seconds); crash "
            "rate; recoveries; sessions created per day (UTC). Takes the same filters as the list (for example "
            "agent_id, created_after and created_before choose the range). Computed by the database."
        ),
        filters=True,
        responses={200: SessionMetricsSerializer, 400: VALIDATION_ERROR},
    )
    @action(detail=False, methods=["get"], pagination_class=None, filter_backends=[DjangoFilterBackend])
    def metrics(self, request, *args, **kwargs):
        refuse_unknown_params(request.query_params, SessionFilterSet.base_filters)
        filterset = SessionFilterSet(request.query_params, queryset=Session.objects.all(), request=request)
        if not filterset.is_valid():
            raise translate_validation(filterset.errors)
        return Response(SessionMetricsSerializer(session_metrics(filterset.qs)).data)


@extend_schema(exclude=True)
def health(request):
    """Liveness and readiness: the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


def index(request):
    return JsonResponse(
        {
            "service": "agent-session-service",
            "sessions": "/sessions/",
            "schema": "/api/schema/",
            "docs": "/api/docs/",
            "admin": "/admin/",
        }
    )
