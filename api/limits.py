"""Request body limit as a plain ASGI middleware (cheaper than a BaseHTTPMiddleware): 413 before the body is
read when Content-Length says it is too large, and as soon as a chunked body passes the limit."""

from __future__ import annotations

from api.guards import reject


class BodyLimit:
    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = next((value for name, value in scope.get("headers", ()) if name == b"content-length"), None)
        if length is not None:
            try:
                too_large = int(length) > self.limit
            except ValueError:
                return await reject(send, 400, "body", "Content-Length is not a number")
            if too_large:
                return await self._reject_size(send)
            # the server reads exactly Content-Length bytes, so the limit holds
            return await self.app(scope, receive, send)
        # no Content-Length (chunked): read the body up to the limit before the app sees it, then replay it
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.limit:
                return await self._reject_size(send)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject_size(self, send):
        await reject(send, 413, "body", f"request body above the limit of {self.limit} bytes "
                                         "(MEMPLAN_BODY_LIMIT)")
