"""Post-processing of the generated OpenAPI schema, so that it says what the API really does."""

from __future__ import annotations

from django.conf import settings

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
ERROR_REF = {"$ref": "#/components/schemas/Error"}
ETAG = {"ETag": {"description": 'The session\'s version as an entity tag, e.g. "3".', "schema": {"type": "string"}}}


def postprocess(result, generator, request, public):
    schemas = result.get("components", {}).get("schemas", {})
    # Request bodies refuse fields they do not know.
    for name, component in schemas.items():
        if name.endswith("Request") and component.get("type") == "object":
            component["additionalProperties"] = False

    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            body = operation.get("requestBody")
            if body:
                # Bodies are JSON (merge patch too, for PATCH). A body sent without a
                # Content-Type, or labelled a form by `curl -d`, is read as JSON as well.
                keep = {JSON, MERGE_PATCH} if method == "patch" else {JSON}
                body["content"] = {k: v for k, v in body["content"].items() if k in keep}
                operation["responses"].setdefault(
                    "415", {"description": "Unsupported Content-Type.", "content": {JSON: {"schema": ERROR_REF}}}
                )
            for parameter in operation.get("parameters", []):
                if parameter.get("name") == "limit" and parameter.get("in") == "query":
                    maximum = settings.PAGE_SIZE_MAX if path.startswith("/sessions") else 1000
                    parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": maximum}
            responses = operation.get("responses", {})
            is_session = path.startswith("/sessions/") and "checkpoints/{number}/" not in path.replace("/restore", "")
            for code, response in responses.items():
                ref = str(response.get("content", {}).get(JSON, {}).get("schema", {}).get("$ref", ""))
                if is_session and ref.endswith("/Session") and code in ("200", "201"):
                    response.setdefault("headers", {}).update(ETAG)
                if code == "201":
                    response.setdefault("headers", {})["Location"] = {
                        "description": "The new session's URL.",
                        "schema": {"type": "string"},
                    }
            if path == "/sessions/" and method == "get" and "200" in responses:
                responses["200"].setdefault("headers", {})["Link"] = {
                    "description": 'The next and previous pages, as rel="next" and rel="prev" links.',
                    "schema": {"type": "string"},
                }
    return result
