"""Request body parsing.

The specification's own examples send JSON with ``curl -d`` and no
Content-Type, which curl labels ``application/x-www-form-urlencoded``. Such a
body is read as JSON when it looks like JSON (and refused with a 400 when it
is broken JSON); a genuine form body (``status=paused``) is read as a form.
A request with a body and no Content-Type at all is read as JSON.
"""

from __future__ import annotations

from django.conf import settings
from django.http import QueryDict
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.utils import json as strict_json

MERGE_PATCH = "application/merge-patch+json"


def loads(text: str):
    """Strict JSON (no NaN or Infinity); nesting too deep for Python is a 400, not a 500."""
    try:
        return strict_json.loads(text)
    except RecursionError:
        raise ParseError("JSON parse error - the body is nested too deeply.") from None
    except ValueError as exc:
        raise ParseError(f"JSON parse error - {exc}") from exc


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"The request body is not valid {encoding}.") from exc
        return loads(text)


class MergePatchParser(JSONParser):
    """RFC 7396 JSON Merge Patch bodies; the view merges instead of replacing."""

    media_type = MERGE_PATCH


class LenientFormParser(parsers.BaseParser):
    media_type = "application/x-www-form-urlencoded"

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        raw = stream.read()
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"The request body is not valid {encoding}.") from exc
        if text.lstrip()[:1] in ("{", "[", '"') or text.strip() in ("null", "true", "false"):
            return loads(text)
        form = QueryDict(text, encoding=encoding)
        return {key: form.getlist(key)[-1] for key in form}


class ContentNegotiation(DefaultContentNegotiation):
    def select_parser(self, request, parsers):
        if not request.content_type:
            return parsers[0] if parsers else None
        return super().select_parser(request, parsers)
