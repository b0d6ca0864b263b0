"""Errors as JSON: domain errors mapped to status codes, and nothing answers 500 as HTML."""

from __future__ import annotations

import logging

from django.core.exceptions import ObjectDoesNotExist
from django.http import Http404, JsonResponse
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from . import lifecycle

log = logging.getLogger(__name__)


class PreconditionFailed(APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = "The session has changed since the given ETag."
    default_code = "precondition_failed"


def _domain_response(exc: lifecycle.LifecycleError) -> Response | None:
    if isinstance(exc, lifecycle.InvalidTransition):
        return Response(
            {
                "detail": str(exc),
                "code": "invalid_transition",
                "current_status": exc.current,
                "requested_status": exc.requested,
                "allowed_transitions": exc.allowed,
            },
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, lifecycle.VersionMismatch):
        response = Response(
            {"detail": str(exc), "code": "precondition_failed", "current_version": exc.current_version},
            status=status.HTTP_412_PRECONDITION_FAILED,
        )
        response["ETag"] = f'"{exc.current_version}"'
        return response
    if isinstance(exc, lifecycle.InvalidChange):
        return Response({exc.field: [exc.message]}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, lifecycle.CheckpointNotFound):
        return Response({"detail": str(exc), "code": "not_found"}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, lifecycle.IdempotencyConflict):
        return Response({"detail": str(exc), "code": "idempotency_conflict"}, status=status.HTTP_409_CONFLICT)
    conflict = getattr(exc, "http_status", None)
    if conflict:
        body = {"detail": str(exc), "code": getattr(exc, "code", "conflict")}
        body.update(getattr(exc, "extra", {}) or {})
        return Response(body, status=conflict)
    return None


def exception_handler(exc, context):
    if isinstance(exc, lifecycle.LifecycleError):
        response = _domain_response(exc)
        if response is not None:
            return response
    if isinstance(exc, ObjectDoesNotExist):
        exc = Http404()
    response = drf_exception_handler(exc, context)
    if response is None:
        log.exception("Unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
        return Response(
            {"detail": "Internal server error.", "code": "server_error"},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(response.data, dict) and "detail" in response.data and "code" not in response.data:
        detail = response.data["detail"]
        response.data["code"] = getattr(detail, "code", None) or "error"
    return response


def not_found(request, exception=None):
    return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)


def server_error(request):
    return JsonResponse({"detail": "Internal server error.", "code": "server_error"}, status=500)


def bad_request(request, exception=None):
    return JsonResponse({"detail": "Bad request.", "code": "bad_request"}, status=400)
