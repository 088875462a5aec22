"""Plain ASGI middleware in front of the app: the Host header (DNS rebinding against a loopback service), methods
and content types of the API routes (405, 415 in memplan's error shape instead of the static mount's 404), and
the security headers of every response."""

from __future__ import annotations

import json
from typing import Any

from memplan.spec import printable

#: the API routes and their methods (kept beside the routes: tests/test_api.py checks they agree)
API_METHODS = {"/v1/estimate": "POST", "/v1/check": "POST", "/v1/sweep": "POST", "/v1/serving-sweep": "POST",
               "/v1/plan": "POST",
               "/v1/models": "GET", "/v1/gpus": "GET", "/healthz": "GET"}
#: the page and everything else: scripts and styles from this origin only, no framing
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
#: Swagger UI starts itself with an inline script
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]


def error_content(items: list[dict[str, Any]]) -> dict[str, Any]:
    """memplan's error shape ({"error": one line, "detail": items}) for every error answer, every string made
    encodable (a lone surrogate in the input must not turn a 422 into a 500)."""
    items = [{k: [printable(x) for x in v] if isinstance(v, list) else printable(v) if isinstance(v, str) else v
              for k, v in i.items()} for i in items]
    summary = "; ".join(f"{i['field']}: {i['message']}" if i["field"] else i["message"] for i in items)
    return {"error": summary, "detail": items}


async def reject(send, status: int, field: str, message: str, extra_headers: list | None = None) -> None:
    body = json.dumps(error_content([{"field": field, "message": message}])).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *SECURITY_HEADERS, *(extra_headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def host_name(host_header: str) -> str:
    """The name of a Host header without its port: 'localhost:8000' -> 'localhost', '[::1]:80' -> '[::1]'."""
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guards:
    def __init__(self, app, allowed_hosts: tuple[str, ...]):
        self.app, self.allowed = app, {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if "*" not in self.allowed:
            name = host_name(_header(scope, b"host") or "").lower()
            if name not in self.allowed:
                return await reject(send, 400, "host", f"host '{name[:100]}' is not served (MEMPLAN_ALLOWED_HOSTS)")
        path, method = scope["path"], scope["method"]
        allowed_method = API_METHODS.get(path.rstrip("/") or path)
        if allowed_method is not None:
            if method not in {allowed_method, "OPTIONS", *(["HEAD"] if allowed_method == "GET" else [])}:
                return await reject(send, 405, "method", f"{path} takes {allowed_method}, not {method[:20]}",
                                    [(b"allow", allowed_method.encode())])
            kind = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if method == "POST" and kind and kind != "application/json" and not kind.endswith("+json"):
                return await reject(send, 415, "content-type", f"send the body as application/json, not "
                                                               f"'{kind[:60]}'")
        csp = DOCS_CSP if path == "/docs" or path.startswith("/_docs") else PAGE_CSP

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *SECURITY_HEADERS,
                                                  (b"content-security-policy", csp.encode())]}
            await send(message)

        await self.app(scope, receive, with_headers)
