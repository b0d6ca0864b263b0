"""Cursor paging: no COUNT(*), stable while sessions are being created."""

from __future__ import annotations

from django.conf import settings
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination


def parse_limit(raw: str | None, *, default: int, maximum: int, name: str = "limit") -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({name: [f"Must be a whole number from 1 to {maximum}."]}) from None
    if value < 1:
        raise ValidationError({name: [f"Must be a whole number from 1 to {maximum}."]})
    return min(value, maximum)


class SessionCursorPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size_query_param = "limit"
    page_size_query_description = "How many sessions per page (default 50, at most 500)."
    cursor_query_description = "Opaque cursor from a previous page's next or previous link."

    def __init__(self) -> None:
        # Read per request (a paginator is made for each) so settings overrides apply.
        self.page_size = settings.PAGE_SIZE_DEFAULT
        self.max_page_size = settings.PAGE_SIZE_MAX

    def get_page_size(self, request) -> int:
        return parse_limit(
            request.query_params.get(self.page_size_query_param),
            default=self.page_size,
            maximum=self.max_page_size,
        )

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except Exception as exc:  # DRF raises NotFound; a bad cursor is bad input
            raise ValidationError({"cursor": ["Invalid cursor."]}) from exc

    def get_paginated_response(self, data):
        response = super().get_paginated_response(data)
        links = []
        if response.data.get("next"):
            links.append(f'<{response.data["next"]}>; rel="next"')
        if response.data.get("previous"):
            links.append(f'<{response.data["previous"]}>; rel="prev"')
        if links:
            response["Link"] = ", ".join(links)
        return response
